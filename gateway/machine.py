"""The payment state machine as a pure function: facts + event -> decision.

Everything that can happen to a payment after it was journaled arrives here
as an :class:`Event` -- the biller's answer to the posting, a reversal (0420)
or an advice (0220) from the switch, the answer to a status query or a
reversal sent to the biller, an outbox item that expired, or the recovery
sweeper finding a payment that nobody is working on any more.  ``decide``
returns the new state, the flags to store and the :class:`Action` s to take
(queue biller work, queue or cancel an SMS).  The caller applies a decision
in ONE database transaction, so every guarantee rests on the database.

What the switch was told decides what must happen at the biller:

- a payment the switch approved (CONFIRMED, or completed by an advice) must
  be held by the biller, unless the switch then reverses it;
- a payment the switch was not approved for (declined, timed out -> IN_DOUBT,
  or reversed) must end NOT held by the biller: an in-doubt payment is
  settled by a status query and, if the biller holds it, a reversal -- never
  by posting it again;
- a reversal that races an in-flight posting wins: when the posting comes
  back confirmed, it is reversed at the biller;
- a biller that records later (contract v2) leaves an approved payment
  ACCEPTED: no receipt until its batch books it (the status query says
  POSTED: CONFIRMED and the receipt); a row its batch rejects is an
  EXCEPTION (the switch was approved: a person refunds); a reversal (0420)
  of an ACCEPTED payment withdraws it at the biller where its policy
  allows (REVERSING -> REVERSED), else an EXCEPTION;
- ``capabilities`` are honoured: a biller that answers no status queries
  is never asked one -- a payment whose outcome is unknown there still
  waits IN_DOUBT for the switch's advice or reversal, then (NO_STATUS) is
  undone by a reversal where the biller takes them (an EXCEPTION where it
  does not), or, when the switch advised it, re-posted idempotently;
- an advice obeys the same local rules as a payment: one for a payment that
  breaks them (``breaks_local_rules``, decided when it was journaled) is
  never posted -- the customer was debited for something the gateway will
  not post, so it becomes an EXCEPTION for a person, never silently dropped.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from .states import State


class Event(enum.Enum):
    BILLER_CONFIRMED = "biller_confirmed"  # posting recorded by the biller
    BILLER_DECLINED = "biller_declined"  # posting refused; nothing recorded
    BILLER_UNAVAILABLE = "biller_unavailable"  # posting certainly not sent
    BILLER_NO_ANSWER = "biller_no_answer"  # posting may or may not be recorded
    REVERSAL_RECEIVED = "reversal_received"  # 0420 from the switch
    ADVICE_RECEIVED = "advice_received"  # 0220: the customer was debited
    STATUS_POSTED = "status_posted"  # status query: the biller holds it
    STATUS_NOT_FOUND = "status_not_found"  # status query: the biller never had it
    STATUS_REVERSED = "status_reversed"  # status query: held, then undone
    BILLER_REVERSED = "biller_reversed"  # our reversal done (or nothing to undo)
    REVERSAL_REFUSED = "reversal_refused"  # the biller will not reverse
    OUTBOX_EXPIRED = "outbox_expired"  # biller work gave up: a person decides
    STALE = "stale"  # found unfinished with nobody working on it (crash)
    # The gateway will not send it to the biller: a local rule is broken, or
    # the switch reversed it before it arrived.
    NOT_POSTED = "not_posted"
    ADVICE_ONLY = "advice_only"  # journaled from its 0220: the 0200 never came
    INQUIRY_ANSWERED = "inquiry_answered"  # the biller listed the bills; the 0210 is built
    # Cross-checks against the journal (bill_rules.confirmation_problem): the
    # biller says it holds another amount than was posted (an advised posting,
    # a status query), or the switch reverses another amount than the
    # payment's.  Never accepted silently: a person settles it.
    BILLER_AMOUNT_MISMATCH = "biller_amount_mismatch"
    REVERSAL_AMOUNT_MISMATCH = "reversal_amount_mismatch"
    # Contract v2: recorded later.
    BILLER_ACCEPTED = "biller_accepted"  # posting taken into the biller's intake, booked later
    STATUS_ACCEPTED = "status_accepted"  # status query: in the intake, not booked yet
    STATUS_REJECTED = "status_rejected"  # status query: the biller's batch refused it
    # The biller answers no status queries (capabilities): settle otherwise.
    NO_STATUS = "no_status"


class Action(enum.Enum):
    POST = "POST"  # (re)post idempotently on the payment id -- advices only
    QUERY_STATUS = "STATUS"
    REVERSE = "REVERSE"
    QUEUE_RECEIPT = "queue_receipt"
    CANCEL_RECEIPT = "cancel_receipt"
    QUEUE_REVERSAL_NOTICE = "queue_reversal_notice"


BILLER_ACTIONS = frozenset({Action.POST, Action.QUERY_STATUS, Action.REVERSE})


@dataclass(frozen=True)
class Facts:
    state: State
    reversal_requested: bool = False
    advice_received: bool = False
    can_reverse: bool = True  # the biller's policy allows reversals
    receipt_left: bool = False  # the SMS receipt was sent (or is being sent)
    # The request broke a local rule (amount bounds, billing number, ...)
    # when it was journaled: the gateway told the switch so and never posts it.
    breaks_local_rules: bool = False
    can_query_status: bool = True  # the biller answers status queries (capabilities)


@dataclass(frozen=True)
class Decision:
    state: State
    actions: tuple[Action, ...] = ()
    reversal_requested: bool = False
    advice_received: bool = False
    note: str = ""


def _undo(facts: Facts, note: str, *extra: Action, by_switch: bool = False) -> Decision:
    """Reverse at the biller where its policy allows; otherwise a person must
    refund (EXCEPTION).  ``by_switch``: the switch asked (0420), as opposed
    to the gateway undoing a payment the switch was never approved for."""
    requested = facts.reversal_requested or by_switch
    if facts.can_reverse:
        return Decision(State.REVERSING, (*extra, Action.REVERSE), requested, facts.advice_received, note)
    return Decision(State.EXCEPTION, extra, requested, facts.advice_received,
                    note + "; biller does not allow reversals: refund by hand")


def _advised_too_late(facts: Facts) -> bool:
    """The switch says it debited the customer, but the gateway has already
    undone the payment on its own (not on the switch's reversal)."""
    return facts.advice_received and not facts.reversal_requested


def _confirm(facts: Facts, note: str) -> Decision:
    if facts.reversal_requested:
        return _undo(facts, note + " after the switch reversed it")
    return Decision(State.CONFIRMED, (Action.QUEUE_RECEIPT,), False, facts.advice_received, note)


def _refuse_advised(facts: Facts, why: str) -> Decision:
    """The switch debited the customer for a payment the gateway will not
    post: acknowledged, never posted, a person refunds (EXCEPTION)."""
    return Decision(State.EXCEPTION, (), facts.reversal_requested, True,
                    f"the switch debited the customer for a payment that {why}: refund by hand")


def _post_advised(facts: Facts, note: str) -> Decision:
    """(Re)post a payment the switch advised -- the one way a posting is
    decided after the in-line call -- unless it breaks the local rules."""
    if facts.breaks_local_rules:
        return _refuse_advised(facts, "breaks the service's rules")
    return Decision(State.POSTING, (Action.POST,), False, True, note)


def _in_doubt(facts: Facts, note: str) -> Decision:
    """The biller may or may not hold the payment: IN_DOUBT, settled from the
    biller outbox once the switch has had ``status_delay`` to advise or
    reverse.  The STATUS item asks the biller -- or, for a biller that
    answers no status queries, is only the moment to settle without asking
    (the worker applies NO_STATUS instead of calling it)."""
    how = "ask the biller" if facts.can_query_status else "settle without asking (no status queries)"
    return Decision(State.IN_DOUBT, (Action.QUERY_STATUS,), facts.reversal_requested, facts.advice_received,
                    f"{note}: {how}")


def _without_status(facts: Facts, note: str) -> Decision:
    """An in-doubt payment at a biller that answers no status queries,
    settled by its own means: an advised payment is re-posted (idempotently
    on its id), any other is undone (a reversal, or an EXCEPTION where it
    takes none)."""
    if facts.advice_received and not facts.reversal_requested:
        return _post_advised(facts, note + "; the biller answers no status queries: re-post the advised payment")
    return _undo(facts, note + "; the biller answers no status queries: undo it")


def _accepted(facts: Facts, note: str) -> Decision:
    """In the biller's intake: the switch is approved, the receipt waits for
    the biller's batch, which the gateway polls for (when it can ask)."""
    if facts.reversal_requested:
        return _undo(facts, note + " after the switch reversed it")
    poll = (Action.QUERY_STATUS,) if facts.can_query_status else ()
    return Decision(State.ACCEPTED, poll, False, facts.advice_received, note + ": receipt after the biller's batch")


def _decide_accepted(facts: Facts, event: Event, keep: Decision) -> Decision:
    if event is Event.STATUS_POSTED:
        return _confirm(facts, "the biller's batch recorded it")
    if event is Event.STATUS_REJECTED:
        return Decision(State.EXCEPTION, (), facts.reversal_requested, facts.advice_received,
                        "the biller's batch rejected a payment the switch was approved for: refund by hand")
    if event is Event.STATUS_NOT_FOUND:
        return Decision(State.EXCEPTION, (), facts.reversal_requested, facts.advice_received,
                        "the biller no longer has a payment it had accepted: a person checks")
    if event is Event.STATUS_REVERSED:
        if facts.reversal_requested:
            return Decision(State.REVERSED, (), True, facts.advice_received, "biller already withdrew it")
        return Decision(State.EXCEPTION, (), False, facts.advice_received,
                        "the biller withdrew a payment the switch was approved for: a person checks")
    if event is Event.REVERSAL_RECEIVED:
        return _undo(facts, "switch reversed an accepted payment: withdraw it at the biller", by_switch=True)
    if event is Event.ADVICE_RECEIVED:
        return Decision(State.ACCEPTED, (), facts.reversal_requested, True, "advice for an accepted payment")
    if event is Event.OUTBOX_EXPIRED:
        return Decision(State.EXCEPTION, (), facts.reversal_requested, facts.advice_received,
                        "the biller never booked the accepted payment: a person checks")
    return keep


def decide(facts: Facts, event: Event) -> Decision:
    """The next state, flags and actions; the same state and no actions when
    the event changes nothing (repeats, late answers)."""
    s = facts.state
    keep = Decision(s, (), facts.reversal_requested, facts.advice_received, "no change")
    flags_rev = Decision(s, (), True, facts.advice_received, "reversal noted while in flight")
    flags_adv = Decision(s, (), facts.reversal_requested, True, "advice noted while in flight")

    if event is Event.BILLER_AMOUNT_MISMATCH:
        if s in (State.POSTING, State.IN_DOUBT):
            return Decision(State.EXCEPTION, (), facts.reversal_requested, facts.advice_received,
                            "the biller holds another amount than the journal's: a person settles it")
        return keep
    if event is Event.REVERSAL_AMOUNT_MISMATCH:
        if s in (State.RECEIVED, State.POSTING, State.IN_DOUBT, State.CONFIRMED, State.REVERSING):
            return Decision(State.EXCEPTION, (), True, facts.advice_received,
                            "the switch reversed another amount than the payment's: a person settles it")
        event = Event.REVERSAL_RECEIVED  # nothing held: nothing to reverse either way

    if s is State.RECEIVED:
        if event is Event.REVERSAL_RECEIVED:
            return flags_rev
        if event is Event.ADVICE_RECEIVED:
            return flags_adv
        if event is Event.NOT_POSTED:
            if facts.advice_received and not facts.reversal_requested:
                return _refuse_advised(facts, "the gateway declined")
            return Decision(State.DECLINED, (), facts.reversal_requested, facts.advice_received,
                            "declined, nothing posted")
        if event is Event.INQUIRY_ANSWERED:
            return Decision(State.ANSWERED, (), facts.reversal_requested, facts.advice_received, "bills listed")
        if event is Event.ADVICE_ONLY:
            if facts.reversal_requested:
                return _refuse_advised(facts, "the switch had already reversed")
            return _post_advised(facts, "complete advised payment")
        if event is Event.STALE:
            # RECEIVED is committed before anything is sent to the biller.
            if facts.advice_received and not facts.reversal_requested:
                return _post_advised(facts, "complete advised payment")
            return Decision(State.DECLINED, (), facts.reversal_requested, facts.advice_received,
                            "never sent to the biller")
        return keep

    if s is State.POSTING:
        if event is Event.BILLER_CONFIRMED:
            return _confirm(facts, "biller confirmed")
        if event is Event.BILLER_DECLINED:
            if facts.advice_received and not facts.reversal_requested:
                return Decision(State.EXCEPTION, (), False, True,
                                "biller refused a payment the customer was debited for")
            return Decision(State.DECLINED, (), facts.reversal_requested, facts.advice_received, "biller declined")
        if event is Event.BILLER_UNAVAILABLE:
            if facts.advice_received and not facts.reversal_requested:
                return _post_advised(facts, "advised: post when the biller is back")
            return Decision(State.DECLINED, (), facts.reversal_requested, facts.advice_received, "biller unavailable")
        if event in (Event.BILLER_NO_ANSWER, Event.STALE):
            return _in_doubt(facts, "outcome unknown")
        if event is Event.BILLER_ACCEPTED:
            return _accepted(facts, "biller took it into its intake")
        if event is Event.REVERSAL_RECEIVED:
            return flags_rev
        if event is Event.ADVICE_RECEIVED:
            return flags_adv
        if event is Event.OUTBOX_EXPIRED:
            return Decision(State.EXCEPTION, (), facts.reversal_requested, facts.advice_received,
                            "biller work expired")
        return keep

    if s is State.IN_DOUBT:
        if event is Event.STATUS_POSTED:
            if facts.advice_received and not facts.reversal_requested:
                return Decision(State.CONFIRMED, (Action.QUEUE_RECEIPT,), False, True,
                                "biller holds it and the customer was debited")
            return _undo(facts, "biller holds a payment the switch was not approved for")
        if event is Event.STATUS_NOT_FOUND:
            if facts.advice_received and not facts.reversal_requested:
                return _post_advised(facts, "advised: post it")
            if facts.can_reverse:
                # A reversal of an unknown payment also bars its late arrival.
                return Decision(State.REVERSING, (Action.REVERSE,), facts.reversal_requested,
                                facts.advice_received, "biller does not hold it: cancel to bar a late posting")
            return Decision(State.DECLINED, (), facts.reversal_requested, facts.advice_received,
                            "biller does not hold it")
        if event is Event.STATUS_REVERSED:
            if facts.advice_received and not facts.reversal_requested:
                return Decision(State.EXCEPTION, (), False, True, "biller reversed an advised payment")
            return Decision(State.REVERSED, (), facts.reversal_requested, facts.advice_received,
                            "biller already reversed it")
        if event is Event.REVERSAL_RECEIVED:
            return _undo(facts, "switch reversed an in-doubt payment", by_switch=True)
        if event is Event.ADVICE_RECEIVED:
            if not facts.can_query_status:
                return _without_status(dataclasses.replace(facts, advice_received=True),
                                       "advice for an in-doubt payment")
            return Decision(s, (Action.QUERY_STATUS,), facts.reversal_requested, True,
                            "advice for an in-doubt payment: settle by status")
        if event is Event.NO_STATUS:
            return _without_status(facts, "in doubt")
        if event is Event.STATUS_ACCEPTED:
            if facts.advice_received and not facts.reversal_requested:
                return _accepted(facts, "the biller holds it in its intake and the customer was debited")
            return _undo(facts, "biller holds in its intake a payment the switch was not approved for")
        if event is Event.STATUS_REJECTED:
            if facts.advice_received and not facts.reversal_requested:
                return Decision(State.EXCEPTION, (), False, True,
                                "the biller's batch rejected a payment the customer was debited for")
            return Decision(State.DECLINED, (), facts.reversal_requested, facts.advice_received,
                            "the biller's batch rejected it: nothing held")
        if event is Event.OUTBOX_EXPIRED:
            return Decision(State.EXCEPTION, (), facts.reversal_requested, facts.advice_received,
                            "status query expired")
        return keep

    if s is State.ACCEPTED:
        return _decide_accepted(facts, event, keep)

    if s is State.CONFIRMED:
        if event is Event.REVERSAL_RECEIVED:
            return _undo(facts, "switch reversed a confirmed payment", Action.CANCEL_RECEIPT, by_switch=True)
        if event is Event.ADVICE_RECEIVED:
            return Decision(s, (), facts.reversal_requested, True, "advice for a confirmed payment")
        return keep

    if s is State.DECLINED:
        if event is Event.ADVICE_RECEIVED and not facts.reversal_requested and not facts.advice_received:
            return _post_advised(facts, "switch debited the customer for a declined payment: post it")
        if event is Event.REVERSAL_RECEIVED:
            return Decision(s, (), True, facts.advice_received, "nothing to reverse")
        return keep

    if s is State.REVERSING:
        if event in (Event.BILLER_REVERSED, Event.STATUS_NOT_FOUND, Event.STATUS_REVERSED,
                     Event.STATUS_REJECTED):
            if _advised_too_late(facts):
                return Decision(State.EXCEPTION, (), False, True,
                                "undone at the biller, but the switch debited the customer: refund or re-post by hand")
            notice = (Action.QUEUE_REVERSAL_NOTICE,) if facts.receipt_left else ()
            return Decision(State.REVERSED, notice, facts.reversal_requested, facts.advice_received,
                            "biller no longer holds it")
        if event in (Event.REVERSAL_REFUSED, Event.OUTBOX_EXPIRED):
            return Decision(State.EXCEPTION, (), facts.reversal_requested, facts.advice_received,
                            "biller did not reverse: refund by hand")
        if event is Event.REVERSAL_RECEIVED:
            return Decision(s, (), True, facts.advice_received, "already reversing")
        if event is Event.ADVICE_RECEIVED:
            return Decision(s, (), facts.reversal_requested, True, "advice while undoing the payment")
        return keep

    if s is State.REVERSED and event is Event.ADVICE_RECEIVED and not facts.reversal_requested:
        return Decision(State.EXCEPTION, (), False, True,
                        "the switch debited the customer after the gateway undid the payment: "
                        "refund or re-post by hand")

    # ANSWERED (inquiries), REVERSED and EXCEPTION are final.
    if event is Event.REVERSAL_RECEIVED:
        return Decision(s, (), True, facts.advice_received, "final: nothing to do")
    return keep
