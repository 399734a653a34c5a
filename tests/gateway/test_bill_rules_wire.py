"""The bill rules over the wire: 0200 bytes into the gateway's protocol, the
0210 bytes out, with the real processor, a real journal (SQLite, and
PostgreSQL when configured) and a biller whose bills each test scripts."""
import dataclasses
import json

import pytest
from sqlalchemy import select
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from billgw.billing_adapters.interface import (
    Bill,
    BillerCapabilities,
    BillerDeclined,
    BillerUnavailable,
    BillInquiryResult,
    DeclineReason,
    PaymentConfirmation,
)
from billgw.gateway import bill_rules as br
from billgw.gateway.bill_rules import AmountRule, SurchargeRule
from billgw.gateway.config import load_settings
from billgw.gateway.journal import Journal
from billgw.gateway.processor import BillerRoute, TransactionProcessor
from billgw.gateway.protocol import Iso8583ServerFactory
from billgw.gateway.receipts import ReceiptComposer
from billgw.gateway.schema import transactions
from billgw.iso8583.bill_data import BillLine, BillPaid, BillRequestData, BillResponseData
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.messages import decode_response, encode_fields
from billgw.sms.outbox import sms_outbox

TEST_PAN = "4761739001010010"
PEER = IPv4Address("TCP", "127.0.0.1", 5555)
NOV_22_2026 = 1795375800  # 2026-11-22T19:30:00Z


class BillsBiller:
    """Open bills as scripted; records every call; confirms what it is paid
    (or ``confirm_amount``, a biller that recorded another amount)."""

    capabilities = BillerCapabilities()

    def __init__(self):
        self.bills = [Bill("B-2", 7_000, "20261201", "400"), Bill("B-1", 12_500, "20261101", "400")]
        self.inquiries = []
        self.pay_calls = []
        self.confirm_amount = None
        self.settled = ()
        self.inquiry_fails = None

    def inquire(self, query):
        self.inquiries.append(query)
        if self.inquiry_fails is not None:
            return defer.fail(self.inquiry_fails)
        return defer.succeed(BillInquiryResult(query.billing_number, "Layla Haddad", tuple(self.bills)))

    def pay(self, order):
        self.pay_calls.append(order)
        amount = order.amount if self.confirm_amount is None else self.confirm_amount
        return defer.succeed(PaymentConfirmation(order.payment_id, "RCPT-7", amount, None, self.settled))

    def status(self, payment_id):
        raise NotImplementedError

    def reverse(self, payment_id):
        raise NotImplementedError


class Gateway:
    """A signed-on connection to a gateway whose MOBILE service has ``rules``."""

    def __init__(self, pool, **rules):
        settings = load_settings(environ={})
        tel = settings.billers["TEL"]
        service = dataclasses.replace(tel.services["MOBILE"], **rules)
        self.service = service
        self.biller = BillsBiller()
        self.clock = Clock()
        self.clock.advance(NOV_22_2026)
        self.engine = pool.engine
        processor = TransactionProcessor(
            journal=Journal(pool),
            billers={"TEL": BillerRoute(dataclasses.replace(tel, services={"MOBILE": service}), self.biller)},
            codes=ResponseCodes(), clock=self.clock,
            receipts=ReceiptComposer(settings.sms.receipt_templates, settings.sms.reversal_templates),
            new_auth=lambda: "654321")
        factory = Iso8583ServerFactory(processor=processor, codes=ResponseCodes(), clock=self.clock,
                                       idle_timeout=600, max_frame=4096)
        self.proto = factory.buildProtocol(PEER)
        self.transport = StringTransport(peerAddress=PEER)
        self.proto.makeConnection(self.transport)
        self.stan = 100
        self.send("0800", {"7": "1122193000", "11": "000001", "70": "001"})

    def send(self, mti, fields):
        self.transport.clear()
        self.proto.dataReceived(encode_frame(encode_fields(mti, fields)))
        [answer] = [decode_response(f) for f in Framer("binary2", 65535).feed(self.transport.value())]
        self.last_answer = answer
        return answer

    def request(self, amount, *, kind="pay", f48=None, named=(), reference=None, billing="0791234567"):
        self.stan += 1
        f48 = f48 or BillRequestData("TEL", "MOBILE", billing, msisdn="962791234567",
                                     bill_numbers=tuple(named), inquiry_reference=reference).to_tlv()
        answer = self.send("0200", {
            "2": TEST_PAN, "3": "500000" if kind == "pay" else "370000", "4": f"{amount:012d}",
            "7": "1122193000", "11": f"{self.stan:06d}", "12": "193000", "13": "1122", "32": "123456",
            "37": "632619000123", "41": "ATM00001", "48": f48, "49": "400"})
        bill = BillResponseData.from_tlv(answer.fields["48"]) if "48" in answer.fields else None
        return answer.fields["39"], bill

    def pay(self, amount, named=(), reference=None, billing="0791234567"):
        return self.request(amount, named=named, reference=reference, billing=billing)

    def inquire(self, billing="0791234567"):
        return self.request(0, kind="inq", billing=billing)

    def rows(self, table=transactions):
        with self.engine.connect() as conn:
            return conn.execute(select(table)).all()

    def last(self):
        return self.rows()[-1]


