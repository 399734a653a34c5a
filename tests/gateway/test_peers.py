"""Peers: who may connect, for which acquirers and terminals, and the
connection-level caps and timers (StringTransport, Clock; bytes on the wire)."""
import struct

import pytest
from structlog.testing import capture_logs
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from billgw.gateway.config import ConfigError, parse_settings
from billgw.gateway.peers import DEFAULT_PEERS, PeerTable, make_peer
from billgw.gateway.protocol import DUMPED_FORMAT_ERRORS, Iso8583ServerFactory
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.messages import decode_response, encode_fields

BANK_A = make_peer("bank-a", sources=["10.1.0.0/16"], acquirers=["123456", "000777"], terminals=["ATM[0-9]{5}"],
                   max_connections=2)
BANK_B = make_peer("bank-b", sources=["10.2.0.5", "2001:db8::/32"], acquirers=["654321"], terminals=["B[0-9]{7}"],
                   require_sign_on=False, max_in_flight=2)
PEERS = PeerTable([BANK_A, BANK_B])


def sign_on(stan="000001", code="001"):
    return encode_fields("0800", {"7": "1122193000", "11": stan, "70": code})


def payment(stan="000123", acquirer="123456", terminal="ATM00001", mti="0200"):
    fields = {
        "2": "4761739001010010", "3": "500000", "4": "000000012500", "7": "1122193000", "11": stan,
        "12": "193000", "13": "1122", "32": acquirer, "37": "632619000123", "41": terminal,
        "48": BillRequestData("TEL", "MOBILE", "0791234567").to_tlv(), "49": "400",
    }
    return encode_fields(mti, fields)


def reversal(original_acquirer="123456", own_acquirer=None, terminal="ATM00001"):
    fields = {"3": "500000", "4": "000000012500", "7": "1122193100", "11": "000500", "37": "632619000123",
              "41": terminal, "90": "0200000123112219300" + "0" + original_acquirer.rjust(11, "0") + "0" * 11}
    if own_acquirer:
        fields["32"] = own_acquirer
    return encode_fields("0420", fields)


class FakeProcessor:
    def __init__(self):
        self.pending = []

    def handle(self, request, log=None):
        d = defer.Deferred()
        self.pending.append((request, d))
        return d


def gateway(**kwargs):
    clock = Clock()
    processor = FakeProcessor()
    options = dict(processor=processor, codes=ResponseCodes(), clock=clock, idle_timeout=60, max_frame=512,
                   peers=PEERS, frame_timeout=10)
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


def closed(transport) -> bool:
    return not transport.connected  # loseConnection ran connectionLost


def answers(transport):
    frames = Framer("binary2", 65535).feed(transport.value())
    transport.clear()
    return [decode_response(f) for f in frames]


# --- who may connect ----------------------------------------------------------

def test_a_connection_from_no_configured_peer_is_refused_at_accept_logged_and_counted():
    factory, _, _ = gateway()
    with capture_logs() as logs:
        proto, _ = connect(factory, host="192.0.2.66")
    assert proto is None  # Twisted closes the socket at once: nothing is read
    assert factory.counters["unknown_peer"] == 1 and factory.connections == 0
    [refusal] = [e for e in logs if e["log_level"] == "warning"]
    assert refusal["event"] == "connection refused: no configured peer for this address"
    assert refusal["peer"] == "192.0.2.66:40000"


def test_peers_are_identified_by_their_ranges_ipv6_and_ipv4_mapped_included():
    assert PEERS.identify("10.1.200.7") is BANK_A
    assert PEERS.identify("10.2.0.5") is BANK_B and PEERS.identify("10.2.0.6") is None
    assert PEERS.identify("2001:db8::1") is BANK_B
    assert PEERS.identify("::ffff:10.1.0.9") is BANK_A
    assert PEERS.identify("not an address") is None
    assert DEFAULT_PEERS.identify("127.0.0.1").name == "local" and DEFAULT_PEERS.identify("::1").name == "local"
    assert DEFAULT_PEERS.identify("10.1.0.1") is None


def test_connection_caps_per_peer_and_overall():
    factory, _, _ = gateway(max_connections=3)
    a1, t1 = connect(factory)
    a2, _ = connect(factory)
    with capture_logs() as logs:
        a3, _ = connect(factory)  # bank-a's cap is 2
    assert a3 is None and factory.counters["peer_connection_cap"] == 1
    assert logs[-1]["event"] == "connection refused: peer connection cap reached"
    b1, _ = connect(factory, host="10.2.0.5")
    b2, _ = connect(factory, host="10.2.0.5")  # the gateway's cap is 3
    assert b1 is not None and b2 is None and factory.counters["connection_cap"] == 1
    t1.loseConnection()  # one closes: room again, for bank-a
    assert factory.connections == 2 and factory.peer_connections["bank-a"] == 1
    a4, _ = connect(factory)
    assert a4 is not None


