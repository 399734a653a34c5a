"""The server protocol over a StringTransport with a Clock: bytes on the wire."""
import struct

import pytest
from structlog.testing import capture_logs
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection

from billgw.gateway.protocol import Iso8583ServerFactory
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.messages import decode_response, encode_fields

TEST_PAN = "4761739001010010"


def sign_on(stan="000001", code="001"):
    return encode_fields("0800", {"7": "1122193000", "11": stan, "70": code})


def payment(stan="000123", **over):
    fields = {
        "2": TEST_PAN, "3": "500000", "4": "000000012500", "7": "1122193000", "11": stan,
        "12": "193000", "13": "1122", "32": "123456", "37": "632619000123", "41": "ATM00001",
        "48": BillRequestData("TEL", "MOBILE", "0791234567", msisdn="962791234567").to_tlv(),
        "49": "400",
    }
    fields.update(over)
    return encode_fields("0200", {k: v for k, v in fields.items() if v is not None})


class FakeProcessor:
    def __init__(self):
        self.requests = []
        self.pending = []

    def handle(self, request, log=None):
        self.requests.append(request)
        d = defer.Deferred()
        self.pending.append((request, d))
        return d


PEER = IPv4Address("TCP", "127.0.0.1", 5555)


def connect(transport):
    clock = Clock()
    processor = FakeProcessor()
    factory = Iso8583ServerFactory(processor=processor, codes=ResponseCodes(), clock=clock,
                                   idle_timeout=60, max_frame=512)
    proto = factory.buildProtocol(PEER)
    proto.makeConnection(transport)
    return proto, transport, clock, processor


@pytest.fixture
def wire():
    return connect(StringTransport(peerAddress=PEER))


def answers(transport):
    framer = Framer("binary2", 65535)
    frames = framer.feed(transport.value())
    transport.clear()
    return [decode_response(f) for f in frames]


def test_sign_on_echo_sign_off(wire):
    proto, transport, _, _ = wire
    proto.dataReceived(encode_frame(sign_on("000001", "001")))
    proto.dataReceived(encode_frame(sign_on("000002", "301")))
    proto.dataReceived(encode_frame(sign_on("000003", "002")))
    [on, echo, off] = answers(transport)
    assert (on.mti, on.fields["39"], on.fields["11"], on.fields["70"]) == ("0810", "00", "000001", "001")
    assert (echo.fields["39"], echo.fields["70"]) == ("00", "301")
    assert (off.fields["39"], off.fields["70"]) == ("00", "002")
    assert proto.session.signed_on is False


def test_unknown_network_code_is_invalid_transaction(wire):
    proto, transport, _, _ = wire
    proto.dataReceived(encode_frame(sign_on(code="999")))
    [answer] = answers(transport)
    assert answer.fields["39"] == "12"


def test_payment_before_sign_on_is_refused_without_processing(wire):
    proto, transport, _, processor = wire
    proto.dataReceived(encode_frame(payment()))
    [answer] = answers(transport)
    assert (answer.mti, answer.fields["39"], answer.fields["11"]) == ("0210", "05", "000123")
    assert processor.requests == []


def test_payment_is_handed_to_processor_and_answer_written(wire):
    proto, transport, _, processor = wire
    proto.dataReceived(encode_frame(sign_on()))
    answers(transport)
    proto.dataReceived(encode_frame(payment()))
    [(request, d)] = processor.pending
    assert request.masked_pan == "476173******0010"
    assert TEST_PAN not in repr(request.fields)
    assert transport.value() == b""  # nothing until the processor answers
    d.callback(request.respond_bill("00", auth_code="123456"))
    [answer] = answers(transport)
    assert (answer.fields["39"], answer.fields["38"], answer.fields["4"]) == ("00", "123456", "000000012500")


def test_frame_split_byte_by_byte_and_two_frames_in_one_read(wire):
    proto, transport, _, _ = wire
    data = encode_frame(sign_on("000001"))
    for i in range(len(data)):
        proto.dataReceived(data[i:i + 1])
    proto.dataReceived(encode_frame(sign_on("000002", "301")) + encode_frame(sign_on("000003", "301")))
    assert [a.fields["11"] for a in answers(transport)] == ["000001", "000002", "000003"]


