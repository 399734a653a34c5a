"""The rules of real bills, as pure functions: bills, the service's rules
and ``today`` in; a verdict and what the payment settles out.

No Twisted, no database, no clock: the caller passes ``today`` (the date the
payment is made on), so every rule is tested at its edges -- the last day
before a surcharge, 28/29 February, a month's end -- without waiting.

What lives here (docs/bill-rules.md says it for people):

- the **late-payment surcharge** of one bill (:func:`surcharge`): a yearly
  rate on the overdue days, a fixed percentage, or a fixed amount once the
  due date (plus any grace days) has passed;
- the **amount rule** of a postpaid service checked against what is due
  (:func:`plan_payment`): exact, partial (with a lower bound), over/advance
  (with an upper bound), or both;
- which **bills a payment settles** and with what: the bills it names, or
  else the oldest first; within a bill its surcharge first, then the bill.

Amounts are integers in minor units throughout; the one division (the
surcharge) rounds half up to the minor unit (:func:`_div_half_up`).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Iterable, Sequence

from billgw.iso8583.codes import Outcome

# Amount rules of a postpaid service.
ANY = "any"  # only the service's fixed bounds; the biller judges the rest
EXACT = "exact"  # whole bills only: the amount due of the bills it settles
PARTIAL = "partial"  # less than due allowed, down to partial_min
OVER = "over"  # more than due allowed (an advance), up to over_max beyond it
PARTIAL_OR_OVER = "partial_or_over"
AMOUNT_RULES = (ANY, EXACT, PARTIAL, OVER, PARTIAL_OR_OVER)

# Late-payment surcharge kinds.
YEARLY_RATE = "yearly_rate"  # rate_bp a year on the overdue days, actual/365
PERCENT = "percent"  # rate_bp of the bill once overdue
FIXED = "fixed"  # amount once overdue
SURCHARGE_KINDS = (YEARLY_RATE, PERCENT, FIXED)

DAYS_A_YEAR = 365  # actual/365 fixed: 29 February is a day like any other
BASIS_POINTS = 10_000


@dataclass(frozen=True)
class SurchargeRule:
    """A biller's late-payment surcharge for one service.

    ``rate_bp`` is in basis points (1800 = 18 %): a year's rate for
    ``yearly_rate``, the bill's share for ``percent``; ``amount`` (minor
    units) for ``fixed``.  ``grace_days`` after the due date carry no
    surcharge; once past them, a yearly rate counts every day from the due
    date."""

    kind: str
    rate_bp: int = 0
    amount: int = 0
    grace_days: int = 0


@dataclass(frozen=True)
class AmountRule:
    """How a payment's amount must relate to what is due (postpaid)."""

    kind: str = ANY
    partial_min: int = 0  # a payment below the amount due: at least this
    over_max: int = 0  # a payment above the amount due: at most this much above

    @property
    def needs_bills(self) -> bool:
        return self.kind != ANY

    @property
    def allows_partial(self) -> bool:
        return self.kind in (PARTIAL, PARTIAL_OR_OVER)

    @property
    def allows_over(self) -> bool:
        return self.kind in (OVER, PARTIAL_OR_OVER)


@dataclass(frozen=True)
class OpenBill:
    """An open bill as the rules see it (from the biller's inquiry answer)."""

    bill_number: str
    amount_due: int
    due_date: _dt.date


@dataclass(frozen=True)
class PricedBill:
    """An open bill with the surcharge it carries ``today``."""

    bill: OpenBill
    surcharge: int

    @property
    def due(self) -> int:
        return self.bill.amount_due + self.surcharge


@dataclass(frozen=True)
class BillShare:
    """What one payment puts on one bill: its surcharge first, then the bill."""

    bill_number: str
    principal: int
    surcharge: int

    @property
    def amount(self) -> int:
        return self.principal + self.surcharge