@pytest.fixture
def gateway(sync_pool):
    return lambda **rules: Gateway(sync_pool, **rules)


# --- 1. amount rules against the amount due ----------------------------------

def test_exact_rule_approves_whole_bills_and_declines_the_rest(gateway):
    gw = gateway(amount_rule=AmountRule(br.EXACT))
    code, bill = gw.pay(12_500)
    assert code == "00"
    assert bill.bill_number == "B-1" and bill.paid == (BillPaid("B-1", 12_500, 0),)
    [order] = gw.biller.pay_calls
    assert order.bill_number == "B-1" and [(b.bill_number, b.amount) for b in order.bills] == [("B-1", 12_500)]
    assert gw.last().bill_number == "B-1"

    for amount in (12_499, 12_501, 19_501):
        code, bill = gw.pay(amount)
        assert (code, bill) == ("13", None)
    assert len(gw.biller.pay_calls) == 1  # none of them reached the biller's posting
    declined = gw.rows()[1:]
    assert [(r.state, r.local_problem) for r in declined] == [
        ("DECLINED", "amount_below_due"), ("DECLINED", "amount_below_due"), ("DECLINED", "amount_above_due")]


def test_partial_rule_lower_bound(gateway):
    gw = gateway(amount_rule=AmountRule(br.PARTIAL, partial_min=1_000))
    assert gw.pay(999)[0] == "13"
    code, bill = gw.pay(1_000)
    assert code == "00" and bill.paid == (BillPaid("B-1", 1_000, 0),)


def test_over_rule_upper_bound(gateway):
    gw = gateway(amount_rule=AmountRule(br.OVER, over_max=5_000))
    code, bill = gw.pay(24_500)
    assert code == "00"
    assert bill.paid == (BillPaid("B-1", 12_500, 0), BillPaid("B-2", 7_000, 0))  # 5.000 is an advance
    assert gw.pay(24_501)[0] == "13"
    assert gw.pay(12_000)[0] == "13"


def test_an_advice_for_a_payment_declined_on_the_bill_rules_is_never_posted(gateway):
    gw = gateway(amount_rule=AmountRule(br.EXACT))
    assert gw.pay(12_499)[0] == "13"
    fields = {"2": TEST_PAN, "3": "500000", "4": f"{12_499:012d}", "7": "1122193000",
              "11": f"{gw.stan:06d}", "12": "193000", "13": "1122", "32": "123456", "37": "632619000123",
              "41": "ATM00001", "49": "400",
              "48": BillRequestData("TEL", "MOBILE", "0791234567", msisdn="962791234567").to_tlv()}
    ack = gw.send("0220", fields)
    assert ack.fields["39"] == "00"
    assert gw.last().state == "EXCEPTION" and gw.biller.pay_calls == []


def test_the_bills_cannot_be_listed(gateway):
    gw = gateway(amount_rule=AmountRule(br.EXACT))
    gw.biller.inquiry_fails = BillerUnavailable("connection refused")
    assert gw.pay(12_500) == ("91", None)
    gw.biller.inquiry_fails = BillerDeclined(DeclineReason.UNKNOWN_BILLING_NUMBER)
    assert gw.pay(12_500) == ("14", None)
    assert gw.biller.pay_calls == [] and {r.state for r in gw.rows()} == {"DECLINED"}


def test_nothing_due_is_88(gateway):
    gw = gateway(amount_rule=AmountRule(br.EXACT))
    gw.biller.bills = []
    assert gw.pay(12_500) == ("88", None)
    assert gw.inquire() == ("88", None)


def test_prepaid_topup_amounts(gateway):
    gw = gateway(kind="prepaid", topup_amounts=(5_000, 10_000))
    assert gw.pay(7_500) == ("13", None)
    code, _ = gw.pay(5_000)
    assert code == "00"
    assert gw.biller.inquiries == []  # a top-up has no bill to look up
    assert [r.local_problem for r in gw.rows()] == ["amount_not_offered", None]
    gw.biller.bills = []
    code, bill = gw.inquire()
    assert code == "00" and bill.customer_name == "Layla Haddad" and bill.due_amount is None


