"""The world the settlement tests run in: the processor and the biller
worker against a real journal (synchronous pool) and an in-memory biller
with a ledger, on a Clock; and the messages a switch sends."""

import pytest
from sqlalchemy import select
from twisted.internet import defer
from twisted.internet.task import Clock

from billgw.billing_adapters.interface import (
    BillerCapabilities,
    BillerDeclined,
    DeclineReason,
    PaymentConfirmation,
    PaymentStatus,
    PaymentStatusKind,
    ReversalConfirmation,
)
from billgw.gateway.biller_worker import BillerWorker
from billgw.gateway.config import load_settings
from billgw.gateway.journal import Journal
from billgw.gateway.processor import BillerRoute, TransactionProcessor
from billgw.gateway.receipts import ReceiptComposer
from billgw.gateway.schema import transactions
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.messages import decode_request, encode_fields
from billgw.sms.outbox import sms_outbox

TEST_PAN = "4761739001010010"
NOW = 1795375800.0  # 2026-11-22T19:30:00Z


class LedgerBiller:
    """An in-memory biller with a ledger: postings, reversals, tombstones."""

    def __init__(self, can_reverse=True):
        self.capabilities = BillerCapabilities(can_reverse=can_reverse)
        self.ledger = {}  # payment id -> [amount, reversed]
        self.tombstones = set()
        self.calls = []
        self.hold = None  # Deferred returned by pay() (the biller records first)
        self.fail_status = None

    def inquire(self, query):
        raise NotImplementedError

    def pay(self, order):
        self.calls.append(("pay", order.payment_id))
        if order.payment_id in self.tombstones:
            return defer.fail(BillerDeclined(DeclineReason.OTHER, "DUPLICATE_MISMATCH: reversed id"))
        self.ledger.setdefault(order.payment_id, [order.amount, False])
        if self.hold is not None:
            return self.hold
        return defer.succeed(PaymentConfirmation(order.payment_id, f"R-{order.payment_id[:6]}", order.amount))

    def status(self, payment_id):
        self.calls.append(("status", payment_id))
        if self.fail_status is not None:
            return defer.fail(self.fail_status)
        entry = self.ledger.get(payment_id)
        if entry is None:
            return defer.succeed(PaymentStatus(payment_id, PaymentStatusKind.NOT_FOUND))
        kind = PaymentStatusKind.REVERSED if entry[1] else PaymentStatusKind.POSTED
        return defer.succeed(PaymentStatus(payment_id, kind, "R-x", entry[0]))

    def reverse(self, payment_id):
        self.calls.append(("reverse", payment_id))
        if not self.capabilities.can_reverse:
            return defer.fail(BillerDeclined(DeclineReason.NOT_PERMITTED))
        entry = self.ledger.get(payment_id)
        if entry is None:
            self.tombstones.add(payment_id)
            return defer.succeed(ReversalConfirmation(payment_id, False))
        entry[1] = True
        return defer.succeed(ReversalConfirmation(payment_id, True))

    def held(self):
        return {pid: amount for pid, (amount, rev) in self.ledger.items() if not rev}


def fields(stan="000123", amount=12500, language="en", **over):
    f = {
        "2": TEST_PAN, "3": "500000", "4": f"{amount:012d}", "7": "1122193000", "11": stan,
        "12": "193000", "13": "1122", "32": "123456", "37": "632619000123", "41": "ATM00001",
        "49": "400",
        "48": BillRequestData("TEL", "MOBILE", "0791234567", msisdn="962791234567", language=language).to_tlv(),
    }
    f.update(over)
    return f


def payment(**kw):
    return decode_request(encode_fields("0200", fields(**kw)))


def advice(mti="0220", **kw):
    return decode_request(encode_fields(mti, fields(**kw)))


def reversal(mti="0420", orig_stan="000123", stan="000500", amount=12500):
    f90 = f"0200{orig_stan}1122193000{'123456':0>11}{'':0>11}"
    return decode_request(encode_fields(mti, {
        "3": "500000", "4": f"{amount:012d}", "7": "1122193100", "11": stan, "12": "193100",
        "13": "1122", "32": "123456", "37": "632619000123", "41": "ATM00001", "49": "400",
        "39": "68", "90": f90}))


@pytest.fixture
def world(sync_pool):
    settings = load_settings(environ={})
    biller = LedgerBiller()
    clock = Clock()
    clock.advance(NOW)
    sms_wakes = []
    processor = TransactionProcessor(
        journal=Journal(sync_pool), billers={"TEL": BillerRoute(settings.billers["TEL"], biller)},
        codes=ResponseCodes(), clock=clock,
        receipts=ReceiptComposer(settings.sms.receipt_templates, settings.sms.reversal_templates),
        on_sms_queued=lambda: sms_wakes.append(1), status_delay=2.0, expire_after=600.0)
    worker = BillerWorker(run_in_db=sync_pool.run, processor=processor, clock=clock, owner="test",
                          poll_interval=1.0, retry_base=2.0, retry_cap=30.0, stale_after=40.0,
                          on_sms_queued=lambda: sms_wakes.append(1))
    return processor, worker, biller, clock, sync_pool.engine


def table(engine, t, *where):
    with engine.connect() as conn:
        return conn.execute(select(t).where(*where)).all()


def state_of(engine, txn_id=None):
    rows = table(engine, transactions)
    if txn_id is None:
        [row] = rows
        return row.state
    return [r for r in rows if r.id == txn_id][0].state


def sms(engine):
    return {(r.kind, r.state) for r in table(engine, sms_outbox)}


async def settle_all(worker, clock, seconds=10.0):
    """Advance time a second at a time, running a worker pass each time."""
    for _ in range(int(seconds)):
        clock.advance(1.0)
        await worker.wake()
