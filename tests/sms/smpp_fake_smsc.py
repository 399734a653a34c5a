"""The far end of an SmppLink under test, on a Clock over StringTransport:
an SMSC answered by hand, and the fixtures of test_smpp_window.py and
test_smpp_session.py (``clock``, ``smsc``, ``make_link``).  Imported by
name: tests/ is not a package, pytest puts this directory on sys.path."""
import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from billgw.sms import smpp_pdu as p
from billgw.sms.smpp_link import LinkState, SmppLink, SmppLinkConfig

MSISDN = "962791234567"
LONG_EN = "Paid 12.500 JOD to Orange Jordan. " * 10  # 340 GSM-7 characters: 3 parts


class Transport(StringTransport):
    """Closing it ends the connection on the next clock turn, as a reactor would."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.closed = False

    def loseConnection(self):
        if not self.closed:
            self.closed = True
            super().loseConnection()
            self.clock.callLater(0, self.protocol.connectionLost, Failure(ConnectionDone()))

    abortConnection = loseConnection


class Smsc:
    """The far end: reads what the link wrote, answers by hand."""

    def __init__(self, clock):
        self.clock = clock
        self.connections = []  # (protocol, transport)

    def connect(self, factory):
        proto = factory.buildProtocol(None)
        transport = Transport(self.clock)
        transport.protocol = proto
        proto.makeConnection(transport)
        self.connections.append((proto, transport))
        return defer.succeed(proto)

    @property
    def proto(self):
        return self.connections[-1][0]

    @property
    def transport(self):
        return self.connections[-1][1]

    def read(self, settle=True):
        if settle:  # let the pacer (1000/s by default here) write what it may
            self.clock.pump([0.001] * 20)
        data = self.transport.value()
        self.transport.clear()
        return [p.decode_pdu(f) for f in p.PduFramer(1 << 20).add_and_parse(data)]

    def answer(self, pdu, status=0, body=None):
        if body is None:
            body = p.encode_message_id_body(f"id-{pdu.sequence_number}") if pdu.command_id == p.SUBMIT_SM else b""
        self.proto.dataReceived(p.encode_pdu(pdu.command_id | p.RESPONSE, status, pdu.sequence_number, body))

    def bind(self, status=0):
        [bind] = self.read()
        assert bind.command_id in p.BINDS
        self.answer(bind, status, p.encode_message_id_body("smsc") if status == 0 else b"")
        return bind

    def drop(self):
        self.transport.loseConnection()
        self.clock.advance(0)


@pytest.fixture
def clock():
    c = Clock()
    c.advance(1_700_000_000)
    return c


@pytest.fixture
def smsc(clock):
    return Smsc(clock)


@pytest.fixture
def make_link(clock, smsc):
    links, submitted = [], []

    def make(bind=True, **overrides):
        settings = dict(host="smsc.test", port=2775, system_id="billgw", password="pw", rate=1000.0,
                        window=10, response_timeout=10.0, reconnect_initial=1.0, reconnect_max=60.0,
                        reconnect_jitter=0.0, stop_timeout=15.0)
        settings.update(overrides)
        link = SmppLink(clock, SmppLinkConfig(**settings), connect=smsc.connect, random=lambda: 0.0)
        submit = link.submit
        link.submit = lambda *a: submitted.append(submit(*a)) or submitted[-1]
        link.startService()
        links.append(link)
        if bind:
            smsc.bind()
            assert link.state is LinkState.BOUND
        return link

    yield make
    for link in links:
        if link.running:
            link.stopService()
            clock.pump([1.0] * 20)
    for d in submitted:  # what a test did not look at is not an unhandled error
        d.addErrback(lambda f: None)


def results(deferreds):
    out = []
    for d in deferreds:
        box = []
        d.addBoth(box.append)
        out.append(box[0] if box else None)
    return out


def submits(pdus):
    return [(x, p.decode_submit_sm(x.body)) for x in pdus if x.command_id == p.SUBMIT_SM]