# --- what each peer may send --------------------------------------------------

def signed_on(factory, host="10.1.2.3"):
    proto, transport = connect(factory, host=host)
    proto.dataReceived(encode_frame(sign_on()))
    assert [a.response_code for a in answers(transport)] == ["00"]
    return proto, transport


@pytest.mark.parametrize("frame, mti", [
    (payment(acquirer="99999999999"), "0210"),  # an acquirer of nobody
    (payment(acquirer="654321"), "0210"),  # bank-b's acquirer, from bank-a
    (payment(terminal="EVIL0001"), "0210"),  # a terminal bank-a has not
    (payment(acquirer="666666", mti="0220"), "0230"),  # an advice for another acquirer
    (reversal(original_acquirer="654321"), "0430"),  # reversing bank-b's payment
    (reversal(original_acquirer="123456", own_acquirer="666666"), "0430"),
    (reversal(terminal="B0000001"), "0430"),
])
def test_a_message_its_peer_may_not_send_is_declined_58_and_never_processed(frame, mti):
    factory, processor, _ = gateway()
    proto, transport = signed_on(factory)
    with capture_logs() as logs:
        proto.dataReceived(encode_frame(frame))
    [answer] = answers(transport)
    assert (answer.mti, answer.response_code) == (mti, "58")
    assert processor.pending == []
    assert factory.counters["not_permitted"] == 1
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "request refused: not permitted for this peer"]
    assert "4761739001010010" not in repr(logs)
    assert not closed(transport)  # the rest of its traffic is still served


def test_its_own_acquirers_and_terminals_are_processed_leading_zeros_ignored():
    factory, processor, _ = gateway()
    proto, transport = signed_on(factory)
    proto.dataReceived(encode_frame(payment()))
    proto.dataReceived(encode_frame(payment(stan="000124", acquirer="777")))  # configured as 000777
    proto.dataReceived(encode_frame(reversal(original_acquirer="123456", own_acquirer="123456")))
    assert [r.mti for r, _ in processor.pending] == ["0200", "0200", "0420"]
    assert transport.value() == b""


def test_sign_on_follows_the_peer():
    factory, processor, _ = gateway()
    a, a_transport = connect(factory)
    a.dataReceived(encode_frame(payment()))
    assert [x.response_code for x in answers(a_transport)] == ["05"]
    b, _ = connect(factory, host="10.2.0.5")  # require_sign_on = false
    b.dataReceived(encode_frame(payment(acquirer="654321", terminal="B0000001")))
    assert len(processor.pending) == 1


def test_a_peers_in_flight_cap_spans_its_connections():
    factory, processor, _ = gateway()
    b1, t1 = connect(factory, host="10.2.0.5")
    b2, t2 = connect(factory, host="2001:db8::7")
    b1.dataReceived(encode_frame(payment(stan="000001", acquirer="654321", terminal="B0000001")))
    b2.dataReceived(encode_frame(payment(stan="000002", acquirer="654321", terminal="B0000001")))
    b2.dataReceived(encode_frame(payment(stan="000003", acquirer="654321", terminal="B0000001")))
    assert [a.response_code for a in answers(t2)] == ["91"]
    assert len(processor.pending) == 2
    a, _ = signed_on(factory)  # another peer is not held back by bank-b's cap
    a.dataReceived(encode_frame(payment(stan="000004")))
    assert len(processor.pending) == 3
    request, d = processor.pending[0]
    d.callback(request.respond_bill("00"))
    b2.dataReceived(encode_frame(payment(stan="000005", acquirer="654321", terminal="B0000001")))
    assert len(processor.pending) == 4 and factory.peer_in_flight["bank-b"] == 2


# --- timers -------------------------------------------------------------------

def test_a_frame_trickled_byte_by_byte_is_cut_off_at_frame_timeout():
    """Slowloris: a 4096-byte header then a byte every few seconds held a
    connection for ever; now a frame must be complete within frame_timeout
    whatever trickles meanwhile."""
    factory, _, clock = gateway()
    proto, transport = connect(factory)
    proto.dataReceived(struct.pack(">H", 500))
    for _ in range(3):
        clock.advance(3)
        proto.dataReceived(b"0")
        assert not closed(transport)
    with capture_logs() as logs:
        clock.advance(1.01)
    assert closed(transport) and factory.counters["closed_incomplete_frame"] == 1
    assert logs[0]["event"] == "no complete frame in time: closing connection"