def test_over_long_header_closes_connection(wire):
    proto, transport, _, _ = wire
    proto.dataReceived(struct.pack(">H", 513) + b"0800")
    assert transport.disconnecting
    assert transport.value() == b""


def test_invalid_message_gets_format_error_with_its_keys(wire):
    proto, transport, _, processor = wire
    proto.dataReceived(encode_frame(sign_on()))
    answers(transport)
    proto.dataReceived(encode_frame(payment(**{"4": "0000000125AB"})))
    [answer] = answers(transport)
    assert answer.mti == "0210"
    assert answer.fields["39"] == "30"
    assert answer.fields["11"] == "000123" and answer.fields["41"] == "ATM00001"
    assert processor.requests == []
    assert not transport.disconnecting


def test_undecodable_frame_closes_connection(wire):
    proto, transport, _, _ = wire
    proto.dataReceived(encode_frame(b"\xff\xfe garbage that is no ISO 8583"))
    assert transport.disconnecting
    assert transport.value() == b""


def test_idle_timeout_closes_and_traffic_resets_it(wire):
    proto, transport, clock, _ = wire
    clock.advance(59)
    proto.dataReceived(encode_frame(sign_on(code="301")))
    clock.advance(59)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_answer_after_disconnect_is_dropped_not_crashing():
    """The close goes through Twisted's own path: the transport's
    ``loseConnection`` calls the protocol's ``connectionLost``, and nothing
    resets the protocol's ``connected`` (Twisted never does), so the protocol
    must remember the loss itself."""
    proto, transport, _, processor = connect(StringTransportWithDisconnection(peerAddress=PEER))
    transport.protocol = proto
    proto.dataReceived(encode_frame(sign_on()))
    answers(transport)
    proto.dataReceived(encode_frame(payment()))
    [(request, d)] = processor.pending
    transport.loseConnection()
    with capture_logs() as logs:
        d.callback(request.respond_bill("00"))
    assert transport.value() == b""
    assert [(e["event"], e["stan"]) for e in logs if e["log_level"] == "warning"] == [
        ("answer ready but the connection is gone", "000123")]


def reversal_frame(**over):
    fields = {"3": "500000", "4": "000000012500", "7": "1122193100", "11": "000500", "12": "193100",
              "13": "1122", "32": "123456", "37": "632619000123", "41": "ATM00001", "49": "400",
              "90": "0200000123112219300000000123456" + "0" * 11}
    fields.update(over)
    return encode_fields("0420", {k: v for k, v in fields.items() if v is not None})


def test_reversal_and_advice_before_sign_on_are_refused_then_taken(wire):
    """Advices and reversals move money too (a 0220 made a biller post
    what no bank had debited, a 0420 reversed another acquirer's payment):
    before sign-on they get 05 and never reach the processor; the switch
    signs on and repeats them."""
    proto, transport, _, processor = wire
    proto.dataReceived(encode_frame(reversal_frame()))
    proto.dataReceived(encode_frame(payment().replace(b"0200", b"0220", 1)))
    [r1, r2] = answers(transport)
    assert (r1.mti, r1.fields["39"], r2.mti, r2.fields["39"]) == ("0430", "05", "0230", "05")
    assert processor.requests == []
    proto.dataReceived(encode_frame(sign_on()))
    answers(transport)
    proto.dataReceived(encode_frame(reversal_frame()))
    proto.dataReceived(encode_frame(payment().replace(b"0200", b"0220", 1)))
    [(rev, d1), (adv, d2)] = processor.pending
    assert (rev.mti, rev.original_keys.stan, rev.original_keys.acquirer_id) == ("0420", "000123", "123456")
    assert adv.mti == "0220" and adv.is_advice
    d1.callback(rev.respond("00"))
    d2.callback(adv.respond_bill("00"))
    [a1, a2] = answers(transport)
    assert (a1.mti, a1.fields["39"], a1.fields["90"]) == ("0430", "00", rev.fields["90"])
    assert (a2.mti, a2.fields["39"], a2.fields["11"]) == ("0230", "00", "000123")