@dataclass(frozen=True)
class PaymentPlan:
    """What a payment settles: shares of bills, oldest first, and the part
    beyond every bill it names or finds (an advance on the account)."""

    shares: tuple[BillShare, ...]
    advance: int = 0

    @property
    def amount(self) -> int:
        return sum(s.amount for s in self.shares) + self.advance

    @property
    def surcharge(self) -> int:
        return sum(s.surcharge for s in self.shares)

    @property
    def bill_numbers(self) -> tuple[str, ...]:
        return tuple(s.bill_number for s in self.shares)


def parse_due_date(text: str) -> _dt.date:
    """A biller's YYYYMMDD; ValueError when it names no day."""
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"due date {text!r} is not YYYYMMDD")
    return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))


def overdue_days(due: _dt.date, today: _dt.date) -> int:
    """Whole days since the due date: 0 on the due date itself and before."""
    return max(0, (today - due).days)


def _div_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator to the nearest integer, halves up (both >= 0)."""
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (1 if 2 * remainder >= denominator else 0)


def surcharge(rule: SurchargeRule | None, amount_due: int, due: _dt.date, today: _dt.date) -> int:
    """The late-payment surcharge on a bill of ``amount_due`` paid ``today``."""
    if rule is None or amount_due <= 0:
        return 0
    days = overdue_days(due, today)
    if days <= rule.grace_days:
        return 0
    if rule.kind == YEARLY_RATE:
        return _div_half_up(amount_due * rule.rate_bp * days, BASIS_POINTS * DAYS_A_YEAR)
    if rule.kind == PERCENT:
        return _div_half_up(amount_due * rule.rate_bp, BASIS_POINTS)
    if rule.kind == FIXED:
        return rule.amount
    raise ValueError(f"unknown surcharge kind {rule.kind!r}")


def price_bills(bills: Iterable[OpenBill], rule: SurchargeRule | None, today: _dt.date) -> tuple[PricedBill, ...]:
    """Open bills (amount due > 0), oldest first, with today's surcharge."""
    ordered = sorted((b for b in bills if b.amount_due > 0), key=lambda b: (b.due_date, b.bill_number))
    return tuple(PricedBill(b, surcharge(rule, b.amount_due, b.due_date, today)) for b in ordered)


def _allocate(priced: Sequence[PricedBill], amount: int) -> PaymentPlan:
    """Oldest first; within a bill the surcharge first; the rest an advance."""
    shares = []
    left = amount
    for p in priced:
        if left <= 0:
            break
        extra = min(left, p.surcharge)
        principal = min(left - extra, p.bill.amount_due)
        shares.append(BillShare(p.bill.bill_number, principal, extra))
        left -= extra + principal
    return PaymentPlan(tuple(shares), advance=left)


def plan_payment(bills: Iterable[OpenBill], *, amount: int, rule: AmountRule,
                 surcharge_rule: SurchargeRule | None = None, named: Sequence[str] = (),
                 today: _dt.date) -> tuple[Outcome | None, PaymentPlan | None]:
    """``(the rule broken or None, what the payment settles)``.

    The selection is the bills the payment names (F48 ``BL`` tags), else
    every open bill, oldest first.  What is due is the selection's amounts
    plus their surcharges.  Unnamed, an exact payment may settle the oldest
    bills whole (any number of them); named, it settles exactly those.
    """
    priced = price_bills(bills, surcharge_rule, today)
    if len(set(named)) != len(named):
        return Outcome.INVALID_TRANSACTION, None
    if named:
        by_number = {p.bill.bill_number: p for p in priced}
        if any(n not in by_number for n in named):
            return Outcome.RECORD_NOT_FOUND, None
        wanted = set(named)
        priced = tuple(p for p in priced if p.bill.bill_number in wanted)
    due = sum(p.due for p in priced)
    if due == 0 and not (rule.allows_over or rule.kind == ANY):
        return Outcome.NO_BILL_DUE, None
    if amount > due:
        if rule.kind != ANY and not (rule.allows_over and amount - due <= rule.over_max):
            return Outcome.AMOUNT_ABOVE_DUE, None
    elif amount < due and rule.kind != ANY:
        whole_bills = not named and amount in _prefix_dues(priced)
        if not whole_bills:
            if not rule.allows_partial:
                return Outcome.AMOUNT_BELOW_DUE, None
            if amount < rule.partial_min:
                return Outcome.AMOUNT_BELOW_DUE, None
    return None, _allocate(priced, amount)


