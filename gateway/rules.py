"""The gateway's own rules for a bill request, checked before any biller is
contacted (pure: plain values and the billers' settings in, a verdict out).

One function serves every path that must apply them: the processor on a
0200 and on a 0220 advice (an advice obeys the same rules as a payment), and
``billgw audit``, which re-checks every payment a biller holds, so that a
posting outside the rules cannot go unnoticed whatever let it through.
"""
from __future__ import annotations

from typing import Mapping

from billgw.iso8583.codes import Outcome

from . import bill_rules
from .config import BillerSettings, ServiceSettings

PAYMENT = "payment"


def check_request(billers: Mapping[str, BillerSettings], *, kind: str, biller_code: str | None,
                  service_code: str | None, currency: str | None, billing_number: str | None,
                  amount: int) -> tuple[Outcome | None, ServiceSettings | None]:
    """``(the rule broken or None, the service when it is known)``.

    ``kind`` is ``"payment"`` or ``"inquiry"``: amount bounds bind payments
    only (an inquiry's amount is zero).  These are the rules that need no
    bill (a prepaid top-up's amounts among them); the rules judged against
    the open bills are :mod:`.bill_rules`, applied by the processor once
    the biller has listed them."""
    biller = billers.get(biller_code or "")
    if biller is None or not biller.active:
        return Outcome.INVALID_TRANSACTION, None
    service = biller.services.get(service_code or "")
    if service is None:
        return Outcome.INVALID_TRANSACTION, None
    if currency != service.currency:
        return Outcome.INVALID_TRANSACTION, service
    if not service.billing_number_ok(billing_number or ""):
        return Outcome.INVALID_BILLING_NUMBER, service
    if kind == PAYMENT and not service.min_amount <= amount <= service.max_amount:
        return Outcome.INVALID_AMOUNT, service
    if kind == PAYMENT and service.prepaid:
        # A top-up has no bill: its rule is static, so it binds advices and
        # the audit's re-check as much as the 0200.
        problem = bill_rules.topup_problem(amount, min_amount=service.min_amount,
                                           max_amount=service.max_amount,
                                           allowed=service.topup_amounts, step=service.topup_step)
        if problem is not None:
            return problem, service
    return None, service
