"""``atm-sim load``: the installed command against the scripted fake gateway.

It runs as a separate process (the command owns its reactor), so the test
checks what a person gets: the figures on stdout, the JSON report, and the
exit status.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from billgw.atm_sim.cli import parse_subscribers
from switch_fake_gateway import start_gateway  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(60)

ATM_SIM = str(Path(sys.executable).with_name("atm-sim"))


async def atm_sim_load(tmp_path, *args: str) -> tuple[str, str, int]:
    # From tmp_path, not the repository root: our iso8583/ must not shadow pyiso8583.
    d = getProcessOutputAndValue(ATM_SIM, ("load",) + args, env=dict(os.environ), path=str(tmp_path),
                                 reactor=reactor)
    out, err, code = await d.addTimeout(45, reactor)
    return out.decode(), err.decode(), code


@pytest_twisted.ensureDeferred
async def test_load_prints_figures_and_writes_the_report(start_gateway, tmp_path):
    gateway = await start_gateway()
    report_path = tmp_path / "load.json"
    out, err, code = await atm_sim_load(
        tmp_path, "--port", str(gateway.port), "--count", "20", "--rate", "200", "--concurrency", "5",
        "--subscribers", "0790000000-0790000003", "--amount-min", "1.000", "--amount-max", "2.000",
        "--duplicate-rate", "0.2", "--cancel-rate", "0.2", "--advice-rate", "0.1", "--seed", "4",
        "--answer-timeout", "20", "--repeat-interval", "0.5", "--report", str(report_path))
    assert code == 0, (out, err)
    assert "payments   20" in out and "latency    0210 p50" in out
    report = json.loads(report_path.read_text("utf-8"))
    assert report["counts"]["payments"] == 20
    kept = {}
    for p in report["payments"]:
        assert p["subscriber"] in parse_subscribers("0790000000-0790000003")
        assert 1000 <= p["amount"] <= 2000
        if p["view"] == "kept":
            kept[p["subscriber"]] = kept.get(p["subscriber"], 0) + p["amount"]
    assert report["kept_by_subscriber"] == kept
    # The fake gateway answers at once and the switch waits 20 s: the only
    # reversals are the planned cancels, however slow the machine.
    assert report["counts"]["reversed"] == sum(1 for p in report["payments"] if p["role"] == "cancel")
    # What the fake gateway saw matches the report.
    assert len(gateway.mtis("0420")) == report["counts"]["reversed"]
    assert len({(f["11"], f["7"]) for _, _, f in gateway.mtis("0200")}) == 20 - sum(
        1 for p in report["payments"] if p["advice"] and p["sends_0200"] == 0)


@pytest_twisted.ensureDeferred
async def test_load_against_nothing_exits_2(start_gateway, tmp_path):
    gateway = await start_gateway()
    await gateway.listening.stopListening()
    out, err, code = await atm_sim_load(tmp_path, "--port", str(gateway.port), "--count", "2",
                                        "--max-duration", "3", "--advice-rate", "0")
    assert code == 2, (out, err)


@pytest_twisted.ensureDeferred
async def test_load_refuses_a_remote_gateway(tmp_path):
    out, err, code = await atm_sim_load(tmp_path, "--host", "192.0.2.1", "--count", "1")
    assert code == 2 and "loopback" in err


def test_subscriber_lists_and_ranges():
    assert parse_subscribers("0790000008-0790000011, 0791234567") == (
        "0790000008", "0790000009", "0790000010", "0790000011", "0791234567")
    for bad in ("", "0790000005-0790000001", "07x-079"):
        with pytest.raises(ValueError):
            parse_subscribers(bad)