def _prefix_dues(priced: Sequence[PricedBill]) -> set[int]:
    """What paying the oldest 1, 2, ... bills whole costs."""
    total, out = 0, set()
    for p in priced:
        total += p.due
        out.add(total)
    return out


def topup_problem(amount: int, *, min_amount: int, max_amount: int, allowed: Sequence[int] = (),
                  step: int = 0) -> Outcome | None:
    """A prepaid top-up (no bill): one of the biller's ``allowed`` amounts,
    or in ``[min_amount, max_amount]`` in steps of ``step`` from the minimum."""
    if allowed:
        return None if amount in allowed else Outcome.AMOUNT_NOT_OFFERED
    if not min_amount <= amount <= max_amount:
        return Outcome.INVALID_AMOUNT
    if step and (amount - min_amount) % step:
        return Outcome.AMOUNT_NOT_OFFERED
    return None


def bill_day(now: float, tz: _dt.tzinfo = _dt.timezone.utc) -> _dt.date:
    """The day a bill is paid on: the calendar date of ``now`` in the
    gateway's timezone (``[business_day] timezone``) -- the customer's day,
    whatever business date a cut-off books the payment on."""
    return _dt.datetime.fromtimestamp(now, tz).date()


def due_date_problem(text: str) -> str | None:
    """Why a biller's due date cannot be used (pure); None when it can."""
    try:
        parse_due_date(text)
    except ValueError:
        return f"due date {text[:12]!r} is not a YYYYMMDD day"
    return None


def open_bills(bills: Iterable) -> tuple[OpenBill, ...]:
    """The rules' view of a biller's bills (anything with ``bill_number``,
    ``amount_due`` and a YYYYMMDD ``due_date``, checked beforehand with
    :func:`due_date_problem`)."""
    return tuple(OpenBill(b.bill_number, b.amount_due, parse_due_date(b.due_date)) for b in bills)


def confirmation_problem(posted: int, confirmed: int, settled: Sequence[int] = ()) -> str | None:
    """Why a biller's confirmation must not be approved: it recorded another
    amount than was posted (a biller that took 1 fils of a 1.000 JOD payment
    must not make the switch debit 1.000), or says it settled more than it
    was paid."""
    if confirmed != posted:
        return f"amount confirmed {confirmed} is not the {posted} posted"
    if settled and (sum(settled) > posted or any(a < 0 for a in settled)):
        return f"amount settled on the bills {sum(settled)} is more than the {posted} posted"
    return None


@dataclass(frozen=True)
class InquiryRecord:
    """What the journal says of the inquiry a payment's IR names."""

    kind: str
    answered: bool  # the inquiry was answered with its bills (00)
    biller_code: str | None
    service_code: str | None
    billing_number: str | None
    at: float  # when the inquiry was journaled (clock seconds)


def reference_problem(record: InquiryRecord | None, *, biller_code: str, service_code: str,
                      billing_number: str, now: float, ttl: float) -> Outcome | None:
    """A payment's inquiry reference must name an answered inquiry of the same
    account (biller, service, billing number) made at most ``ttl`` seconds
    before ``now``: a foreign or unknown one, or a stale one, is declined."""
    if (record is None or record.kind != "inquiry" or not record.answered
            or (record.biller_code, record.service_code, record.billing_number)
            != (biller_code, service_code, billing_number)):
        return Outcome.INQUIRY_REFERENCE_UNKNOWN
    if now - record.at > ttl:
        return Outcome.INQUIRY_REFERENCE_EXPIRED
    return None
