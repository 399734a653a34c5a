"""The processor's pure checks: of a request before any biller is asked, and
of an answer before it is journaled.

- :func:`local_check` and :func:`cutoff_problem`: the gateway's own rules
  for a decoded request (:mod:`.rules`, the biller's cut-off);
- :func:`fingerprint`: what must be equal for a message to repeat another;
- :data:`DECLINE_OUTCOMES`: what a biller's decline is answered with;
- :func:`unusable` and :func:`encodes`: whether a biller's values, and the
  answer built of them, can travel on the wire.  An answer that cannot is
  never journaled as given (the processor settles the payment otherwise).

No Twisted, no I/O: rows and settings in, verdicts out.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Mapping

from billgw.billing_adapters.interface import DeclineReason
from billgw.iso8583.codes import Outcome
from billgw.iso8583.messages import BillRequest, Response

from . import business_day, rules
from .config import ServiceSettings

if TYPE_CHECKING:
    from .processor import BillerRoute


DECLINE_OUTCOMES = {
    DeclineReason.UNKNOWN_BILLING_NUMBER: Outcome.INVALID_BILLING_NUMBER,
    DeclineReason.BILL_NOT_FOUND: Outcome.RECORD_NOT_FOUND,
    DeclineReason.NO_BILL_DUE: Outcome.NO_BILL_DUE,
    DeclineReason.BILL_ALREADY_PAID: Outcome.BILL_ALREADY_PAID,
    DeclineReason.INVALID_AMOUNT: Outcome.INVALID_AMOUNT,
    DeclineReason.NOT_PERMITTED: Outcome.INVALID_TRANSACTION,
    DeclineReason.CUTOFF_PASSED: Outcome.CUTOFF_PASSED,
    DeclineReason.OTHER: Outcome.INVALID_TRANSACTION,
}


def fingerprint(request: BillRequest) -> str:
    """What must be equal for a message to be a repeat rather than a clash:
    same keys but another amount or bill is not a repeat (answered 94).  The
    MTI is left out: an advice (0220) repeats its original 0200."""
    f = request.fields
    basis = "|".join((f.get("3", ""), f.get("4", ""), f.get("49", ""), f.get("48", "")))
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()


def local_check(request: BillRequest, billers: Mapping[str, BillerRoute]) -> tuple[
        Outcome | None, BillerRoute | None, ServiceSettings | None]:
    """The gateway's own rules (:mod:`.rules`) for a decoded request (pure)."""
    bill = request.bill
    route = billers.get(bill.biller_code)
    problem, service = rules.check_request(
        {code: r.settings for code, r in billers.items()}, kind=request.kind.value,
        biller_code=bill.biller_code, service_code=bill.service_code, currency=request.currency,
        billing_number=bill.billing_number, amount=request.amount)
    return problem, route, service


def unusable(name: str, value: str | None, limit: int, *, required: bool = False) -> str | None:
    """Why a value from a biller cannot travel in our answer (pure): too
    long for its F48 tag, or not printable; None when it can."""
    if value is None or value == "":
        return f"no {name}" if required else None
    if len(value) > limit:
        return f"{name} of {len(value)} characters (at most {limit})"
    if not value.isprintable():
        return f"{name} with control characters"
    return None


def encodes(response: Response) -> bool:
    """The answer can be put on the wire (checked before it is journaled)."""
    try:
        response.encode()
    except Exception:  # pyiso8583 and the F48 codec raise their own kinds
        return False
    return True


def cutoff_problem(calendar: business_day.BusinessCalendar, route: BillerRoute | None, now: float) -> Outcome | None:
    """A biller whose cut-off has passed and that declines rather than
    booking on the next business date (pure)."""
    cutoff = route.settings.cutoff if route is not None else None
    if cutoff is not None and cutoff.after == business_day.DECLINE and business_day.cutoff_passed(
            calendar, cutoff, now):
        return Outcome.CUTOFF_PASSED
    return None
