"""The instant biller keeps the interface's promises, so a benchmark (or a
test) run against it exercises the gateway's production paths."""
import pytest
import structlog
from twisted.internet.testing import MemoryReactorClock

from billgw.billing_adapters.instant import InstantBiller
from billgw.billing_adapters.interface import BillerDeclined, BillQuery, PaymentOrder, PaymentStatusKind
from billgw.billing_adapters.registry import build_adapter


def order(payment_id="p1", amount=12500):
    return PaymentOrder(payment_id, "BENCH", "ANY", "0791234567", None, amount, "400", "2026-12-02T04:00:00+00:00")


def result(d):
    out = []
    d.addBoth(out.append)
    [value] = out
    return value


def test_it_is_built_from_configuration_like_any_biller():
    biller = build_adapter("instant", MemoryReactorClock(), {"bill_amount": 700}, structlog.get_logger())
    assert isinstance(biller, InstantBiller)
    inquiry = result(biller.inquire(BillQuery("BENCH", "ANY", "0791234567")))
    assert inquiry.total_due == 700 and inquiry.bills[0].bill_number == "IB-0791234567"
    with pytest.raises(ValueError, match=r"^settings\.bill_amont: unknown setting.*'instant'"):
        build_adapter("instant", MemoryReactorClock(), {"bill_amont": 700}, structlog.get_logger())


def test_payments_are_recorded_once_per_payment_id():
    biller = InstantBiller()
    first = result(biller.pay(order()))
    again = result(biller.pay(order()))
    assert first == again and first.amount == 12500
    other = result(biller.pay(order("p2", 300)))
    assert other.receipt_number != first.receipt_number
    status = result(biller.status("p1"))
    assert (status.status, status.amount) == (PaymentStatusKind.POSTED, 12500)
    assert result(biller.status("nope")).status is PaymentStatusKind.NOT_FOUND


def test_a_reversal_undoes_and_a_reversed_id_is_never_recorded_later():
    biller = InstantBiller()
    result(biller.pay(order()))
    assert result(biller.reverse("p1")).reversed
    assert result(biller.status("p1")).status is PaymentStatusKind.REVERSED
    assert not result(biller.reverse("late")).reversed
    refused = result(biller.pay(order("late")))
    assert isinstance(refused.value, BillerDeclined)
    assert result(biller.status("late")).status is PaymentStatusKind.NOT_FOUND
