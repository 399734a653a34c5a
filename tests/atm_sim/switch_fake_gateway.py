"""A scripted fake gateway for the switch tests (a module with a unique name:
the tests folders have no __init__.py).

A Twisted server that records every message it receives, with the number of
the connection it came on, and answers like a well-behaved gateway unless the
test's script says otherwise.  It runs in one of two places:

- the ``network`` fixture: a :class:`MemoryNetwork`, where the switch and the
  gateway share one ``MemoryReactorClock`` and their connections are
  ``twisted.test.iosim`` pumps.  Bytes move and timers fire in one exact
  order, on simulated time, so a test can say "the 0210 comes after the
  timeout" and mean it on any machine;
- the ``start_gateway`` fixture: a real server on a loopback port, for the
  ``atm-sim load`` command, which runs in its own process on its own reactor.
"""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim

from billgw.iso8583.bill_data import BillResponseData
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.messages import decode_response, encode_fields

PORT = 8583  # the in-memory gateway's port: nothing is bound, any number will do
BOUND = 20.0  # simulated seconds: no run on the in-memory network may take longer


class _GatewayProtocol(Protocol):
    def __init__(self, gateway: "FakeGateway", number: int):
        self.gateway = gateway
        self.number = number
        self.framer = Framer("binary2", 4096)
        self.gone = False

    def dataReceived(self, data):
        for payload in self.framer.feed(data):
            message = decode_response(payload)  # a generic decoder: any MTI, all fields
            self.gateway.received.append((self.number, message.mti, dict(message.fields)))
            self.gateway.answer(self, message.mti, dict(message.fields))

    def connectionLost(self, reason=None):
        self.gone = True

    def send(self, mti, fields, delay=0.0):
        def write():
            if not self.gone:  # a delayed answer may find the connection closed
                self.transport.write(encode_frame(encode_fields(mti, fields)))

        if delay:
            self.gateway.timers.append(self.gateway.clock.callLater(delay, write))
        else:
            write()


class FakeGateway(Factory):
    """Answers like a well-behaved gateway unless ``script`` says otherwise.

    ``script(gateway, protocol, mti, fields)`` returns True when it handled
    the message itself (answered, ignored or closed the connection).  Delayed
    answers are scheduled on ``clock``."""

    def __init__(self, script=None, *, clock):
        self.script = script
        self.clock = clock
        self.received: list[tuple[int, str, dict]] = []
        self.connections = 0
        self.timers = []

    def buildProtocol(self, addr):
        self.connections += 1
        return _GatewayProtocol(self, self.connections)

    def mtis(self, *wanted):
        return [(n, mti, f) for n, mti, f in self.received if not wanted or mti in wanted]

    def answer(self, protocol, mti, fields):
        if self.script and self.script(self, protocol, mti, fields):
            return
        if mti in ANSWERS:  # requests only; the switch's own answers (0810) need none
            protocol.send(*default_answer(mti, fields))

    def stop_timers(self):
        for timer in self.timers:
            if timer.active():
                timer.cancel()


def default_answer(mti, fields, code="00"):
    echo = {k: v for k, v in fields.items() if k in ("3", "4", "7", "11", "12", "13", "32", "37", "41", "49", "70")}
    echo["39"] = code
    if mti in ("0200", "0220", "0221") and code == "00":
        echo["48"] = BillResponseData(receipt_number=f"RN{fields['11']}",
                                      payment_reference=f"PR{fields['11']}{fields['7']}").to_tlv()
    return ANSWERS[mti], echo


ANSWERS = {"0800": "0810", "0200": "0210", "0220": "0230", "0221": "0230", "0420": "0430", "0421": "0430"}


class MemoryNetwork:
    """The switch's TCP connections to fake gateways, in memory.

    ``clock`` is the reactor to give the switch (it connects and keeps time
    with it).  A connection attempt reaches the gateway listening on its port
    or is refused; bytes are delivered until both sides are quiet before
    simulated time moves on to the next timer."""

    def __init__(self):
        self.clock = MemoryReactorClock()
        self.refused = 0
        self._listening: dict[int, FakeGateway] = {}
        self._pumps: list[iosim.IOPump] = []

    def listen(self, script=None, port=PORT) -> FakeGateway:
        gateway = FakeGateway(script, clock=self.clock)
        gateway.port = port
        self._listening[port] = gateway
        return gateway

    def run(self, d, bound=BOUND):
        """Deliver bytes and fire timers until ``d`` fires (within ``bound``
        simulated seconds); its result, or its failure raised."""
        results = []
        d.addBoth(results.append)
        self._run_until(lambda: bool(results), self.clock.seconds() + bound)
        assert results, f"not done after {bound} simulated seconds"
        [result] = results
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def advance(self, seconds):
        """Let ``seconds`` of simulated time pass, delivering whatever is due."""
        self._run_until(lambda: False, self.clock.seconds() + seconds)

    def _run_until(self, done, until):
        self._deliver()
        while not done():
            due = min([call.getTime() for call in self.clock.getDelayedCalls()] + [until])
            self.clock.advance(due - self.clock.seconds())
            self._deliver()
            if due == until:
                return

    def _deliver(self):
        """Complete the connection attempts and pump every connection until
        nothing moves (a connection's bytes can start another's)."""
        moved = True
        while moved:
            moved = self._connect_pending()
            for pump in list(self._pumps):
                moved = pump.flush() or moved
                if pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self._pumps.remove(pump)

    def _connect_pending(self) -> bool:
        attempts = list(zip(self.clock.tcpClients, self.clock.connectors))
        del self.clock.tcpClients[:], self.clock.connectors[:]
        for (host, port, factory, _timeout, _bind), connector in attempts:
            if connector.stoppedConnecting:  # the switch gave up on it
                continue
            gateway = self._listening.get(port)
            if gateway is None:
                self.refused += 1
                factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
                continue
            client = factory.buildProtocol(IPv4Address("TCP", host, port))
            server = gateway.buildProtocol(None)
            self._pumps.append(iosim.connect(server, iosim.makeFakeServer(server), client,
                                             iosim.makeFakeClient(client), greet=False, clock=self.clock))
        return bool(attempts)


@pytest.fixture
def network():
    return MemoryNetwork()


@pytest_twisted.async_yield_fixture
async def start_gateway():
    running = []

    async def start(script=None, port=0):
        gateway = FakeGateway(script, clock=reactor)
        listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(gateway)
        running.append((gateway, listening))
        gateway.port = listening.getHost().port
        gateway.listening = listening
        return gateway

    yield start
    for gateway, listening in running:
        gateway.stop_timers()
        await maybeDeferred(listening.stopListening)  # a test may have stopped it already
