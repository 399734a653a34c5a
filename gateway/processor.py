"""The transaction processor: a 0200 in, a Deferred of its 0210 out.

It owns the money rules of a request's life:

1. check locally what can be checked (biller, service, billing-number
   format, amount bounds, currency) before any biller is contacted;
2. journal the request under the acquirer's keys -- a repeat finds the
   original and gets the original answer, never a second posting (also while
   the first is still in flight);
3. ask the biller, with the biller's timeout on the injected clock;
4. on confirmation, mark the payment CONFIRMED and queue the SMS receipt in
   one database transaction, then answer 00; a biller that did not answer in
   time leaves the payment IN_DOUBT (never re-posted blindly).

Known failures become response codes; anything unexpected is logged with its
traceback and answered 96 ("system malfunction").

The biller call is bounded by the biller's timeout.  Journal writes are not
cut short on purpose: an answer given before the journal holds the outcome
could contradict it (a 96 for a payment then recorded CONFIRMED); a late
answer is safe, since the switch then reverses or advises and both are
settled from the journal.

This module holds the processor's entry points and the request's life up
to the biller: dispatch, the local checks, journaling, repeats, and the
settling of every outcome through the state machine.  Its other jobs sit
beside it: the inquiry and payment path (:mod:`.payment_path`), advices
and reversals (:mod:`.advices`), both mixins of
:class:`TransactionProcessor`, and the pure checks of requests and
answers (:mod:`.processor_checks`).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import secrets
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping

import structlog
from twisted.internet import defer

from billgw.billing_adapters.interface import BillerAdapter
from billgw.iso8583.codes import Outcome, ResponseCodes
from billgw.iso8583.masking import mask_text
from billgw.iso8583.messages import BillRequest, RequestKind, Response, ReversalRequest
from billgw.sms.outbox import OutboxKind

from . import journal as journal_ops
from . import bill_rules, business_day, business_journal, settle
from .advices import Advices
from .config import FEE_CUSTOMER, BillerSettings, ServiceSettings
from .db import JournalBusy
from .journal import NewTransaction, TransactionView
from .machine import Event
from . import msisdn_policy
from .payment_path import PaymentPath
from .processor_checks import (  # noqa: F401 -- billgw.gateway.processor exported them before
    DECLINE_OUTCOMES,
    cutoff_problem,
    encodes,
    fingerprint,
    local_check,
    unusable,
)
from .receipts import ReceiptComposer
from .states import APPROVED, State


# How long a repeat waits for its in-flight original beyond the biller's
# own timeout before it is answered "biller unavailable" by itself.
REPEAT_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class BillerRoute:
    settings: BillerSettings
    adapter: BillerAdapter


def new_transaction_id() -> str:
    return uuid.uuid4().hex


def new_auth_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


class TransactionProcessor(PaymentPath, Advices):
    def __init__(
        self,
        *,
        journal: journal_ops.Journal,
        billers: Mapping[str, BillerRoute],
        codes: ResponseCodes,
        clock,
        receipts: ReceiptComposer,
        on_sms_queued: Callable[[], None] = lambda: None,
        log=None,
        new_id: Callable[[], str] = new_transaction_id,
        new_auth: Callable[[], str] = new_auth_code,
        status_delay: float = 30.0,
        expire_after: float = 86400.0,
        calendar: business_day.BusinessCalendar = business_day.BusinessCalendar(),
        sms_country: str = "JO",
        invalid_msisdn: str = msisdn_policy.DECLINE,
        accepted_poll_delay: float = 60.0,
        accepted_expire_after: float = 3 * 86400.0,
    ):
        self._calendar = calendar
        self._sms_country = sms_country
        self._invalid_msisdn = invalid_msisdn
        self._journal = journal
        self._billers = billers
        self._codes = codes
        self._clock = clock
        self._receipts = receipts
        self._on_sms_queued = on_sms_queued
        self._log = log or structlog.get_logger("billgw.processor")
        self._new_id = new_id
        self._new_auth = new_auth
        self._in_flight: dict[str, list[defer.Deferred]] = {}
        self.on_biller_work: Callable[[], None] = lambda: None
        self.context = settle.SettleContext(can_reverse=self.can_reverse, sms_text=self.sms_text,
                                            status_delay=status_delay, expire_after=expire_after,
                                            can_query_status=self.can_query_status,
                                            accepted_poll_delay=accepted_poll_delay,
                                            accepted_expire_after=accepted_expire_after)

    def can_reverse(self, biller_code: str | None) -> bool:
        """The biller's reversal policy (conf) and its adapter's ability."""
        route = self._billers.get(biller_code or "")
        if route is None:
            return False
        return route.settings.reversal_policy != "never" and route.adapter.capabilities.can_reverse

    def can_query_status(self, biller_code: str | None) -> bool:
        """The biller's adapter answers status queries (capabilities)."""
        route = self._billers.get(biller_code or "")
        return route is not None and route.adapter.capabilities.can_query_status

    def sms_text(self, view: TransactionView, kind: OutboxKind) -> str | None:
        """The receipt (or reversal notice) text of a journaled payment."""
        route = self._billers.get(view.biller_code or "")
        service = route.settings.services.get(view.service_code or "") if route else None
        if route is None or service is None:
            return None
        render = self._receipts.receipt_text if kind is OutboxKind.RECEIPT else self._receipts.reversal_text
        return render(language=view.language or "en", biller=route.settings, service=service,
                      billing_number=view.billing_number or "", bill_number=view.bill_number,
                      amount=view.amount, fee=view.fee if service.fee_bearer == FEE_CUSTOMER else 0,
                      paid_at=view.created_at.replace(tzinfo=_dt.timezone.utc).timestamp(),
                      receipt_number=view.biller_receipt or "-", reference=view.id,
                      masked_pan=view.masked_pan, surcharge=view.surcharge)

    def is_in_flight(self, txn_id: str) -> bool:
        return txn_id in self._in_flight

    def route(self, biller_code: str | None) -> BillerRoute | None:
        return self._billers.get(biller_code or "")

    def handle(self, request: BillRequest | ReversalRequest, log=None) -> defer.Deferred:
        """Process a 0200, 0220/0221 or 0420/0421; the Deferred fires with the
        Response (never fails)."""
        log = (log or self._log).bind(stan=request.stan, rrn=request.fields.get("37"), mti=request.mti)
        if isinstance(request, ReversalRequest):
            work = self._reverse(request, log)
        elif request.is_advice:
            work = self._advise(request, log.bind(kind="advice"))
        else:
            work = self._handle(request, log.bind(kind=request.kind.value))
        d = defer.ensureDeferred(work)
        d.addErrback(self._journal_busy, request, log)
        d.addErrback(self._unexpected, request, log)
        return d

    def _journal_busy(self, failure, request, log) -> Response:
        """New work the journal refused (its queue is full): nothing was
        written, so "busy, send again" is the whole truth (a 0420 or 0220 is
        repeated by the switch; a 0200 is a new attempt)."""
        failure.trap(JournalBusy)
        log.warning("busy: journal queue full, request refused", detail=str(failure.value))
        return request.respond(self._codes.code(Outcome.GATEWAY_BUSY))

    def _unexpected(self, failure, request, log) -> Response:
        log.error("request failed unexpectedly", exc_info=(failure.type, failure.value, failure.tb))
        return request.respond(self._codes.code(Outcome.SYSTEM_MALFUNCTION))

    def _code(self, outcome: Outcome) -> str:
        return self._codes.code(outcome)

    def _today(self) -> _dt.date:
        """The customer's day (surcharges count to it): the local date in
        the gateway's timezone, whatever business date a cut-off books."""
        return bill_rules.bill_day(self._clock.seconds(), business_day.zone(self._calendar.timezone))

    def _business_floor(self, route: BillerRoute | None, now: float) -> str:
        """A request's business date by the schedule and its biller's
        cut-off; journaling raises it to the last cut-over's."""
        cutoff = route.settings.cutoff if route is not None else None
        return business_day.as_text(business_day.payment_date(self._calendar, now, cutoff=cutoff))

    def cut_over(self, request, *, by: str, log=None) -> defer.Deferred:
        """0800 with F70 = 201 from peer ``by``: open the next business date
        (or the one its F15 names) in the journal, for every process; the
        0810 carries the date now open in F15.  A date that would go back or
        skip a day is refused (invalid transaction)."""
        log = log or self._log
        now = self._clock.seconds()
        requested = None
        if request.fields.get("15"):
            requested = business_day.date_of_mmdd(request.fields["15"],
                                                  business_day.scheduled_date(self._calendar, now))
            if requested is None:
                return defer.succeed(request.respond(self._code(Outcome.INVALID_TRANSACTION)))
        d = self._journal.run(business_journal.record_cut_over, self._calendar, now, requested=requested, by=by)

        def answered(result):
            if result.business_date is None:
                log.warning("cut-over refused: it would skip or go back a business day",
                            requested=request.fields.get("15"))
                return request.respond(self._code(Outcome.INVALID_TRANSACTION))
            log.info("cut-over", business_date=business_day.as_text(result.business_date), moved=result.moved,
                     by=by)
            return request.respond(self._code(Outcome.APPROVED), {"15": result.business_date.strftime("%m%d")})

        d.addCallback(answered)
        d.addErrback(self._unexpected, request, log)
        return d
    def _judge_msisdn(self, request: BillRequest) -> msisdn_policy.MsisdnVerdict:
        """The receipt's number, judged before anything is posted (pure; docs/sms.md)."""
        return msisdn_policy.judge_msisdn(request.bill.msisdn, country=self._sms_country,
                                          policy=self._invalid_msisdn,
                                          payment=request.kind is RequestKind.PAYMENT, advice=request.is_advice)

    async def _handle(self, request: BillRequest, log) -> Response:
        now = self._clock.seconds()
        problem, route, service = local_check(request, self._billers)
        if problem is None and request.kind is RequestKind.PAYMENT:
            # The biller's cut-off, where it declines rather than booking on
            # the next business date: a local rule of this moment, journaled
            # as such, so an advice for the payment is never posted.
            problem = cutoff_problem(self._calendar, route, now)
        verdict = self._judge_msisdn(request)
        if problem is None and verdict.problem is not None:
            problem = verdict.problem
        new = self._new_transaction(request, service, problem, self._business_floor(route, now), verdict)
        reversed_first = request.respond_bill(self._code(Outcome.TRANSACTION_REVERSED))
        # In flight from before it is journaled, not after: on PostgreSQL the
        # journal's threads deliver results in any order, so a repeat of this
        # request (blocked behind it on the acquirer keys' lock) may learn of
        # the journaled original before this coroutine does.  It must find the
        # original in flight and wait for its answer -- never answer 91 for a
        # payment that goes on to be approved
        # (tests/gateway/test_repeat_delivery_race.py).
        self._in_flight[new.id] = []
        response = None
        try:
            recorded, was_reversed = await self._journal.admit(
                settle.record_request, new, now, self.context, (reversed_first.mti, reversed_first.fields),
                posting=problem is None and request.kind is RequestKind.PAYMENT)
            if not recorded.is_new:
                # Not journaled under ``new.id``: nobody can be waiting on it.
                self._in_flight.pop(new.id, None)
                return await self._answer_repeat(request, recorded.view, route, log)
            new = dataclasses.replace(new, business_date=recorded.view.business_date)  # as journaled
            log = log.bind(payment_id=new.id)
            if verdict.reason is not None:  # never the number itself
                log.warning("receipt number invalid", reason=verdict.reason,
                            action="declined" if verdict.problem else "no SMS receipt")
            if was_reversed:
                log.warning("original arrived after its reversal: declined, not posted")
                response = reversed_first
            elif problem is not None:
                log.info("declined locally", outcome=problem.value)
                response = await self._decline_here(request, new, problem, f"local check: {problem.value}", log)
            elif request.kind is RequestKind.INQUIRY:
                response = await self._inquire(request, new, route, service, log)
            else:
                response = await self._pay(request, new, route, service, log)
            return response
        finally:
            for waiter in self._in_flight.pop(new.id, []):
                waiter.callback(response)

    async def _decline_here(self, request: BillRequest, new: NewTransaction, outcome: Outcome, detail: str,
                            log) -> Response:
        """Decline without the biller, through the state machine: an advice
        that came meanwhile makes the payment an EXCEPTION, never lost."""
        detail = mask_text(detail)  # a biller's error text may echo card data
        response = request.respond_bill(self._code(outcome))
        applied = await self._journal.run(
            settle.apply_event, new.id, Event.NOT_POSTED, self._clock.seconds(), self.context,
            respond=lambda _state: (response.mti, response.fields), detail=detail)
        if applied.view.state is not State.DECLINED:
            log.warning("the switch advised a payment the gateway declined: a person must refund it",
                        state=applied.view.state.value, outcome=outcome.value)
        self._after(applied)
        return response

    def _new_transaction(self, request: BillRequest, service: ServiceSettings | None,
                         problem: Outcome | None, business_date: str | None = None,
                         verdict: msisdn_policy.MsisdnVerdict | None = None) -> NewTransaction:
        verdict = verdict or self._judge_msisdn(request)
        f = request.fields
        bill = request.bill
        keys = request.keys  # acquirer id normalised as reversals' F90 is
        return NewTransaction(
            id=self._new_id(), kind=request.kind.value, mti=request.mti,
            processing_code=request.processing_code, acquirer_id=keys.acquirer_id, forwarder_id=f.get("33"),
            terminal_id=keys.terminal_id, stan=keys.stan, transmission_dt=keys.transmission_datetime,
            rrn=f["37"],
            fingerprint=fingerprint(request), masked_pan=request.masked_pan, pan_hash=request.pan_hash,
            amount=request.amount, currency=request.currency,
            fee=service.fee if service else 0,
            biller_code=bill.biller_code[:10], service_code=bill.service_code[:10],
            # Card data never journaled (docs/security.md): a billing number
            # that broke the rules is never posted, so it is kept masked.
            billing_number=(bill.billing_number if problem is None else mask_text(bill.billing_number))[:30],
            bill_number=mask_text(bill.bill_number)[:30] if bill.bill_number else None,
            msisdn=verdict.msisdn, language=bill.language[:5],
            local_problem=problem.value if problem is not None else None,
            business_date=business_date, fee_bearer=service.fee_bearer if service else None,
        )

    async def _answer_repeat(self, request: BillRequest, view: TransactionView,
                             route: BillerRoute | None, log) -> Response:
        log = log.bind(payment_id=view.id, repeat=True)
        if view.fingerprint != fingerprint(request):
            log.warning("same acquirer keys, different content: not a repeat")
            return request.respond_bill(self._code(Outcome.DUPLICATE_TRANSMISSION))
        if view.reversal_requested:
            # Never replay an approval the switch has since reversed: a
            # switch that books the replayed 00 would charge the customer
            # for a refunded payment.  Nothing of the original is echoed.
            log.info("repeat of a reversed request", state=view.state.value)
            return request.respond_bill(self._code(Outcome.TRANSACTION_REVERSED))
        if view.response is not None:
            log.info("repeat answered with the original response", response_code=view.response_code)
            return Response(*view.response)
        if view.id in self._in_flight:
            log.info("repeat waits for the original in flight")
            waiter = defer.Deferred()
            self._in_flight[view.id].append(waiter)
            timeout = (route.settings.timeout if route else 0) + REPEAT_GRACE_SECONDS
            waiter.addTimeout(timeout, self._clock)
            try:
                response = await waiter
            except defer.TimeoutError:
                response = None
            if response is not None:
                return Response(response.mti, dict(response.fields))
        # The original's outcome is not known here (another process holds it,
        # or it was cut short): answer "unavailable" and leave the state alone.
        log.warning("repeat of a request without a final answer", state=view.state.value)
        return request.respond_bill(self._code(Outcome.BILLER_UNAVAILABLE))

    async def _call_biller(self, deferred: defer.Deferred, route: BillerRoute):
        deferred.addTimeout(route.settings.timeout, self._clock)
        return await deferred

    async def _settle(self, request, new, event: Event, outcome: Outcome, detail: str, log,
                      approved: Response | None = None, values=None) -> Response:
        """Apply the biller's answer through the state machine, storing the
        answer the switch gets for the state the payment ends in."""
        detail = mask_text(detail)  # a biller's error text may echo card data
        declined = request.respond_bill(self._code(outcome))

        def respond(state: State):
            response = approved if (approved is not None and state in APPROVED) else declined
            return response.mti, response.fields

        applied = await self._journal.run(settle.apply_event, new.id, event, self._clock.seconds(),
                                          self.context, respond=respond, values=values, detail=detail)
        state = applied.view.state
        log.info("payment settled", machine_event=event.value, state=state.value, detail=detail,
                 response_code=applied.view.response_code)
        self._after(applied)
        return approved if (approved is not None and state in APPROVED) else declined

    def _after(self, applied) -> None:
        if applied.sms_queued:
            self._on_sms_queued()
        if applied.biller_work:
            self.on_biller_work()
