"""Business dates over the wire: F15 of an approval in the gateway's
timezone, a biller's cut-off at its exact second, cut-over by an 0800 with
F70 = 201 (seen by a second process sharing the journal), and a late
reversal that keeps its original's date.  Real processor and journal
(SQLite, and PostgreSQL when configured), bytes in and out."""
import dataclasses
import datetime as dt

import pytest
from sqlalchemy import select
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from billgw.billing_adapters.interface import Bill
from billgw.gateway import bill_rules as br
from billgw.gateway import business_day as bd
from billgw.gateway.bill_rules import SurchargeRule
from billgw.gateway.config import load_settings
from billgw.gateway.journal import Journal
from billgw.gateway.peers import PeerTable, make_peer
from billgw.gateway.processor import BillerRoute, TransactionProcessor
from billgw.gateway.protocol import Iso8583ServerFactory
from billgw.gateway.receipts import ReceiptComposer
from billgw.gateway.schema import business_days, reversals, transactions
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.messages import decode_response, encode_fields
from test_bill_rules_wire import PEER, TEST_PAN, BillsBiller

AMMAN = "Asia/Amman"  # UTC+3


def amman(day: int, hhmmss: str) -> float:
    """Clock seconds of a local Amman time on ``day`` November 2026."""
    return dt.datetime.combine(dt.date(2026, 11, day), bd.parse_time(hhmmss), bd.zone(AMMAN)).timestamp()


class Switch:
    """One gateway process (processor + listener) on a shared journal, and a
    signed-on switch connection to it."""

    def __init__(self, pool, clock, *, cutoff=None, cutover="00:00", peers=None, **service_rules):
        settings = load_settings(environ={})
        tel = settings.billers["TEL"]
        service = dataclasses.replace(tel.services["MOBILE"], **service_rules)
        tel = dataclasses.replace(tel, cutoff=cutoff, services={"MOBILE": service})
        self.biller = BillsBiller()
        self.clock = clock
        self.engine = pool.engine
        self.processor = TransactionProcessor(
            journal=Journal(pool), billers={"TEL": BillerRoute(tel, self.biller)}, codes=ResponseCodes(),
            clock=clock, receipts=ReceiptComposer(settings.sms.receipt_templates, settings.sms.reversal_templates),
            calendar=bd.BusinessCalendar(AMMAN, bd.parse_time(cutover)))
        factory = Iso8583ServerFactory(processor=self.processor, codes=ResponseCodes(), clock=clock,
                                       idle_timeout=10**6, peers=peers)
        self.proto = factory.buildProtocol(PEER)
        self.transport = StringTransport(peerAddress=PEER)
        self.proto.makeConnection(self.transport)
        self.stan = 100
        assert self.network("001").fields["39"] == "00"

    def send(self, mti, fields):
        self.transport.clear()
        self.proto.dataReceived(encode_frame(encode_fields(mti, fields)))
        [answer] = [decode_response(f) for f in Framer("binary2", 65535).feed(self.transport.value())]
        return answer

    def network(self, code, **extra):
        self.stan += 1
        return self.send("0800", {"7": "1122190000", "11": f"{self.stan:06d}", "70": code, **extra})

    def pay(self, amount=12_500, mti="0200", stan=None):
        if stan is None:
            self.stan += 1
            stan = f"{self.stan:06d}"
        return self.send(mti, {
            "2": TEST_PAN, "3": "500000", "4": f"{amount:012d}", "7": "1122190000", "11": stan,
            "12": "190000", "13": "1122", "32": "123456", "37": "632619000123", "41": "ATM00001",
            "48": BillRequestData("TEL", "MOBILE", "0791234567").to_tlv(), "49": "400"})

    def reverse(self, stan, amount=12_500):
        self.stan += 1
        return self.send("0420", {
            "3": "500000", "4": f"{amount:012d}", "7": "1122190500", "11": f"{self.stan:06d}",
            "32": "123456", "37": "632619000123", "41": "ATM00001", "49": "400",
            "90": f"0200{stan}1122190000{'123456':0>11}{'':0>11}"})

    def row(self, stan):
        with self.engine.connect() as conn:
            return conn.execute(select(transactions).where(transactions.c.stan == stan)).one()


