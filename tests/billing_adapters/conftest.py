"""Fixtures for the biller adapter tests: a captured structlog logger that
fails the test when something logged an error it did not expect, the telecom
simulator on a loopback port 0, and adapters that are closed afterwards."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
import structlog
from structlog.testing import CapturingLogger
from twisted.internet import reactor
from twisted.internet.defer import maybeDeferred

from billgw.billing_adapters.telecom_sim import TelecomSimulator, listen_telecom_sim
from billgw.billing_adapters.telecom_soap import SERVICE_PATH, TelecomSoapAdapter

from billing_adapters_helpers import LOOPBACK, within


@dataclass
class LogCapture:
    capture: CapturingLogger = field(default_factory=CapturingLogger)
    allow_errors: bool = False

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [c.kwargs for c in self.capture.calls if name is None or c.kwargs.get("event") == name]

    def errors(self) -> list[Any]:
        return [c for c in self.capture.calls if c.method_name in ("error", "critical", "exception")]


@pytest.fixture
def log_capture():
    captured = LogCapture()
    yield captured
    if not captured.allow_errors:
        assert captured.errors() == [], "errors were logged"


@pytest.fixture
def log(log_capture):
    return structlog.wrap_logger(
        log_capture.capture,
        processors=[structlog.processors.add_log_level],
        wrapper_class=structlog.make_filtering_bound_logger(0),
    )


@dataclass
class RunningSim:
    port: Any
    simulator: TelecomSimulator

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}{SERVICE_PATH}"

    @property
    def resource(self):
        return self.simulator.resource


@pytest_twisted.async_yield_fixture
async def start_sim(tmp_path, log):
    """Start a simulator (any behaviour) on loopback port 0; all are stopped after."""
    running: list[RunningSim] = []

    async def start(db_name: str = "telecom.sqlite", **kwargs) -> RunningSim:
        port, simulator = await within(
            listen_telecom_sim(reactor, LOOPBACK, db_path=tmp_path / db_name, log=log, **kwargs)
        )
        sim = RunningSim(port, simulator)
        running.append(sim)
        return sim

    yield start
    for sim in running:
        # maybeDeferred: a test may have stopped it already (None then).
        await within(maybeDeferred(sim.port.stopListening))
        sim.simulator.close()


@pytest_twisted.async_yield_fixture
async def sim(start_sim):
    yield await start_sim()


@pytest_twisted.async_yield_fixture
async def make_adapter(log):
    adapters: list[TelecomSoapAdapter] = []

    def make(url: str, **kwargs) -> TelecomSoapAdapter:
        kwargs.setdefault("timeout_connect", 5)
        kwargs.setdefault("pool_size", 2)
        adapter = TelecomSoapAdapter(reactor, url, log=log, **kwargs)
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await within(adapter.close())


@pytest.fixture
def adapter(sim, make_adapter):
    return make_adapter(sim.url)