# --- 2. several open bills ------------------------------------------------------

def test_a_payment_names_several_bills(gateway):
    gw = gateway(amount_rule=AmountRule(br.EXACT))
    code, bill = gw.pay(19_500, named=("B-2", "B-1"))
    assert code == "00"
    assert bill.paid == (BillPaid("B-1", 12_500, 0), BillPaid("B-2", 7_000, 0))
    [order] = gw.biller.pay_calls
    assert [(b.bill_number, b.amount) for b in order.bills] == [("B-1", 12_500), ("B-2", 7_000)]
    assert gw.pay(7_000, named=("B-2",))[0] == "00"  # one bill, not the oldest: named
    assert gw.pay(7_000, named=("B-9",))[0] == "25"


def test_several_bl_tags_reach_the_biller_under_the_any_rule_too(gateway):
    gw = gateway()
    code, bill = gw.pay(19_500, named=("B-1", "B-2"))
    assert code == "00" and [p.bill_number for p in bill.paid] == ["B-1", "B-2"]


def test_the_billers_word_on_what_was_settled_wins(gateway):
    from billgw.billing_adapters.interface import BillAmount

    gw = gateway(amount_rule=AmountRule(br.PARTIAL, partial_min=100))
    gw.biller.settled = (BillAmount("B-2", 1_000),)
    code, bill = gw.pay(1_000)
    assert code == "00" and bill.paid == (BillPaid("B-2", 1_000, 0),)


def test_inquiry_of_30_bills_fits_f48(gateway):
    gw = gateway(surcharge=SurchargeRule(br.FIXED, amount=500))
    gw.biller.bills = [Bill(f"2024-{i:02d}-BILL-NUMBER-LONG", 1_000 + i, f"2024{1 + i % 12:02d}15", "400")
                       for i in range(30)]
    code, bill = gw.inquire()
    assert code == "00"
    assert len(bill.bills) + bill.more_bills == 30 and bill.more_bills > 0
    assert bill.surcharge == 30 * 500  # every bill's surcharge, listed or not
    assert bill.due_amount == sum(1_000 + i for i in range(30))


# --- 3. late-payment surcharges ---------------------------------------------------

def test_surcharge_shown_apart_at_inquiry_and_payment(gateway):
    gw = gateway(amount_rule=AmountRule(br.EXACT), surcharge=SurchargeRule(br.YEARLY_RATE, rate_bp=3650))
    # 22 Nov: B-1 (due 1 Nov) is 21 days late: 12.500 JOD * 0.1 % * 21 = 262.5 -> 263 fils.
    code, bill = gw.inquire()
    assert code == "00" and bill.due_amount == 19_500 and bill.surcharge == 263
    assert bill.bills == (BillLine("B-1", 12_500, "20261101", 263), BillLine("B-2", 7_000, "20261201", 0))
    assert "BD022B-1|12500|20261101|263BD017B-2|7000|20261201" in gw.last_answer.fields["48"]
    assert gw.pay(12_500)[0] == "13"  # the surcharge is due too
    code, bill = gw.pay(12_763)
    assert code == "00" and bill.surcharge == 263 and bill.paid == (BillPaid("B-1", 12_763, 263),)
    assert gw.biller.pay_calls[0].surcharge == 263
    assert "B-1 12763 (surcharge 263)" in gw.last().detail  # the journal says what it settled


def test_surcharge_and_fee_are_journaled_apart_and_shown_in_the_receipt(gateway):
    gw = gateway(amount_rule=AmountRule(br.EXACT), surcharge=SurchargeRule(br.YEARLY_RATE, rate_bp=3650),
                 fee=250, fee_bearer="customer")
    gw.proto.factory.processor._receipts = ReceiptComposer(
        {"en": "Paid {amount} {currency_code}.{surcharge_line} Fee {fee}.",
         "ar": "{amount}{surcharge_line}"}, {"en": "Reversed {amount}."})
    assert gw.pay(12_763)[0] == "00"
    row = gw.last()
    assert (row.amount, row.surcharge, row.fee, row.fee_bearer) == (12_763, 263, 250, "customer")
    [sms] = gw.rows(sms_outbox)
    assert sms.text == "Paid 12.763 JOD. Incl. late surcharge 0.263 JOD. Fee 0.250."


def test_no_surcharge_adds_nothing_to_the_receipt(gateway):
    gw = gateway(fee=0)
    gw.proto.factory.processor._receipts = ReceiptComposer(
        {"en": "Paid {amount} {currency_code}.{surcharge_line} Fee {fee}."}, {"en": "Reversed {amount}."})
    assert gw.pay(12_500)[0] == "00"
    assert (gw.last().surcharge, gw.last().fee_bearer) == (0, "customer")
    [sms] = gw.rows(sms_outbox)
    assert sms.text == "Paid 12.500 JOD. Fee 0.000."


