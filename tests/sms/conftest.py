"""Shared fixtures for the sms tests: an SMSC simulator and SMPP links on
loopback port 0, torn down (bounded) after each test."""
import pytest
import pytest_twisted
from twisted.internet import defer

from billgw.sms.smpp_link import SmppLink, SmppLinkConfig
from billgw.sms.smsc_sim import SmscFactory, listen_smsc

SYSTEM_ID = "billgw"
PASSWORD = "s3cret"
TIMEOUT = 10.0  # bound on any single wait in an integration test


@pytest.fixture
def reactor():
    from twisted.internet import reactor as global_reactor  # composition root of the tests

    return global_reactor


@pytest.fixture
def smsc_factory(reactor, tmp_path):
    """Call with a factory class (and its kwargs); yields ``(port, factory)``
    of an SMSC listening on loopback port 0."""
    ports = []

    def start(factory_class=SmscFactory, **kwargs):
        d = listen_smsc(
            reactor,
            "tcp:0:interface=127.0.0.1",
            system_id=SYSTEM_ID,
            password=PASSWORD,
            record_path=str(tmp_path / "smsc-received.jsonl"),
            factory_class=factory_class,
            **kwargs,
        )
        d.addCallback(lambda pair: ports.append(pair[0]) or pair)
        return d.addTimeout(TIMEOUT, reactor)

    yield start
    for port in ports:
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


@pytest.fixture
def make_link(reactor):
    """Call with the SMSC's port (and config overrides) to get a started link."""
    links = []

    def make(port, **overrides):
        settings = dict(
            host="127.0.0.1",
            port=port,
            system_id=SYSTEM_ID,
            password=PASSWORD,
            socket_timeout=2.0,
            response_timeout=2.0,
            rate=1000.0,
            enquire_link_interval=30.0,
            reconnect_initial=0.05,
            reconnect_max=0.5,
            stop_timeout=5.0,
        )
        settings.update(overrides)
        link = SmppLink(reactor, SmppLinkConfig(**settings))
        link.startService()
        links.append(link)
        return link

    yield make
    for link in links:
        if link.running:
            pytest_twisted.blockon(link.stopService())
        assert link.state.value in ("STOPPED", "REFUSED"), link.state