@pytest.fixture
def clock():
    c = Clock()
    c.advance(amman(22, "21:59:59"))
    return c


def test_f15_and_the_journal_carry_the_local_business_date(sync_pool, clock):
    clock.advance(amman(23, "00:00:00") - clock.seconds() - 1)  # 23:59:59 local, 20:59:59 UTC
    sw = Switch(sync_pool, clock)
    assert sw.pay().fields["15"] == "1122"
    clock.advance(1)  # local midnight; the UTC date is still the 22nd
    assert dt.datetime.fromtimestamp(clock.seconds(), dt.timezone.utc).day == 22
    answer = sw.pay()
    assert (answer.fields["39"], answer.fields["15"]) == ("00", "1123")
    assert sw.row(answer.fields["11"]).business_date == "20261123"
    assert sw.row(answer.fields["11"]).settlement_date == "1123"


def test_surcharges_count_to_the_customers_local_day(sync_pool, clock):
    sw = Switch(sync_pool, clock, surcharge=SurchargeRule(br.FIXED, amount=500))
    sw.biller.bills = [Bill("B-1", 12_500, "20261122", "400")]  # due today, 22 November
    inquiry = {"3": "370000", "4": "000000000000", "7": "1122190000", "12": "190000", "13": "1122",
               "2": TEST_PAN, "32": "123456", "37": "632619000123", "41": "ATM00001", "49": "400",
               "48": BillRequestData("TEL", "MOBILE", "0791234567").to_tlv()}
    clock.advance(amman(23, "00:00:00") - clock.seconds() - 1)  # 23:59:59 local: not overdue yet
    assert sw.send("0200", {**inquiry, "11": "000901"}).bill.surcharge is None
    clock.advance(1)  # 00:00:00 local on the 23rd (21:00 UTC on the 22nd): one day late
    assert sw.send("0200", {**inquiry, "11": "000902"}).bill.surcharge == 500


def test_after_the_cut_off_a_payment_is_booked_on_the_next_business_date(sync_pool, clock):
    sw = Switch(sync_pool, clock, cutoff=bd.CutOff(bd.parse_time("22:00"), bd.NEXT_DAY))
    before = sw.pay()  # 21:59:59
    clock.advance(1)  # 22:00:00: the cut-off has passed
    after = sw.pay()
    assert (before.fields["39"], before.fields["15"]) == ("00", "1122")
    assert (after.fields["39"], after.fields["15"]) == ("00", "1123")
    assert sw.row(after.fields["11"]).business_date == "20261123"
    assert len(sw.biller.pay_calls) == 2


def test_after_the_cut_off_a_declining_biller_gets_nothing_posted(sync_pool, clock):
    sw = Switch(sync_pool, clock, cutoff=bd.CutOff(bd.parse_time("22:00"), bd.DECLINE))
    assert sw.pay().fields["39"] == "00"  # 21:59:59
    clock.advance(1)
    declined = sw.pay()
    assert declined.fields["39"] == "90"
    assert "15" not in declined.fields and "38" not in declined.fields
    row = sw.row(declined.fields["11"])
    assert (row.state, row.local_problem) == ("DECLINED", "cutoff_passed")
    assert len(sw.biller.pay_calls) == 1
    clock.advance(amman(23, "00:00:00") - clock.seconds())  # a new local day: open again
    assert sw.pay().fields["39"] == "00"


