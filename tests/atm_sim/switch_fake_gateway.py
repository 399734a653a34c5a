"""A scripted fake gateway for the switch tests (a module with a unique name:
the tests folders have no __init__.py).

A real Twisted server on a loopback port that records every message it
receives, with the number of the connection it came on, and answers like a
well-behaved gateway unless the test's script says otherwise.
"""
from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from billgw.iso8583.bill_data import BillResponseData
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.messages import decode_response, encode_fields


class _GatewayProtocol(Protocol):
    def __init__(self, gateway: "FakeGateway", number: int):
        self.gateway = gateway
        self.number = number
        self.framer = Framer("binary2", 4096)

    def dataReceived(self, data):
        for payload in self.framer.feed(data):
            message = decode_response(payload)  # a generic decoder: any MTI, all fields
            self.gateway.received.append((self.number, message.mti, dict(message.fields)))
            self.gateway.answer(self, message.mti, dict(message.fields))

    def send(self, mti, fields, delay=0.0):
        def write():
            if self.transport.connected:
                self.transport.write(encode_frame(encode_fields(mti, fields)))

        if delay:
            self.gateway.timers.append(reactor.callLater(delay, write))
        else:
            write()


class FakeGateway(Factory):
    """Answers like a well-behaved gateway unless ``script`` says otherwise.

    ``script(gateway, protocol, mti, fields)`` returns True when it handled
    the message itself (answered, ignored or closed the connection)."""

    def __init__(self, script=None):
        self.script = script
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


@pytest_twisted.async_yield_fixture
async def start_gateway():
    running = []

    async def start(script=None, port=0):
        gateway = FakeGateway(script)
        listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(gateway)
        running.append((gateway, listening))
        gateway.port = listening.getHost().port
        gateway.listening = listening
        return gateway

    yield start
    for gateway, listening in running:
        gateway.stop_timers()
        await maybeDeferred(listening.stopListening)  # a test may have stopped it already