def test_unreadable_reversal_gets_0430_format_error(wire):
    proto, transport, _, processor = wire
    proto.dataReceived(encode_frame(reversal_frame(**{"90": "X" * 42})))
    [answer] = answers(transport)
    assert (answer.mti, answer.fields["39"], answer.fields["11"]) == ("0430", "30", "000500")
    assert processor.requests == []


# --- back-pressure -------------------------------------------------------------

def capped(per_connection, overall):
    processor = FakeProcessor()
    factory = Iso8583ServerFactory(processor=processor, codes=ResponseCodes(), clock=Clock(), idle_timeout=60,
                                   max_in_flight_per_connection=per_connection, max_in_flight=overall)

    def link():
        transport = StringTransport(peerAddress=PEER)
        proto = factory.buildProtocol(PEER)
        proto.makeConnection(transport)
        proto.dataReceived(encode_frame(sign_on()))
        answers(transport)
        return proto, transport

    return factory, processor, link


def test_requests_past_the_connection_cap_are_answered_busy_at_once_and_never_processed():
    factory, processor, link = capped(per_connection=2, overall=100)
    proto, transport = link()
    for stan in ("000001", "000002", "000003"):
        proto.dataReceived(encode_frame(payment(stan=stan)))
    [busy] = answers(transport)
    assert (busy.mti, busy.fields["11"], busy.response_code) == ("0210", "000003", "91")
    assert [r.stan for r in processor.requests] == ["000001", "000002"]  # the third never reached it
    request, d = processor.pending[0]
    d.callback(request.respond_bill("00"))  # one answered: room for one more
    proto.dataReceived(encode_frame(payment(stan="000004")))
    assert [a.response_code for a in answers(transport)] == ["00"]
    assert [r.stan for r in processor.requests][-1] == "000004"
    proto.dataReceived(encode_frame(sign_on(stan="000009", code="301")))  # an echo is always answered
    assert [a.mti for a in answers(transport)] == ["0810"]
    assert factory.refused_busy == 1


def test_one_peer_cannot_take_the_whole_gateway_and_reversals_are_refused_so_they_repeat():
    factory, processor, link = capped(per_connection=10, overall=3)
    flood, flood_transport = link()
    for stan in ("000001", "000002", "000003"):
        flood.dataReceived(encode_frame(payment(stan=stan)))
    other, other_transport = link()
    other.dataReceived(encode_frame(reversal_frame()))
    [busy] = answers(other_transport)
    assert (busy.mti, busy.response_code) == ("0430", "91")  # not 00: the switch repeats its 0421
    assert len(processor.requests) == 3 and factory.in_flight == 3
    for request, d in processor.pending:
        d.callback(request.respond_bill("00"))
    assert factory.in_flight == 0 and flood.in_flight == 0
    other.dataReceived(encode_frame(reversal_frame()))  # the switch's repeat, now taken in
    assert len(processor.requests) == 4 and processor.requests[-1].mti == "0420"


@pytest.mark.allow_errors
def test_an_answer_that_cannot_be_encoded_still_goes_out_as_96_with_the_keys(wire):
    from billgw.iso8583.messages import Response

    proto, transport, _, processor = wire
    proto.dataReceived(encode_frame(sign_on()))
    answers(transport)
    proto.dataReceived(encode_frame(payment()))
    [(request, d)] = processor.pending
    broken = dict(request.respond_bill("00").fields, **{"48": "X" * 1200})  # past F48's 999
    with capture_logs() as logs:
        d.callback(Response("0210", broken))
    [answer] = answers(transport)
    assert (answer.mti, answer.response_code, answer.fields["11"], answer.fields["41"]) == (
        "0210", "96", "000123", "ATM00001")
    assert "48" not in answer.fields
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "answer cannot be encoded: answering system malfunction"]
