"""The processor's inquiry and payment path: from a journaled request to its 0210.

An inquiry lists the bills and answers them (the oldest that fit F48); a
payment checks the inquiry reference it quotes, judges its amount against
the open bills where the service's bill rules need them
(gateway/bill_rules.py), posts to the biller under its timeout, and turns
the biller's answer into the payment's next state and the switch's answer
(:meth:`PaymentPath._confirm`: 00 only for an answer that fits the wire and
names the amount posted).

A mixin of :class:`~.processor.TransactionProcessor`, which owns the
journal, the clock, the response codes and ``_settle`` / ``_decline_here``
(every state change goes through the state machine there).
"""
from __future__ import annotations

import datetime as _dt

from twisted.internet import defer

from billgw.billing_adapters.interface import (
    BillAmount,
    BillerDeclined,
    BillerOutcomeUnknown,
    BillerUnavailable,
    BillQuery,
    PaymentAccepted,
    PaymentOrder,
)
from billgw.iso8583.bill_data import (
    BILL_NUMBER_MAX,
    RECEIPT_NUMBER_MAX,
    BillLine,
    BillPaid,
    BillResponseData,
    fit_bills,
    fit_paid,
)
from billgw.iso8583.codes import Outcome
from billgw.iso8583.messages import Response

from . import bill_rules, business_day, settle
from .config import REFERENCE_IGNORED, REFERENCE_REQUIRED
from .machine import Event
from .processor_checks import DECLINE_OUTCOMES, encodes, unusable
from .states import State


