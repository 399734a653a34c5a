"""Applying events to payments, each in one database transaction.

This is where :func:`billgw.gateway.machine.decide` meets the database: the
payment row is read under a row lock (``FOR UPDATE`` on PostgreSQL; SQLite
transactions start ``IMMEDIATE`` and are serialised), the decision is taken
on what the database says now -- never on process memory -- and the new
state, the flags, the event history, the biller work and the SMS rows it
implies are written together.  Reversals (0420) and advices (0220) are
recorded here too, so they are durable before their 0430 / 0230 goes out.

Every function takes a Connection and a :class:`SettleContext` (what it needs
from configuration: the billers' reversal policy, the receipt texts, outbox
timing) and returns dataclasses.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Callable, Mapping

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from billgw.sms import outbox as sms_outbox

from . import biller_outbox, business_journal
from .journal import (
    P_BY_ID_FOR_UPDATE,
    P_INSERT_EVENT,
    NewTransaction,
    Recorded,
    TransactionView,
    _view,
    find_by_keys,
    keys_params,
    lock_acquirer_keys,
    record_received,
    utc,
)
from .prepared import Prepared
from .machine import BILLER_ACTIONS, Action, Decision, Event, Facts, decide
from .schema import reversals, transactions
from .states import State, check_transition

# Reversal row states.
REV_ACKED = "ACKED"  # durable and acknowledged; the payment is being undone
REV_BILLER_REVERSED = "BILLER_REVERSED"  # the biller no longer holds it
REV_NOT_FOUND = "NOT_FOUND"  # the original never reached us: an exception
REV_NOTHING = "NOTHING_TO_REVERSE"  # the original was declined or never posted
REV_EXCEPTION = "EXCEPTION"  # the biller would not reverse: refund by hand

# Built once (see journal.py): the statements every payment runs.
_r = reversals
# SET columns come from the parameters given; b_id picks the row.
_UPDATE_PAYMENT = (update(transactions).where(transactions.c.id == bindparam("b_id"))
                   .returning(*transactions.c))
_REVERSAL_OF_KEYS = select(_r.c.id).where(
    _r.c.orig_acquirer_id == bindparam("b_acquirer"), _r.c.orig_terminal_id == bindparam("b_terminal"),
    _r.c.orig_stan == bindparam("b_stan"), _r.c.orig_transmission_dt == bindparam("b_dt"))
_SETTLE_REVERSAL_ROWS = update(_r).where(_r.c.transaction_id == bindparam("b_txn"),
                                         _r.c.state == bindparam("b_from")).values(
    state=bindparam("b_to"), updated_at=bindparam("b_at"))
# Run on the DB-API cursor (prepared.py; the profile in docs/performance.md).
_P_UPDATE_PAYMENT = Prepared(_UPDATE_PAYMENT, keyed=True, fixed=("b_id",))
_P_REVERSAL_OF_KEYS = Prepared(_REVERSAL_OF_KEYS)
_P_SETTLE_REVERSAL_ROWS = Prepared(_SETTLE_REVERSAL_ROWS)


@dataclass(frozen=True)
class SettleContext:
    can_reverse: Callable[[str | None], bool]
    sms_text: Callable[[TransactionView, sms_outbox.OutboxKind], str | None]
    # The first status query of an in-doubt payment waits: the switch's own
    # advice (it debited) or reversal usually follows a timeout within seconds
    # and decides the outcome; settling earlier would undo what it advises.
    status_delay: float = 30.0
    expire_after: float = 86400.0
    # What the biller's adapter can be asked (capabilities); None: anything.
    can_query_status: Callable[[str | None], bool] | None = None
    # Contract v2: an ACCEPTED payment's polls for its biller's batch.  The
    # first one waits a while (batches run hourly or nightly); they give up
    # -- an EXCEPTION a person checks -- only after days.
    accepted_poll_delay: float = 60.0
    accepted_expire_after: float = 3 * 86400.0


@dataclass(frozen=True)
class Applied:
    view: TransactionView
    decision: Decision
    biller_work: bool
    sms_queued: bool


def _locked(conn: Connection, txn_id: str) -> TransactionView | None:
    row = P_BY_ID_FOR_UPDATE.first(conn, {"b_id": txn_id})
    return _view(row) if row else None


def _receipt_left(conn: Connection, txn_id: str) -> bool:
    for item in sms_outbox.get_for_payment(conn, txn_id):
        if item.kind == sms_outbox.OutboxKind.RECEIPT.value and sms_outbox.may_have_left(conn, item):
            return True
    return False


def facts_of(conn: Connection, view: TransactionView, ctx: SettleContext) -> Facts:
    return Facts(
        state=view.state,
        reversal_requested=view.reversal_requested,
        advice_received=view.advice_received,
        can_reverse=ctx.can_reverse(view.biller_code),
        # Only a REVERSING payment's decision reads it: no query otherwise.
        receipt_left=view.state is State.REVERSING and _receipt_left(conn, view.id),
        breaks_local_rules=view.local_problem is not None,
        can_query_status=ctx.can_query_status(view.biller_code) if ctx.can_query_status else True,
    )


def _rev_state_for(state: State) -> str | None:
    return {State.REVERSED: REV_BILLER_REVERSED, State.EXCEPTION: REV_EXCEPTION,
            State.DECLINED: REV_NOTHING}.get(state)


def apply_event(conn: Connection, txn_id: str, event: Event, now: float, ctx: SettleContext, *,
                respond: Callable[[State], tuple[str, Mapping[str, str]]] | None = None,
                values: Mapping[str, object] | None = None, detail: str | None = None,
                work_item: int | None = None) -> Applied:
    """Decide and apply ``event`` for one payment, atomically.

    ``respond`` builds the 0210 to store for the resulting state (the
    processor's in-line path); ``values`` are extra columns to set (the
    biller's receipt number); ``work_item`` is the biller-outbox item whose
    answer this is -- it is marked done in the same transaction.
    """
    view = _locked(conn, txn_id)
    if view is None:
        raise KeyError(txn_id)
    decision = decide(facts_of(conn, view, ctx), event)
    at = utc(now)
    changes: dict[str, object] = {}
    if decision.reversal_requested != view.reversal_requested:
        changes["reversal_requested"] = decision.reversal_requested
    if decision.advice_received != view.advice_received:
        changes["advice_received"] = decision.advice_received
    if respond is not None:
        mti, fields = respond(decision.state)
        changes["response_fields"] = json.dumps({"mti": mti, "fields": dict(fields)}, sort_keys=True)
        changes["response_code"] = fields.get("39")
    if values:
        changes.update(values)
    note = f"{event.value}: {decision.note}" + (f" ({detail})" if detail else "")
    if decision.state is not view.state:
        check_transition(view.state, decision.state)
        changes.update(state=decision.state.value, detail=note[:400])
        P_INSERT_EVENT.execute(conn, {"transaction_id": txn_id, "from_state": view.state.value,
                                    "to_state": decision.state.value, "at": at, "detail": note[:400]})
    fresh = view
    if changes:
        changes["updated_at"] = at
        # RETURNING: the row as it now is, without reading it again.
        fresh = _view(_P_UPDATE_PAYMENT.one(conn, {"b_id": txn_id, **changes}))
    if decision.state is not view.state:
        rev_state = _rev_state_for(decision.state)
        if rev_state is not None:
            _move_reversal_rows(conn, txn_id, REV_ACKED, rev_state, at)

    # The item this answers is done before the decision's own work is queued:
    # a decision may ask for the same action again (IN_DOUBT -> ACCEPTED
    # polls with the STATUS item that found it), which re-arms the item.
    if work_item is not None:
        biller_outbox.complete(conn, work_item, now=now)
    biller_work = sms_queued = False
    for action in decision.actions:
        if action in BILLER_ACTIONS:
            delay, expire = 0.0, ctx.expire_after
            if action is Action.QUERY_STATUS:
                accepted = decision.state is State.ACCEPTED
                delay = ctx.accepted_poll_delay if accepted else ctx.status_delay
                expire = ctx.accepted_expire_after if accepted else ctx.expire_after
            biller_outbox.enqueue(conn, txn_id, action.value, now=now, first_attempt_at=now + delay,
                                  expires_at=now + expire)
            biller_work = True
        elif action is Action.QUEUE_RECEIPT:
            sms_queued |= _queue_sms(conn, fresh, sms_outbox.OutboxKind.RECEIPT, now, ctx)
        elif action is Action.QUEUE_REVERSAL_NOTICE:
            sms_queued |= _queue_sms(conn, fresh, sms_outbox.OutboxKind.REVERSAL_NOTICE, now, ctx)
        elif action is Action.CANCEL_RECEIPT:
            sms_outbox.cancel_unsent(conn, txn_id, now=now)
    return Applied(fresh, decision, biller_work, sms_queued)


def _move_reversal_rows(conn: Connection, txn_id: str, from_state: str, to_state: str, at) -> None:
    _P_SETTLE_REVERSAL_ROWS.execute(conn, {"b_txn": txn_id, "b_from": from_state, "b_to": to_state, "b_at": at})


def _queue_sms(conn, view: TransactionView, kind, now: float, ctx: SettleContext) -> bool:
    if not view.msisdn:
        return False
    text = ctx.sms_text(view, kind)
    if text is None:
        return False
    sms_outbox.enqueue(conn, payment_id=view.id, kind=kind, msisdn=view.msisdn,
                       language=view.language or "en", text=text, now=now)
    return True


# --- reversals (0420 / 0421) -------------------------------------------------

@dataclass(frozen=True)
class ReversalInput:
    orig_mti: str
    orig_acquirer_id: str
    orig_terminal_id: str
    orig_stan: str
    orig_transmission_dt: str
    stan: str
    transmission_dt: str
    amount: int
    currency: str | None
    # The business date now (the schedule's, YYYYMMDD): a reversal of a
    # known original keeps the original's instead.
    business_date: str | None = None


@dataclass(frozen=True)
class ReversalOutcome:
    response_code: str
    repeat: bool
    state: str
    transaction_id: str | None
    biller_work: bool
    sms_queued: bool


def record_reversal(conn: Connection, rev: ReversalInput, now: float, ctx: SettleContext, *,
                    ack_code: str) -> ReversalOutcome:
    """Make a reversal durable (before its 0430) and start undoing the payment.

    A repeat (0421, or a 0420 sent again) finds the row by the original's
    keys and gets the identical answer.  A reversal for an original we never
    saw is recorded NOT_FOUND; the original, should it arrive later, is
    declined (see :func:`record_request`).  The original's keys are locked
    first, so an original being journaled at this moment -- by this process
    or another -- is either seen here or sees this reversal.
    """
    lock_acquirer_keys(conn, rev.orig_acquirer_id, rev.orig_terminal_id, rev.orig_stan,
                       rev.orig_transmission_dt)
    r = reversals
    existing = conn.execute(select(r).where(
        r.c.orig_acquirer_id == rev.orig_acquirer_id, r.c.orig_terminal_id == rev.orig_terminal_id,
        r.c.orig_stan == rev.orig_stan, r.c.orig_transmission_dt == rev.orig_transmission_dt)).first()
    at = utc(now)
    if existing is not None:
        conn.execute(update(r).where(r.c.id == existing.id).values(
            repeat_count=r.c.repeat_count + 1, updated_at=at))
        code = json.loads(existing.response_fields)["39"]
        return ReversalOutcome(code, True, existing.state, existing.transaction_id, False, False)
    original = find_by_keys(conn, rev.orig_acquirer_id, rev.orig_terminal_id, rev.orig_stan,
                            rev.orig_transmission_dt)
    state = REV_NOT_FOUND if original is None else REV_ACKED
    # A late reversal belongs to its original's business date, not today's.
    business_date = (original.business_date if original is not None and original.business_date
                     else business_journal.stamp(conn, rev.business_date))
    mismatch = reversal_amount_problem(original, rev.amount)
    conn.execute(insert(r).values(
        transaction_id=original.id if original else None, orig_mti=rev.orig_mti,
        orig_acquirer_id=rev.orig_acquirer_id, orig_terminal_id=rev.orig_terminal_id,
        orig_stan=rev.orig_stan, orig_transmission_dt=rev.orig_transmission_dt, stan=rev.stan,
        transmission_dt=rev.transmission_dt, amount=rev.amount, currency=rev.currency, state=state,
        repeat_count=0, response_fields=json.dumps({"39": ack_code}),
        detail=mismatch or (None if original else "original never received"), business_date=business_date,
        created_at=at, updated_at=at))
    if original is None:
        return ReversalOutcome(ack_code, False, state, None, False, False)
    event = Event.REVERSAL_RECEIVED if mismatch is None else Event.REVERSAL_AMOUNT_MISMATCH
    applied = apply_event(conn, original.id, event, now, ctx,
                          detail=f"0420 STAN {rev.stan}" + (f": {mismatch}" if mismatch else ""))
    final = {State.DECLINED: REV_NOTHING, State.ANSWERED: REV_NOTHING, State.REVERSED: REV_BILLER_REVERSED,
             State.EXCEPTION: REV_EXCEPTION}.get(applied.view.state)
    if final is not None:
        _move_reversal_rows(conn, original.id, REV_ACKED, final, at)
        state = final
    return ReversalOutcome(ack_code, False, state, original.id, applied.biller_work, applied.sms_queued)


def reversal_amount_problem(original: TransactionView | None, amount: int) -> str | None:
    """Why a reversal's F4 does not undo its original (pure): the switch
    reverses a payment in full, so another amount than the journal's is a
    discrepancy a person settles, never applied as if it matched."""
    if original is None or original.kind != "payment" or amount == original.amount:
        return None
    return f"reversal amount {amount} is not the payment's {original.amount}"


def reversed_before_arrival(conn: Connection, acquirer_id: str, terminal_id: str, stan: str,
                            transmission_dt: str) -> bool:
    return _P_REVERSAL_OF_KEYS.first(conn, keys_params(acquirer_id, terminal_id, stan,
                                                       transmission_dt)) is not None


def _journal_under_lock(conn: Connection, new: NewTransaction, now: float, *, posting: bool = False,
                        **flags: bool):
    """Lock the request's keys, then journal it (or find it journaled).

    Returns ``(Recorded, reversed_first)``: whether a reversal of these keys
    was on record before the request, in which case the new row carries
    ``reversal_requested`` from its first moment."""
    lock_acquirer_keys(conn, new.acquirer_id, new.terminal_id, new.stan, new.transmission_dt)
    existing = find_by_keys(conn, new.acquirer_id, new.terminal_id, new.stan, new.transmission_dt)
    if existing is not None:
        return Recorded(existing, False), False
    # Under the key lock nothing else can journal these keys now: insert
    # without looking them up a second time.
    reversed_first = reversed_before_arrival(conn, new.acquirer_id, new.terminal_id, new.stan,
                                             new.transmission_dt)
    if reversed_first:
        flags["reversal_requested"] = True
    if new.business_date is not None:
        # The business date is the journal's: the last cut-over any process
        # recorded counts (business_journal.stamp).
        new = dataclasses.replace(new, business_date=business_journal.stamp(conn, new.business_date))
    state = State.POSTING if posting and not reversed_first else State.RECEIVED
    recorded = record_received(conn, new, now, state=state, looked_up=True, **flags)
    if recorded.is_new and reversed_first:
        conn.execute(update(reversals).where(
            reversals.c.orig_acquirer_id == new.acquirer_id, reversals.c.orig_terminal_id == new.terminal_id,
            reversals.c.orig_stan == new.stan, reversals.c.orig_transmission_dt == new.transmission_dt,
            reversals.c.transaction_id.is_(None)).values(transaction_id=new.id, updated_at=utc(now)))
    return recorded, reversed_first and recorded.is_new


def record_request(conn: Connection, new: NewTransaction, now: float, ctx: SettleContext,
                   reversed_response: tuple[str, Mapping[str, str]], *, posting: bool = False):
    """Journal a 0200 -- declined at once, never posted, if its reversal came first.

    ``posting``: the payment passed the local rules and goes to its biller
    right after this commit, so it is journaled POSTING at once (one durable
    commit before the biller call, one after).  Returns
    ``(Recorded, reversed_first)``."""
    recorded, reversed_first = _journal_under_lock(conn, new, now, posting=posting)
    if not reversed_first:
        return recorded, False
    mti, fields = reversed_response
    applied = apply_event(conn, new.id, Event.NOT_POSTED, now, ctx, respond=lambda _state: (mti, fields),
                          detail="reversed before it arrived")
    _settle_reversal_row(conn, new.id, applied.view.state, now)
    return Recorded(applied.view, True), True


def _settle_reversal_row(conn: Connection, txn_id: str, state: State, now: float) -> None:
    """A reversal that waited NOT_FOUND for its original: the original is
    here now, and was never posted."""
    rev_state = REV_NOTHING if state is State.DECLINED else _rev_state_for(state) or REV_ACKED
    _move_reversal_rows(conn, txn_id, REV_NOT_FOUND, rev_state, utc(now))


# --- advices (0220 / 0221) ---------------------------------------------------

@dataclass(frozen=True)
class AdviceOutcome:
    response: tuple[str, dict[str, str]]
    transaction_id: str
    repeat: bool
    biller_work: bool
    sms_queued: bool


def record_advice(conn: Connection, new: NewTransaction, now: float, ctx: SettleContext, *,
                  respond: Callable[[str], tuple[str, Mapping[str, str]]], ok_code: str,
                  mismatch_code: str) -> AdviceOutcome:
    """Make an advice durable and see the payment completed, atomically.

    Unknown payment: journaled from the advice and queued for posting (store
    and forward) -- unless it breaks the local rules (``new.local_problem``)
    or the switch reversed it first, which makes it an EXCEPTION.  Known
    payment: the ADVICE_RECEIVED event decides (nothing to do for a
    confirmed one; a status query for an in-doubt one; a posting for one the
    biller declined; an EXCEPTION for one declined on the local rules).  A
    repeat gets the stored 0230.
    """
    # The keys are locked first: of an advice, its original and its
    # reversal racing in, each sees what the others wrote before it.
    recorded, _ = _journal_under_lock(conn, new, now, advice_received=True)
    existing = None if recorded.is_new else recorded.view
    if existing is not None and existing.fingerprint != new.fingerprint:
        mti, fields = respond(mismatch_code)
        return AdviceOutcome((mti, dict(fields)), existing.id, False, False, False)
    if existing is not None and existing.advice_response:
        stored = json.loads(existing.advice_response)
        return AdviceOutcome((stored["mti"], stored["fields"]), existing.id, True, False, False)
    mti, fields = respond(ok_code)
    stored = json.dumps({"mti": mti, "fields": dict(fields)}, sort_keys=True)
    txn_id = new.id if existing is None else existing.id
    conn.execute(update(transactions).where(transactions.c.id == txn_id).values(
        advice_response=stored, updated_at=utc(now)))
    if existing is None:
        applied = apply_event(conn, txn_id, Event.ADVICE_ONLY, now, ctx,
                              detail=new.local_problem or "payment known only from its advice")
        _settle_reversal_row(conn, txn_id, applied.view.state, now)
    else:
        applied = apply_event(conn, txn_id, Event.ADVICE_RECEIVED, now, ctx)
    return AdviceOutcome((mti, dict(fields)), txn_id, False, applied.biller_work, applied.sms_queued)


# --- recovery ----------------------------------------------------------------

def stale_transactions(conn: Connection, *, now: float, older_than: float, limit: int) -> list[str]:
    """Payments left RECEIVED or POSTING longer than any biller call lasts:
    whoever was working on them is gone (crash); they are settled from the
    database alone."""
    t = transactions
    rows = conn.execute(select(t.c.id).where(
        t.c.state.in_([State.RECEIVED.value, State.POSTING.value]),
        t.c.updated_at < utc(now - older_than)).order_by(t.c.updated_at).limit(limit)).all()
    return [r.id for r in rows]
