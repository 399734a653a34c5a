"""The JSON biller simulator's back office: accounts, bills and the ledger
of payments, with the biller's rules -- in memory, ``now`` passed in.

Pure: each function takes the :class:`JsonLedger` and a request and returns
a result or raises :class:`BillerRefusal` (an error code of the interface).
The HTTP front end (:mod:`.sim`) only decodes, calls, encodes.  The ledger
lives as long as the simulator process; the audit reads it through the
interface's reconciliation listing, as it would a real biller's.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace

from billgw.billing_adapters.interface import BillStatus


class BillerRefusal(Exception):
    """Refused, nothing recorded: answered with a refusal status and an error body."""

    def __init__(self, code: str, message: str = "", status: int = 422):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class SimBill:
    bill_number: str
    amount: int
    outstanding: int
    currency: str
    issue_date: str  # YYYYMMDD
    due_date: str
    expiry_date: str | None = None
    allow_partial: bool = True
    min_amount: int | None = None

    def status(self, today: str) -> BillStatus:
        if self.outstanding == 0:
            return BillStatus.PAID
        if self.expiry_date is not None and today > self.expiry_date:
            return BillStatus.EXPIRED
        return BillStatus.PARTIALLY_PAID if self.outstanding < self.amount else BillStatus.NEW


@dataclass
class Account:
    billing_number: str
    customer_name: str
    service: str
    bills: list[SimBill]


@dataclass
class Payment:
    payment_id: str
    service: str
    billing_number: str
    bill_number: str
    amount: int
    currency: str
    paid_at: str
    channel: str
    receipt_number: str
    recorded_at: str
    reversed: bool = False
    order: int = 0  # position in the ledger (the reconciliation cursor)


@dataclass
class JsonLedger:
    accounts: dict[tuple[str, str], Account]  # (service, billing number) -> account
    reversal_policy: str = "allowed"
    receipt_prefix: str = "JR"
    payments: dict[str, Payment] = field(default_factory=dict)
    tombstones: set[str] = field(default_factory=set)  # reversed before they were paid

    @property
    def services(self) -> set[str]:
        return {service for service, _ in self.accounts}


def _today(now: float) -> str:
    return _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y%m%d")


def _stamp(now: float) -> str:
    return _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _account(ledger: JsonLedger, service: str, number: str) -> Account:
    if service not in ledger.services:
        raise BillerRefusal("UNKNOWN_SERVICE", f"no service {service!r}")
    account = ledger.accounts.get((service, number))
    if account is None:
        raise BillerRefusal("BILLING_NUMBER_NOT_FOUND", f"no account {number}", status=404)
    return account


def inquire(ledger: JsonLedger, service: str, number: str, bill_number: str | None, now: float):
    """(account, bills) -- every bill of the account, or the one named."""
    account = _account(ledger, service, number)
    bills = account.bills
    if bill_number is not None:
        bills = [b for b in bills if b.bill_number == bill_number]
        if not bills:
            raise BillerRefusal("BILL_NOT_FOUND", f"no bill {bill_number} on {number}", status=404)
    return account, [replace(b) for b in bills]


def _same_order(payment: Payment, request: dict) -> bool:
    return (payment.service, payment.billing_number, payment.amount, payment.currency) == (
        request["service"], request["billingNumber"], request["amount"], request["currency"]) and \
        request.get("billNumber") in (None, payment.bill_number)


def pay(ledger: JsonLedger, request: dict, now: float) -> Payment:
    """Record a payment notification, idempotently on its paymentId."""
    payment_id = request["paymentId"]
    if payment_id in ledger.tombstones:
        raise BillerRefusal("PAYMENT_ID_REVERSED", "this paymentId was reversed and cannot be paid")
    held = ledger.payments.get(payment_id)
    if held is not None:
        if held.reversed:
            raise BillerRefusal("PAYMENT_ID_REVERSED", "this paymentId was reversed and cannot be paid")
        if not _same_order(held, request):
            raise BillerRefusal("DUPLICATE_MISMATCH", "paymentId reused with other data")
        return held
    account = _account(ledger, request["service"], request["billingNumber"])
    today = _today(now)
    bill = _bill_to_credit(account, request.get("billNumber"), today)
    amount = request["amount"]
    if request["currency"] != bill.currency:
        raise BillerRefusal("CURRENCY_MISMATCH", f"bill is in {bill.currency}")
    if not isinstance(amount, int) or amount <= 0 or amount > bill.outstanding:
        raise BillerRefusal("INVALID_AMOUNT", f"amount {amount} outside 1..{bill.outstanding}")
    if amount < bill.outstanding and not bill.allow_partial:
        raise BillerRefusal("PARTIAL_NOT_ALLOWED", f"bill {bill.bill_number} must be paid in full")
    if bill.min_amount is not None and amount < min(bill.min_amount, bill.outstanding):
        raise BillerRefusal("INVALID_AMOUNT", f"amount {amount} below the minimum {bill.min_amount}")
    bill.outstanding -= amount
    order = len(ledger.payments) + 1
    payment = Payment(payment_id=payment_id, service=request["service"], billing_number=account.billing_number,
                      bill_number=bill.bill_number, amount=amount, currency=request["currency"],
                      paid_at=request["paidAt"], channel=request.get("channel", ""),
                      receipt_number=f"{ledger.receipt_prefix}{order:010d}", recorded_at=_stamp(now), order=order)
    ledger.payments[payment_id] = payment
    return payment


def _bill_to_credit(account: Account, bill_number: str | None, today: str) -> SimBill:
    if bill_number is not None:
        bill = next((b for b in account.bills if b.bill_number == bill_number), None)
        if bill is None:
            raise BillerRefusal("BILL_NOT_FOUND", f"no bill {bill_number}", status=404)
        status = bill.status(today)
        if status is BillStatus.PAID:
            raise BillerRefusal("BILL_ALREADY_PAID", f"bill {bill_number} is paid")
        if status is BillStatus.EXPIRED:
            raise BillerRefusal("BILL_EXPIRED", f"bill {bill_number} expired on {bill.expiry_date}")
        return bill
    payable = sorted((b for b in account.bills if b.status(today) in (BillStatus.NEW, BillStatus.PARTIALLY_PAID)),
                     key=lambda b: (b.due_date, b.bill_number))
    if not payable:
        raise BillerRefusal("NO_BILL_DUE", f"nothing due on {account.billing_number}")
    return payable[0]


def status(ledger: JsonLedger, payment_id: str) -> Payment | None:
    return ledger.payments.get(payment_id)


def reverse(ledger: JsonLedger, payment_id: str) -> Payment | None:
    """Undo a payment (idempotent); None when the biller never had it (the
    id is then barred from a late payment)."""
    if ledger.reversal_policy == "never":
        raise BillerRefusal("REVERSAL_NOT_PERMITTED", "this biller does not reverse payments")
    payment = ledger.payments.get(payment_id)
    if payment is None:
        ledger.tombstones.add(payment_id)
        return None
    if not payment.reversed:
        payment.reversed = True
        account = ledger.accounts[(payment.service, payment.billing_number)]
        bill = next(b for b in account.bills if b.bill_number == payment.bill_number)
        bill.outstanding += payment.amount
    return payment


def listing(ledger: JsonLedger, after: int, limit: int) -> tuple[list[Payment], int | None]:
    """A page of the ledger in recording order, and the next cursor."""
    ordered = sorted((p for p in ledger.payments.values() if p.order > after), key=lambda p: p.order)
    page = ordered[:limit]
    return page, (page[-1].order if len(ordered) > limit else None)


# --- seeding -------------------------------------------------------------------------

def seed_ledger(service: str, *, bill_prefix: str = "JB", currency: str = "400", accounts: int = 0,
                reversal_policy: str = "allowed", receipt_prefix: str = "JR") -> JsonLedger:
    """The sample accounts (numbers 1000000001...) of one service, plus
    ``accounts`` load-test accounts (2000000000 + i) with one large bill."""
    samples = (
        ("1000000001", "Nadia Farouk", [(12_500, 12_500, "20260101", "20261231", None, True, None)]),
        ("1000000002", "Yousef Amin", [(8_000, 8_000, "20260301", "20260331", None, True, 1_000),
                                       (9_500, 9_500, "20260401", "20260430", None, False, None)]),
        ("1000000003", "Huda Salem", [(15_000, 0, "20260101", "20260131", None, True, None)]),
        ("1000000004", "Karim Odeh", [(4_000, 4_000, "20250101", "20250131", "20250301", True, None)]),
        ("1000000005", "سلمى الخطيب", [(3_250, 3_250, "20260601", "20260630", None, True, None)]),
    )
    table: dict[tuple[str, str], Account] = {}
    for number, name, bills in samples:
        table[(service, number)] = Account(number, name, service, [
            SimBill(f"{bill_prefix}-{number}-{i + 1}", amount, outstanding, currency, issue, due, expiry,
                    partial, minimum)
            for i, (amount, outstanding, issue, due, expiry, partial, minimum) in enumerate(bills)])
    for i in range(accounts):
        number = f"{2_000_000_000 + i:010d}"
        table[(service, number)] = Account(number, f"Load Account {number}", service, [
            SimBill(f"{bill_prefix}-L{number}", 1_000_000_000, 1_000_000_000, currency, "20260101", "20991231")])
    return JsonLedger(table, reversal_policy=reversal_policy, receipt_prefix=receipt_prefix)