def test_bytes_that_make_no_frame_do_not_keep_a_connection_alive():
    factory, _, clock = gateway(frame_timeout=60)
    proto, transport = connect(factory)
    clock.advance(30)
    proto.dataReceived(struct.pack(">H", 500)[:1])  # half a header
    clock.advance(30.01)  # 60 s without a frame: idle
    assert closed(transport)


def test_complete_frames_reset_both_timers():
    factory, _, clock = gateway()
    proto, transport = connect(factory)
    frame = encode_frame(sign_on(code="301"))
    for _ in range(10):
        proto.dataReceived(frame[:5])
        clock.advance(9)
        proto.dataReceived(frame[5:])
        clock.advance(9)
    assert not closed(transport) and len(answers(transport)) == 10


def test_format_errors_are_logged_with_their_dump_only_for_the_first_few():
    factory, _, _ = gateway()
    proto, transport = signed_on(factory)
    bad = encode_frame(encode_fields("0200", {"3": "500000", "4": "0000000125AB", "7": "1122193000",
                                              "11": "000009", "41": "ATM00001"}))
    with capture_logs() as logs:
        for _ in range(DUMPED_FORMAT_ERRORS + 5):
            proto.dataReceived(bad)
    dumps = [e["dump"] for e in logs if e["event"] == "format error"]
    assert len(dumps) == DUMPED_FORMAT_ERRORS + 5 and len(answers(transport)) == DUMPED_FORMAT_ERRORS + 5
    assert all("F4" in d for d in dumps[:DUMPED_FORMAT_ERRORS])
    assert all("dump not logged" in d for d in dumps[DUMPED_FORMAT_ERRORS:])


# --- configuration -------------------------------------------------------------

def peers_doc(**peer):
    spec = {"sources": ["10.0.0.0/8"], "acquirers": ["123456"], "terminals": ["ATM[0-9]{5}"]}
    spec.update(peer)
    return {"peers": {"bank": spec}}


def test_peers_from_configuration():
    settings = parse_settings(peers_doc(max_connections=4, max_in_flight=8), environ={})
    [peer] = settings.peers.peers
    assert (peer.name, peer.max_connections, peer.max_in_flight, peer.require_sign_on) == ("bank", 4, 8, True)
    assert settings.peers.identify("10.9.9.9") is peer and settings.peers.identify("127.0.0.1") is None


def test_without_peers_the_builtin_loopback_peer_applies_with_the_listeners_sign_on_rule():
    settings = parse_settings({"gateway": {"require_sign_on": False}}, environ={})
    [peer] = settings.peers.peers
    assert (peer.name, peer.acquirers, peer.require_sign_on) == ("local", frozenset({"123456"}), False)
    assert peer.may_use_terminal("ATM00001") and not peer.may_use_terminal("ATM0001")


@pytest.mark.parametrize("peer, message", [
    ({"sources": ["10.0.0.0/33"]}, "peers.bank.sources: '10.0.0.0/33' is not an address or CIDR range"),
    ({"sources": []}, "peers.bank.sources: a peer needs at least one address range"),
    ({"acquirers": ["12A"]}, "peers.bank.acquirers: '12A' is not an institution id"),
    ({"acquirers": [123456]}, "peers.bank.acquirers: expected a list of strings"),
    ({"terminals": ["ATM[0-9"]}, "peers.bank.terminals: 'ATM[0-9' is not a valid regular expression"),
    ({"max_connections": 0}, "peers.bank.max_connections: must be 1..100000"),
    ({"colour": "red"}, "peers.bank.colour: unknown key"),
])
def test_bad_peer_configuration_names_the_key(peer, message):
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        parse_settings(peers_doc(**peer), environ={})


def test_listener_caps_from_configuration():
    settings = parse_settings({"gateway": {"max_connections": 10, "backlog": 1024, "frame_timeout": 5}},
                              environ={})
    assert (settings.listener.max_connections, settings.listener.backlog, settings.listener.frame_timeout) == (
        10, 1024, 5.0)
    with pytest.raises(ConfigError, match="gateway.frame_timeout: must not exceed idle_timeout"):
        parse_settings({"gateway": {"frame_timeout": 600}}, environ={})
    with pytest.raises(ConfigError, match="gateway.backlog: must be 1..65535"):
        parse_settings({"gateway": {"backlog": 0}}, environ={})
