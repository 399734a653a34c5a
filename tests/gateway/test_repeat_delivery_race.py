"""A repeat 0200 whose journaling is delivered before its original's.

On PostgreSQL the journal runs on a pool of threads, one transaction each:
the original's INSERT commits in one thread, the repeat (blocked on the
acquirer keys' lock) then sees it in another, and the two results reach
the reactor in whichever order the threads post them.  When the repeat's
comes first, the processor has not yet marked the original in flight, so
the repeat is answered 91 while the original goes on to be posted and
approved; a switch that takes the first answer it gets has declined a
payment the biller holds (seen in the chaos run on PostgreSQL: "duplicate
answered 00, first answer 91", and the biller holding a posting the switch
never kept).  Here a pool that delivers the first admit's result after the
second's reproduces it on any database.

Fixed in gateway/processor.py (``_handle``): a request is in flight from
before it is journaled, so the repeat finds it and waits for its answer.
Without that, this test fails (the repeat gets 91).
"""
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from billgw.billing_adapters.interface import BillerCapabilities, PaymentConfirmation
from billgw.gateway.config import load_settings
from billgw.gateway.journal import Journal
from billgw.gateway.processor import BillerRoute, TransactionProcessor
from billgw.gateway.receipts import ReceiptComposer
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.messages import decode_request, encode_fields

TEST_PAN = "4761739001010010"


class Biller:
    capabilities = BillerCapabilities()

    def __init__(self):
        self.pay_calls = []

    def pay(self, order):
        self.pay_calls.append(order)
        return defer.succeed(PaymentConfirmation(order.payment_id, "RCPT-1", order.amount, "B-1"))


class FirstDeliveredLast:
    """The journal's pool, but the first ``admit`` result reaches the
    caller only on :meth:`release` -- after the second's, as two PostgreSQL
    threads may post them.  The work itself is done (committed) at once."""

    def __init__(self, pool):
        self._pool = pool
        self._held: list[tuple[defer.Deferred, defer.Deferred]] = []
        self.admits = 0

    def admit(self, fn, *args, **kwargs):
        done = self._pool.admit(fn, *args, **kwargs)
        self.admits += 1
        if self.admits > 1:
            return done
        delivered = defer.Deferred()
        self._held.append((done, delivered))
        return delivered

    def release(self) -> None:
        for done, delivered in self._held:
            done.chainDeferred(delivered)

    def __getattr__(self, name):
        return getattr(self._pool, name)


def payment_request():
    fields = {
        "2": TEST_PAN, "3": "500000", "4": f"{12500:012d}", "7": "1122193000", "11": "000123",
        "12": "193000", "13": "1122", "32": "123456", "37": "632619000123", "41": "ATM00001", "49": "400",
        "48": BillRequestData("TEL", "MOBILE", "0791234567", msisdn="962791234567", language="en").to_tlv(),
    }
    return decode_request(encode_fields("0200", fields))


@pytest_twisted.ensureDeferred
async def test_a_repeat_delivered_before_its_original_gets_the_originals_answer(sync_pool):
    settings = load_settings(environ={})
    biller = Biller()
    clock = Clock()
    clock.advance(1795375800)  # 2026-11-22T19:30:00Z
    pool = FirstDeliveredLast(sync_pool)
    processor = TransactionProcessor(
        journal=Journal(pool), billers={"TEL": BillerRoute(settings.billers["TEL"], biller)},
        codes=ResponseCodes(), clock=clock,
        receipts=ReceiptComposer(settings.sms.receipt_templates, settings.sms.reversal_templates),
        on_sms_queued=lambda: None, new_auth=lambda: "654321")
    original = processor.handle(payment_request())
    repeat = processor.handle(payment_request())
    pool.release()
    first, second = await original, await repeat
    assert first.fields["39"] == "00" and len(biller.pay_calls) == 1  # the original is approved
    assert second.fields == first.fields  # the original's 00, never a 91 for an approved payment
