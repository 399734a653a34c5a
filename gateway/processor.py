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
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping

import structlog
from twisted.internet import defer

from billgw.billing_adapters.interface import (
    BillAmount,
    BillerAdapter,
    BillerDeclined,
    BillerOutcomeUnknown,
    BillerUnavailable,
    BillQuery,
    DeclineReason,
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
from billgw.iso8583.codes import Outcome, ResponseCodes
from billgw.iso8583.masking import mask_text
from billgw.iso8583.messages import BillRequest, RequestKind, Response, ReversalRequest
from billgw.sms.outbox import OutboxKind

from . import journal as journal_ops
from . import bill_rules, business_day, business_journal, rules, settle
from .config import FEE_CUSTOMER, REFERENCE_IGNORED, REFERENCE_REQUIRED, BillerSettings, ServiceSettings
from .db import JournalBusy
from .journal import NewTransaction, TransactionView
from .machine import Event
from . import msisdn_policy
from .receipts import ReceiptComposer
from .states import APPROVED, State

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


class TransactionProcessor:
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
        recorded, was_reversed = await self._journal.admit(
            settle.record_request, new, now, self.context, (reversed_first.mti, reversed_first.fields),
            posting=problem is None and request.kind is RequestKind.PAYMENT)
        if not recorded.is_new:
            return await self._answer_repeat(request, recorded.view, route, log)
        new = dataclasses.replace(new, business_date=recorded.view.business_date)  # as journaled
        log = log.bind(payment_id=new.id)
        if verdict.reason is not None:  # never the number itself
            log.warning("receipt number invalid", reason=verdict.reason,
                        action="declined" if verdict.problem else "no SMS receipt")
        if was_reversed:
            log.warning("original arrived after its reversal: declined, not posted")
            return reversed_first
        self._in_flight[new.id] = []
        response = None
        try:
            if problem is not None:
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

    async def _reverse(self, request: ReversalRequest, log) -> Response:
        """0420/0421: durable first, then acknowledged; the undoing follows."""
        keys = request.original_keys
        rev = settle.ReversalInput(
            orig_mti=request.original.mti, orig_acquirer_id=keys.acquirer_id,
            orig_terminal_id=keys.terminal_id, orig_stan=keys.stan,
            orig_transmission_dt=keys.transmission_datetime, stan=request.stan,
            transmission_dt=request.transmission_datetime, amount=request.amount,
            currency=request.currency,
            business_date=business_day.as_text(business_day.payment_date(self._calendar, self._clock.seconds())))
        outcome = await self._journal.admit(settle.record_reversal, rev, self._clock.seconds(), self.context,
                                          ack_code=self._code(Outcome.APPROVED))
        log.info("reversal recorded", payment_id=outcome.transaction_id, state=outcome.state,
                 repeat=outcome.repeat, orig_stan=keys.stan)
        if outcome.biller_work:
            self.on_biller_work()
        if outcome.sms_queued:
            self._on_sms_queued()
        return request.respond(outcome.response_code)

    async def _advise(self, request: BillRequest, log) -> Response:
        """0220/0221: the customer was debited; see the payment completed."""
        problem, route, service = local_check(request, self._billers)  # the codec refuses non-payment advices
        new = self._new_transaction(request, service, problem, self._business_floor(route, self._clock.seconds()))

        def respond(code: str):
            response = request.respond_bill(code)
            return response.mti, response.fields

        outcome = await self._journal.admit(
            settle.record_advice, new, self._clock.seconds(), self.context, respond=respond,
            ok_code=self._code(Outcome.APPROVED), mismatch_code=self._code(Outcome.DUPLICATE_TRANSMISSION))
        log.info("advice recorded", payment_id=outcome.transaction_id, repeat=outcome.repeat,
                 biller_work=outcome.biller_work)
        if outcome.biller_work:
            self.on_biller_work()
        if outcome.sms_queued:
            self._on_sms_queued()
        # This message's own echo fields with the stored code: a 0221 gets
        # exactly the answer its 0220 got.
        return request.respond_bill(outcome.response[1]["39"])
