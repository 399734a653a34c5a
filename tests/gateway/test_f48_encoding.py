"""F48's text encoding per peer: UTF-8 (the default), or ASCII only for a
strict decoder, with names transliterated or left out -- over the wire, and
in the configuration."""
import dataclasses

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from billgw.billing_adapters.interface import Bill, BillerCapabilities, BillInquiryResult
from billgw.gateway.config import ConfigError, load_settings, parse_settings
from billgw.gateway.journal import Journal
from billgw.gateway.peers import PeerTable, make_peer
from billgw.gateway.processor import BillerRoute, TransactionProcessor
from billgw.gateway.protocol import Iso8583ServerFactory
from billgw.gateway.receipts import ReceiptComposer
from billgw.iso8583.bill_data import BillRequestData, BillResponseData, decode_tlv, to_ascii
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.messages import decode_response, encode_fields
from test_bill_rules_wire import PEER, TEST_PAN

NAME = "ليلى حداد"  # Layla Haddad


class ArabicBiller:
    capabilities = BillerCapabilities()

    def inquire(self, query):
        return defer.succeed(BillInquiryResult(query.billing_number, NAME,
                                               (Bill("فاتورة-1", 12_500, "20261201", "400"),)))


def inquiry_bytes(sync_pool, **peer_options):
    settings = load_settings(environ={})
    tel = settings.billers["TEL"]
    clock = Clock()
    clock.advance(1795375800)
    processor = TransactionProcessor(
        journal=Journal(sync_pool), billers={"TEL": BillerRoute(tel, ArabicBiller())}, codes=ResponseCodes(),
        clock=clock, receipts=ReceiptComposer(settings.sms.receipt_templates, settings.sms.reversal_templates))
    peer = make_peer("strict", sources=["127.0.0.0/8"], acquirers=["123456"], terminals=["ATM[0-9]{5}"],
                     require_sign_on=False, **peer_options)
    factory = Iso8583ServerFactory(processor=processor, codes=ResponseCodes(), clock=clock,
                                   peers=PeerTable([peer]))
    proto = factory.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    proto.makeConnection(transport)
    proto.dataReceived(encode_frame(encode_fields("0200", {
        "2": TEST_PAN, "3": "370000", "4": "000000000000", "7": "1122193000", "11": "000001",
        "12": "193000", "13": "1122", "32": "123456", "37": "632619000123", "41": "ATM00001",
        "48": BillRequestData("TEL", "MOBILE", "0791234567").to_tlv(), "49": "400"})))
    [payload] = Framer("binary2", 65535).feed(transport.value())
    return payload


def test_utf8_peers_get_the_name_as_the_biller_gave_it(sync_pool):
    payload = inquiry_bytes(sync_pool)
    bill = decode_response(payload).bill
    assert bill.customer_name == NAME and bill.bills[0].bill_number == "فاتورة-1"


def test_ascii_peers_get_a_transliterated_name_and_only_ascii_bytes(sync_pool):
    payload = inquiry_bytes(sync_pool, f48_encoding="ascii")
    payload.decode("ascii")  # a strict decoder takes the whole message
    answer = decode_response(payload)
    assert answer.fields["39"] == "00"
    assert answer.bill.customer_name == "lyla hdd"  # anyascii's romanisation of the Arabic
    assert answer.bill.bills[0].bill_number == "ftwrh-1" and answer.bill.bills[0].amount == 12_500
    assert answer.bill.due_amount == 12_500


def test_ascii_peers_may_have_names_left_out(sync_pool):
    payload = inquiry_bytes(sync_pool, f48_encoding="ascii", f48_names="omit")
    payload.decode("ascii")
    answer = decode_response(payload)
    assert answer.bill.customer_name is None and answer.bill.due_amount == 12_500


def test_to_ascii_keeps_ascii_values_and_never_grows_f48():
    f48 = BillResponseData(customer_name="Zoë Ñandú " + NAME, due_amount=100, inquiry_reference="a" * 32).to_tlv()
    out = to_ascii(f48)
    assert out.isascii() and len(out.encode()) <= len(f48.encode())
    tags = dict(decode_tlv(out))
    assert tags["CN"].startswith("Zoe Nandu ") and tags["DA"] == "100" and tags["IR"] == "a" * 32
    assert "CN" not in dict(decode_tlv(to_ascii(f48, "omit")))
    assert to_ascii("DA003100") == "DA003100"


def _peer_settings(**peer):
    base = {"sources": ["127.0.0.1"], "acquirers": ["1"], "terminals": ["T.*"]}
    return parse_settings({"peers": {"bank": {**base, **peer}}}, environ={})


def test_the_encoding_is_a_peer_key():
    assert _peer_settings().peers.peers[0].f48_encoding == "utf-8"
    peer = _peer_settings(f48_encoding="ascii", f48_names="omit").peers.peers[0]
    assert (peer.f48_encoding, peer.f48_names) == ("ascii", "omit")


@pytest.mark.parametrize("peer, key", [
    ({"f48_encoding": "latin-1"}, "peers.bank.f48_encoding"),
    ({"f48_encoding": "ascii", "f48_names": "drop"}, "peers.bank.f48_names"),
    ({"f48_names": "omit"}, "peers.bank.f48_names"),
])
def test_bad_encoding_keys_are_named(peer, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        _peer_settings(**peer)