def test_surcharge_across_29_february(gateway):
    gw = gateway(surcharge=SurchargeRule(br.YEARLY_RATE, rate_bp=3650))
    gw.biller.bills = [Bill("F-1", 100_000, "20280228", "400")]
    gw.clock.advance(1835481600 - gw.clock.seconds())  # 2028-03-01T00:00:00Z: 2 days late (leap year)
    assert gw.inquire()[1].surcharge == 200
    gw.clock.advance(86_399)  # 23:59:59 the same day
    assert gw.inquire()[1].surcharge == 200
    gw.clock.advance(1)  # 2 March
    assert gw.inquire()[1].surcharge == 300


def test_bad_due_date_from_the_biller_is_not_sent_on(gateway):
    gw = gateway(surcharge=SurchargeRule(br.FIXED, amount=500))
    gw.biller.bills = [Bill("X-1", 1_000, "2026-11-01", "400")]
    assert gw.inquire() == ("96", None)


# --- 4. convenience fee -------------------------------------------------------------

def test_fee_borne_by_the_customer_is_shown_and_journaled(gateway):
    gw = gateway(fee=250, fee_bearer="customer")
    assert gw.inquire()[1].fee == 250
    code, bill = gw.pay(12_500)
    assert code == "00" and bill.fee == 250
    assert gw.biller.pay_calls[0].amount == 12_500  # the biller gets the bill's amount; the fee is apart
    row = gw.last()
    assert row.fee == 250
    [sms] = gw.rows(sms_outbox)
    assert "fee 0.250," in sms.text


def test_fee_borne_by_the_biller_is_not_shown_to_the_customer(gateway):
    gw = gateway(fee=250, fee_bearer="biller")
    assert gw.inquire()[1].fee == 0
    code, bill = gw.pay(12_500)
    assert code == "00" and bill.fee is None
    assert gw.last().fee == 250  # deducted from the biller at settlement
    [sms] = gw.rows(sms_outbox)
    assert "fee 0.000," in sms.text and "0.250" not in sms.text


# --- 5. the biller's confirmation is cross-checked -------------------------------------

@pytest.mark.parametrize("confirmed", [1, 12_499, 12_501])
def test_a_confirmation_of_another_amount_is_never_approved(gateway, confirmed):
    gw = gateway()
    gw.biller.confirm_amount = confirmed
    assert gw.pay(12_500) == ("91", None)
    row = gw.last()
    assert row.state == "IN_DOUBT" and f"amount confirmed {confirmed}" in row.detail
    assert json.loads(row.response_fields)["fields"]["39"] == "91"
    assert gw.rows(sms_outbox) == []  # no receipt for it


# --- 6. the inquiry reference ------------------------------------------------------------

def test_a_fresh_reference_is_required_and_a_stale_or_foreign_one_declined(gateway):
    gw = gateway(inquiry_reference="required", inquiry_reference_ttl=900.0)
    assert gw.pay(12_500) == ("76", None)  # none quoted
    reference = gw.inquire()[1].inquiry_reference
    other = gw.inquire(billing="0797654321")[1].inquiry_reference
    assert gw.pay(12_500, reference=other) == ("76", None)  # another account's
    assert gw.pay(12_500, reference="f" * 32) == ("76", None)  # no such inquiry
    first_payment = gw.rows()[-1].id
    assert gw.pay(12_500, reference=first_payment) == ("76", None)  # a payment, not an inquiry
    gw.clock.advance(900)
    assert gw.pay(12_500, reference=reference)[0] == "00"  # the 900th second: still fresh
    gw.clock.advance(0.5)
    assert gw.pay(12_500, reference=reference) == ("77", None)
    assert len(gw.biller.pay_calls) == 1
    assert [r.local_problem for r in gw.rows() if r.kind == "payment"] == [
        "inquiry_reference_unknown"] * 4 + [None, "inquiry_reference_expired"]


def test_a_checked_reference_may_be_left_out(gateway):
    gw = gateway(inquiry_reference="checked", inquiry_reference_ttl=60.0)
    assert gw.pay(12_500)[0] == "00"
    assert gw.pay(12_500, reference="0" * 32) == ("76", None)


def test_an_unanswered_inquiry_is_no_reference(gateway):
    gw = gateway(inquiry_reference="required")
    gw.biller.bills = []
    gw.inquire()  # 88: no F48, but its id is journaled
    [inquiry] = gw.rows()
    assert gw.pay(12_500, reference=inquiry.id) == ("76", None)