class PaymentPath:
    """0200 inquiries and payments once journaled (mixin of TransactionProcessor)."""

    async def _inquire(self, request, new, route, service, log) -> Response:
        bill = request.bill
        query = BillQuery(bill.biller_code, bill.service_code, bill.billing_number, bill.bill_number)
        outcome, detail = None, None
        try:
            result = await self._call_biller(route.adapter.inquire(query), route)
        except BillerDeclined as exc:
            outcome, detail = DECLINE_OUTCOMES[exc.reason], str(exc)
        except (BillerUnavailable, BillerOutcomeUnknown, defer.TimeoutError) as exc:
            outcome, detail = Outcome.BILLER_UNAVAILABLE, f"{type(exc).__name__}: {exc}"
        if outcome is not None:
            log.info("inquiry declined", outcome=outcome.value, detail=detail)
            return await self._decline_here(request, new, outcome, detail, log)
        bills = sorted(result.bills, key=lambda b: b.due_date)
        problem = next(filter(None, (unusable("bill number", b.bill_number, BILL_NUMBER_MAX, required=True)
                                     or bill_rules.due_date_problem(b.due_date) for b in bills)), None)
        if problem is not None:
            log.warning("inquiry: biller answer unusable", problem=problem)
            return await self._decline_here(request, new, Outcome.SYSTEM_MALFUNCTION,
                                            f"biller answer unusable: {problem}", log)
        if (not bills or result.total_due <= 0) and not service.prepaid:
            return await self._decline_here(request, new, Outcome.NO_BILL_DUE, "nothing due", log)
        # Each bill with its late surcharge today (bill_rules; none for a
        # prepaid account, which has no bill: its inquiry names the customer).
        priced = () if service.prepaid else bill_rules.price_bills(
            bill_rules.open_bills(bills), service.surcharge, self._today())
        # F48 holds 999 bytes: the oldest bills that fit, the rest counted in MB.
        data = fit_bills(BillResponseData(
            customer_name=result.customer_name,
            due_amount=None if service.prepaid else result.total_due,
            due_date=priced[0].bill.due_date.strftime("%Y%m%d") if priced else None,
            fee=service.customer_fee,
            surcharge=sum(p.surcharge for p in priced) or None,
            bills=tuple(BillLine(p.bill.bill_number, p.bill.amount_due, p.bill.due_date.strftime("%Y%m%d"),
                                 p.surcharge) for p in priced),
            inquiry_reference=new.id,
        ))
        response = request.respond_bill(self._code(Outcome.APPROVED), bill=data)
        if not encodes(response):
            return await self._decline_here(request, new, Outcome.SYSTEM_MALFUNCTION,
                                            "the answer cannot be encoded", log)
        await self._journal.run(settle.apply_event, new.id, Event.INQUIRY_ANSWERED, self._clock.seconds(),
                                self.context, respond=lambda _state: (response.mti, response.fields),
                                detail=f"{len(bills)} bill(s), due {result.total_due}")
        log.info("inquiry answered", bills=len(bills), due=result.total_due)
        return response

    async def _pay(self, request, new, route, service, log) -> Response:
        # Journaled POSTING by record_request (a reversal that came first made
        # it a RECEIVED decline instead); a reversal arriving from now on is
        # noted on the row and wins when the biller answers (machine.py).
        now = self._clock.seconds()
        bill = request.bill
        if service.inquiry_reference != REFERENCE_IGNORED:
            declined = await self._check_reference(request, new, service, log)
            if declined is not None:
                return declined
        plan = None
        if service.needs_bills or len(bill.named_bills) > 1:
            plan = await self._plan(request, new, route, service, log)
            if isinstance(plan, Response):
                return plan  # a bill rule broken, or the bills could not be listed
        order = PaymentOrder(
            payment_id=new.id, biller_code=bill.biller_code, service_code=bill.service_code,
            billing_number=bill.billing_number,
            bill_number=plan.shares[0].bill_number if plan and plan.shares else bill.bill_number,
            amount=request.amount, currency=request.currency,
            paid_at=_dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="seconds"),
            bills=tuple(BillAmount(s.bill_number, s.amount, s.surcharge) for s in plan.shares) if plan else (),
            surcharge=plan.surcharge if plan else 0,
        )
        try:
            confirmation = await self._call_biller(route.adapter.pay(order), route)
        except BillerDeclined as exc:
            return await self._settle(request, new, Event.BILLER_DECLINED, DECLINE_OUTCOMES[exc.reason],
                                      str(exc), log)
        except BillerUnavailable as exc:
            return await self._settle(request, new, Event.BILLER_UNAVAILABLE, Outcome.BILLER_UNAVAILABLE,
                                      f"biller unavailable: {exc}", log)
        except (BillerOutcomeUnknown, defer.TimeoutError) as exc:
            return await self._settle(request, new, Event.BILLER_NO_ANSWER, Outcome.BILLER_UNAVAILABLE,
                                      f"outcome unknown: {type(exc).__name__}: {exc}", log)
        except Exception as exc:
            log.error("biller adapter failed", exc_info=True)
            return await self._settle(request, new, Event.BILLER_NO_ANSWER, Outcome.SYSTEM_MALFUNCTION,
                                      f"adapter error: {type(exc).__name__}", log)
        return await self._confirm(request, new, route, service, confirmation, log, order)

    async def _check_reference(self, request, new, service, log) -> Response | None:
        """The inquiry reference the payment quotes, where the service checks
        it: an answered inquiry of this account, fresh enough
        (bill_rules.reference_problem); the decline otherwise, as for a
        broken bill rule (nothing posted, an advice for it never posted)."""
        bill = request.bill
        reference = bill.inquiry_reference
        if reference is None and service.inquiry_reference != REFERENCE_REQUIRED:
            return None
        view = await self._journal.get(reference) if reference else None
        record = None if view is None else bill_rules.InquiryRecord(
            kind=view.kind, answered=view.state is State.ANSWERED, biller_code=view.biller_code,
            service_code=view.service_code, billing_number=view.billing_number,
            at=view.created_at.replace(tzinfo=_dt.timezone.utc).timestamp())
        problem = bill_rules.reference_problem(
            record, biller_code=bill.biller_code, service_code=bill.service_code,
            billing_number=bill.billing_number, now=self._clock.seconds(), ttl=service.inquiry_reference_ttl)
        if problem is None:
            return None
        log.info("declined on the inquiry reference", outcome=problem.value)
        return await self._settle(request, new, Event.BILLER_DECLINED, problem,
                                  f"inquiry reference: {problem.value}", log, values={"local_problem": problem.value})

    async def _plan(self, request, new, route, service, log):
        """The bill rules, before the posting: the open bills are listed by
        the biller and the payment judged against them (gateway/bill_rules.py).
        Returns the :class:`~.bill_rules.PaymentPlan`, or the decline.

        The payment is journaled POSTING already; nothing was sent to the
        biller but an inquiry, so a decline here is the biller-declined
        event (DECLINED, or an EXCEPTION when the switch advised it
        meanwhile) with the broken rule journaled as the request's local
        problem: a later advice for it is never posted."""
        bill = request.bill
        # Every open bill, whichever the payment names: the rules judge the
        # bills named among all of them.
        query = BillQuery(bill.biller_code, bill.service_code, bill.billing_number)
        try:
            result = await self._call_biller(route.adapter.inquire(query), route)
        except BillerDeclined as exc:
            return await self._settle(request, new, Event.BILLER_DECLINED, DECLINE_OUTCOMES[exc.reason],
                                      f"bills not listed: {exc}", log)
        except (BillerUnavailable, BillerOutcomeUnknown, defer.TimeoutError) as exc:
            # Only an inquiry went out: the payment certainly was not posted.
            return await self._settle(request, new, Event.BILLER_UNAVAILABLE, Outcome.BILLER_UNAVAILABLE,
                                      f"bills not listed: {type(exc).__name__}: {exc}", log)
        unusable_bill = next(filter(None, (unusable("bill number", b.bill_number, BILL_NUMBER_MAX, required=True)
                                           or bill_rules.due_date_problem(b.due_date) for b in result.bills)), None)
        if unusable_bill is not None:
            return await self._settle(request, new, Event.BILLER_UNAVAILABLE, Outcome.SYSTEM_MALFUNCTION,
                                      f"biller answer unusable: {unusable_bill}", log)
        problem, plan = bill_rules.plan_payment(
            bill_rules.open_bills(result.bills), amount=request.amount, rule=service.amount_rule,
            surcharge_rule=service.surcharge, named=bill.named_bills,
            today=self._today())
        if problem is not None:
            log.info("declined on the bill rules", outcome=problem.value)
            return await self._settle(request, new, Event.BILLER_DECLINED, problem,
                                      f"bill rules: {problem.value}", log, values={"local_problem": problem.value})
        return plan

    async def _confirm(self, request, new, route, service, confirmation, log, order: PaymentOrder) -> Response:
        """The biller confirmed: answer 00, once the answer is known to fit
        the wire.  A confirmation whose values cannot travel in our 0210 is
        an answer we cannot use -- outcome unknown (IN_DOUBT, 91), settled
        by a status query and a reversal, never a CONFIRMED payment whose
        switch gets no answer.  So is a confirmation of another amount than
        the one posted (bill_rules.confirmation_problem): never approved.

        A biller that records later answers PaymentAccepted (contract v2):
        the 0210 is the same approval, carrying the biller's intake
        reference as the receipt number, and the payment becomes ACCEPTED --
        its SMS receipt waits for the biller's batch (biller_worker.py)."""
        accepted = isinstance(confirmation, PaymentAccepted)
        receipt = confirmation.intake_reference if accepted else confirmation.receipt_number
        problem = (unusable("receipt number", receipt, RECEIPT_NUMBER_MAX, required=True)
                   or unusable("bill number", confirmation.bill_number, BILL_NUMBER_MAX)
                   or bill_rules.confirmation_problem(order.amount, confirmation.amount,
                                                      [b.amount for b in confirmation.settled])
                   or next(filter(None, (unusable("settled bill number", b.bill_number, BILL_NUMBER_MAX,
                                                  required=True) for b in confirmation.settled)), None))
        if problem is not None and problem.startswith("amount"):
            log.warning("biller confirmed another amount than was posted: not approved", problem=problem)
        if problem is not None:
            return await self._settle(request, new, Event.BILLER_NO_ANSWER, Outcome.BILLER_UNAVAILABLE,
                                      f"biller answer unusable: {problem}", log)
        auth_code = self._new_auth()
        # F15: the business date the payment was journaled on (the schedule,
        # the last cut-over and the biller's cut-off decided it).
        settlement = business_day.f15(new.business_date) if new.business_date else None
        settled = confirmation.settled or order.bills  # the biller's word, else the plan's
        data = fit_paid(BillResponseData(
            bill_number=confirmation.bill_number or order.bill_number,
            receipt_number=receipt,
            payment_reference=new.id,
            fee=service.customer_fee or None,
            surcharge=sum(b.surcharge for b in settled) or None,
            paid=tuple(BillPaid(b.bill_number, b.amount, b.surcharge) for b in settled),
        ))
        approved = request.respond_bill(self._code(Outcome.APPROVED), bill=data, auth_code=auth_code,
                                        settlement_date=settlement)
        if not encodes(approved):
            return await self._settle(request, new, Event.BILLER_NO_ANSWER, Outcome.BILLER_UNAVAILABLE,
                                      "biller answer unusable: the approval cannot be encoded", log)
        values = {"biller_receipt": receipt, "auth_code": auth_code,
                  "settlement_date": settlement, "surcharge": sum(b.surcharge for b in settled)}
        if (confirmation.bill_number or order.bill_number) and not new.bill_number:
            values["bill_number"] = (confirmation.bill_number or order.bill_number)[:30]
        paid = "".join(f"; {b.bill_number} {b.amount}" + (f" (surcharge {b.surcharge})" if b.surcharge else "")
                       for b in settled)
        event = Event.BILLER_ACCEPTED if accepted else Event.BILLER_CONFIRMED
        return await self._settle(request, new, event, Outcome.BILLER_UNAVAILABLE,
                                  f"{'intake' if accepted else 'receipt'} {receipt}{paid}", log, approved=approved,
                                  values=values)