def test_an_advice_for_a_payment_declined_at_the_cut_off_is_never_posted(sync_pool, clock):
    sw = Switch(sync_pool, clock, cutoff=bd.CutOff(bd.parse_time("22:00"), bd.DECLINE))
    clock.advance(1)
    declined = sw.pay()
    assert declined.fields["39"] == "90"
    ack = sw.pay(mti="0220", stan=declined.fields["11"])  # the switch debited the customer anyway
    assert (ack.mti, ack.fields["39"]) == ("0230", "00")
    assert sw.row(declined.fields["11"]).state == "EXCEPTION"  # a person refunds it
    assert sw.biller.pay_calls == []


def test_a_cut_over_0800_moves_every_process_to_the_next_business_date(sync_pool, clock):
    a = Switch(sync_pool, clock)
    b = Switch(sync_pool, clock)  # another gateway process on the same journal
    assert b.pay().fields["15"] == "1122"
    cut = a.network("201")
    assert (cut.mti, cut.fields["39"], cut.fields["15"], cut.fields["70"]) == ("0810", "00", "1123", "201")
    assert b.pay().fields["15"] == "1123"  # b never saw the 0800
    again = a.network("201", **{"15": "1123"})  # the switch repeats it, naming the date
    assert (again.fields["39"], again.fields["15"]) == ("00", "1123")
    skip = a.network("201")  # would open the 24th before the 23rd has begun
    assert (skip.fields["39"], "15" in skip.fields) == ("12", False)
    with sync_pool.engine.connect() as conn:
        assert [r.business_date for r in conn.execute(select(business_days))] == ["20261123"]


def test_only_a_peer_allowed_to_cut_over_moves_the_business_date(sync_pool, clock):
    peer = make_peer("atm-network", sources=["127.0.0.0/8"], acquirers=["123456"], terminals=["ATM[0-9]{5}"],
                     cut_over=False)
    sw = Switch(sync_pool, clock, peers=PeerTable([peer]))
    refused = sw.network("201")
    assert (refused.fields["39"], "15" in refused.fields) == ("12", False)
    assert sw.pay().fields["15"] == "1122"
    with sync_pool.engine.connect() as conn:
        assert conn.execute(select(business_days)).all() == []


def test_a_cut_over_needs_sign_on_like_a_financial_message(sync_pool, clock):
    sw = Switch(sync_pool, clock)
    assert sw.network("002").fields["39"] == "00"  # signed off
    refused = sw.network("201")
    assert refused.fields["39"] == "05"
    with sync_pool.engine.connect() as conn:
        assert conn.execute(select(business_days)).all() == []


def test_the_scheduled_cut_over_moves_the_date_at_its_exact_second(sync_pool, clock):
    sw = Switch(sync_pool, clock, cutover="22:00:00")
    assert sw.pay().fields["15"] == "1122"  # 21:59:59
    clock.advance(1)
    assert sw.pay().fields["15"] == "1123"


def test_a_late_reversal_keeps_its_originals_business_date(sync_pool, clock):
    sw = Switch(sync_pool, clock)
    paid = sw.pay()
    assert paid.fields["15"] == "1122"
    clock.advance(amman(24, "10:00:00") - clock.seconds())  # two days later
    assert sw.reverse(paid.fields["11"]).fields["39"] == "00"
    unknown = sw.reverse("999999")
    assert unknown.fields["39"] == "00"
    with sync_pool.engine.connect() as conn:
        dates = {r.orig_stan: r.business_date for r in conn.execute(select(reversals))}
    assert dates == {paid.fields["11"]: "20261122", "999999": "20261124"}
    assert sw.row(paid.fields["11"]).business_date == "20261122"


def test_an_0800_without_f70_is_a_format_error_with_its_keys(sync_pool, clock):
    sw = Switch(sync_pool, clock)
    answer = sw.send("0800", {"7": "1122190000", "11": "000777"})
    assert (answer.mti, answer.fields["39"], answer.fields["11"], answer.fields["7"]) == (
        "0810", "30", "000777", "1122190000")
