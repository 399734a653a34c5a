"""Helpers of the security tests: messages, a processor that only collects
requests, and a factory on a Clock with StringTransport connections."""
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from billgw.gateway.peers import PeerTable, make_peer
from billgw.gateway.protocol import Iso8583ServerFactory
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.framing import Framer
from billgw.iso8583.messages import decode_response, encode_fields

BANK_A = make_peer("bank-a", sources=["10.1.0.0/16"], acquirers=["123456"], terminals=["ATM[0-9]{5}"])


def sign_on(stan="000001", code="001"):
    return encode_fields("0800", {"7": "1122193000", "11": stan, "70": code})


def payment(stan="000123", acquirer="123456", terminal="ATM00001", mti="0200", pan="4761739001010010"):
    fields = {
        "2": pan, "3": "500000", "4": "000000012500", "7": "1122193000", "11": stan,
        "12": "193000", "13": "1122", "32": acquirer, "37": "632619000123", "41": terminal,
        "48": BillRequestData("TEL", "MOBILE", "0791234567").to_tlv(), "49": "400",
    }
    return encode_fields(mti, fields)


def reversal(original_acquirer="123456", terminal="ATM00001", stan="000500"):
    fields = {"3": "500000", "4": "000000012500", "7": "1122193100", "11": stan, "37": "632619000123",
              "41": terminal, "90": "0200000123112219300" + "0" + original_acquirer.rjust(11, "0") + "0" * 11}
    return encode_fields("0420", fields)


class CollectingProcessor:
    """Takes every request and answers none (the tests look at what came)."""

    def __init__(self):
        self.pending = []

    def handle(self, request, log=None):
        d = defer.Deferred()
        self.pending.append((request, d))
        return d


def gateway(peers=None, **kwargs):
    clock = Clock()
    processor = CollectingProcessor()
    options = dict(processor=processor, codes=ResponseCodes(), clock=clock, idle_timeout=60, max_frame=512,
                   peers=peers or PeerTable([BANK_A]), frame_timeout=10)
    options.update(kwargs)
    return Iso8583ServerFactory(**options), processor, clock


def connect(factory, host="10.1.2.3", port=40000):
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
    proto = factory.buildProtocol(address)
    if proto is None:
        return None, None
    transport = StringTransportWithDisconnection(peerAddress=address)
    transport.protocol = proto
    proto.makeConnection(transport)
    return proto, transport


def frames(transport, kind="binary2"):
    return Framer(kind, 65535).feed(transport.value())


def answers(transport):
    return [decode_response(f) for f in frames(transport)]
