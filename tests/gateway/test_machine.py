"""The payment state machine, as a pure function: every transition and race."""
import pytest

from billgw.gateway.machine import Action, Event, Facts, decide
from billgw.gateway.states import ALLOWED, State

S, E, A = State, Event, Action


@pytest.mark.parametrize("facts, event, state, actions", [
    # The in-line posting.
    (Facts(S.POSTING), E.BILLER_CONFIRMED, S.CONFIRMED, (A.QUEUE_RECEIPT,)),
    (Facts(S.POSTING), E.BILLER_DECLINED, S.DECLINED, ()),
    (Facts(S.POSTING), E.BILLER_UNAVAILABLE, S.DECLINED, ()),
    (Facts(S.POSTING), E.BILLER_NO_ANSWER, S.IN_DOUBT, (A.QUERY_STATUS,)),
    # Reversal racing the posting: it wins whatever the biller answers.
    (Facts(S.POSTING, reversal_requested=True), E.BILLER_CONFIRMED, S.REVERSING, (A.REVERSE,)),
    (Facts(S.POSTING, reversal_requested=True, can_reverse=False), E.BILLER_CONFIRMED, S.EXCEPTION, ()),
    (Facts(S.POSTING, reversal_requested=True), E.BILLER_DECLINED, S.DECLINED, ()),
    (Facts(S.POSTING, reversal_requested=True), E.BILLER_NO_ANSWER, S.IN_DOUBT, (A.QUERY_STATUS,)),
    # Advice while posting: the customer was debited, the payment must end held.
    (Facts(S.POSTING, advice_received=True), E.BILLER_DECLINED, S.EXCEPTION, ()),
    (Facts(S.POSTING, advice_received=True), E.BILLER_UNAVAILABLE, S.POSTING, (A.POST,)),
    (Facts(S.POSTING, advice_received=True), E.BILLER_CONFIRMED, S.CONFIRMED, (A.QUEUE_RECEIPT,)),
    # Crash recovery.
    (Facts(S.RECEIVED), E.STALE, S.DECLINED, ()),
    (Facts(S.RECEIVED, advice_received=True), E.STALE, S.POSTING, (A.POST,)),
    (Facts(S.POSTING), E.STALE, S.IN_DOUBT, (A.QUERY_STATUS,)),
    # In doubt: settled by status, never by posting again (unless advised).
    (Facts(S.IN_DOUBT), E.STATUS_POSTED, S.REVERSING, (A.REVERSE,)),
    (Facts(S.IN_DOUBT, can_reverse=False), E.STATUS_POSTED, S.EXCEPTION, ()),
    (Facts(S.IN_DOUBT), E.STATUS_NOT_FOUND, S.REVERSING, (A.REVERSE,)),
    (Facts(S.IN_DOUBT, can_reverse=False), E.STATUS_NOT_FOUND, S.DECLINED, ()),
    (Facts(S.IN_DOUBT), E.STATUS_REVERSED, S.REVERSED, ()),
    (Facts(S.IN_DOUBT, advice_received=True), E.STATUS_POSTED, S.CONFIRMED, (A.QUEUE_RECEIPT,)),
    (Facts(S.IN_DOUBT, advice_received=True), E.STATUS_NOT_FOUND, S.POSTING, (A.POST,)),
    (Facts(S.IN_DOUBT, advice_received=True), E.STATUS_REVERSED, S.EXCEPTION, ()),
    (Facts(S.IN_DOUBT), E.REVERSAL_RECEIVED, S.REVERSING, (A.REVERSE,)),
    (Facts(S.IN_DOUBT), E.ADVICE_RECEIVED, S.IN_DOUBT, (A.QUERY_STATUS,)),
    (Facts(S.IN_DOUBT), E.OUTBOX_EXPIRED, S.EXCEPTION, ()),
    # Reversal of a confirmed payment: cancel the unsent receipt, undo at the biller.
    (Facts(S.CONFIRMED), E.REVERSAL_RECEIVED, S.REVERSING, (A.CANCEL_RECEIPT, A.REVERSE)),
    (Facts(S.CONFIRMED, can_reverse=False), E.REVERSAL_RECEIVED, S.EXCEPTION, (A.CANCEL_RECEIPT,)),
    (Facts(S.CONFIRMED), E.ADVICE_RECEIVED, S.CONFIRMED, ()),
    # Reversing: a notice only when the receipt already left.
    (Facts(S.REVERSING), E.BILLER_REVERSED, S.REVERSED, ()),
    (Facts(S.REVERSING, receipt_left=True), E.BILLER_REVERSED, S.REVERSED, (A.QUEUE_REVERSAL_NOTICE,)),
    (Facts(S.REVERSING), E.REVERSAL_REFUSED, S.EXCEPTION, ()),
    (Facts(S.REVERSING), E.OUTBOX_EXPIRED, S.EXCEPTION, ()),
    (Facts(S.REVERSING), E.STATUS_POSTED, S.REVERSING, ()),  # a late status answer changes nothing
    # Declined payment the switch says it debited: post it.
    (Facts(S.DECLINED), E.ADVICE_RECEIVED, S.POSTING, (A.POST,)),
    (Facts(S.DECLINED), E.REVERSAL_RECEIVED, S.DECLINED, ()),
    (Facts(S.DECLINED, advice_received=True), E.ADVICE_RECEIVED, S.DECLINED, ()),
    # An advice that comes after the gateway undid an in-doubt payment on its
    # own: the customer was debited and the biller holds nothing -- a person.
    (Facts(S.REVERSED), E.ADVICE_RECEIVED, S.EXCEPTION, ()),
    (Facts(S.REVERSED, reversal_requested=True), E.ADVICE_RECEIVED, S.REVERSED, ()),
    (Facts(S.REVERSING, advice_received=True), E.BILLER_REVERSED, S.EXCEPTION, ()),
    (Facts(S.REVERSING, advice_received=True, reversal_requested=True), E.BILLER_REVERSED, S.REVERSED, ()),
    # Local rules bind advices too: acknowledged, never posted, a person refunds.
    (Facts(S.RECEIVED), E.NOT_POSTED, S.DECLINED, ()),
    (Facts(S.RECEIVED, advice_received=True), E.NOT_POSTED, S.EXCEPTION, ()),
    (Facts(S.RECEIVED, advice_received=True, reversal_requested=True), E.NOT_POSTED, S.DECLINED, ()),
    (Facts(S.RECEIVED, advice_received=True), E.ADVICE_ONLY, S.POSTING, (A.POST,)),
    (Facts(S.RECEIVED, advice_received=True, breaks_local_rules=True), E.ADVICE_ONLY, S.EXCEPTION, ()),
    (Facts(S.RECEIVED, advice_received=True, reversal_requested=True), E.ADVICE_ONLY, S.EXCEPTION, ()),
    (Facts(S.RECEIVED, advice_received=True, breaks_local_rules=True), E.STALE, S.EXCEPTION, ()),
    (Facts(S.RECEIVED, breaks_local_rules=True), E.STALE, S.DECLINED, ()),
    (Facts(S.DECLINED, breaks_local_rules=True), E.ADVICE_RECEIVED, S.EXCEPTION, ()),
    (Facts(S.RECEIVED), E.INQUIRY_ANSWERED, S.ANSWERED, ()),
    # Final states stay final.
    (Facts(S.REVERSED), E.REVERSAL_RECEIVED, S.REVERSED, ()),
    (Facts(S.REVERSED), E.BILLER_CONFIRMED, S.REVERSED, ()),
    (Facts(S.EXCEPTION), E.STATUS_POSTED, S.EXCEPTION, ()),
    (Facts(S.ANSWERED), E.REVERSAL_RECEIVED, S.ANSWERED, ()),
])
def test_transition(facts, event, state, actions):
    decision = decide(facts, event)
    assert decision.state is state
    assert decision.actions == actions


def test_flags_are_noted_while_in_flight_without_state_change():
    d = decide(Facts(S.POSTING), E.REVERSAL_RECEIVED)
    assert (d.state, d.reversal_requested, d.actions) == (S.POSTING, True, ())
    d = decide(Facts(S.RECEIVED), E.ADVICE_RECEIVED)
    assert (d.state, d.advice_received, d.actions) == (S.RECEIVED, True, ())


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
@pytest.mark.parametrize("rev", [False, True])
@pytest.mark.parametrize("adv", [False, True])
@pytest.mark.parametrize("can_reverse", [False, True])
@pytest.mark.parametrize("breaks_rules", [False, True])
def test_every_decision_is_an_allowed_transition(state, event, rev, adv, can_reverse, breaks_rules):
    facts = Facts(state, reversal_requested=rev, advice_received=adv, can_reverse=can_reverse,
                  breaks_local_rules=breaks_rules)
    decision = decide(facts, event)
    assert decision.state is state or decision.state in ALLOWED[state]
    # Money rule: a receipt is only ever queued together with CONFIRMED.
    if Action.QUEUE_RECEIPT in decision.actions:
        assert decision.state is State.CONFIRMED
    # A payment the switch reversed never ends CONFIRMED.
    if rev:
        assert decision.state is not State.CONFIRMED or state is State.CONFIRMED
    # Posting again is only for advised payments (never blind re-posting).
    if Action.POST in decision.actions:
        assert decision.advice_received
        # ... and never for a payment that breaks the service's own rules.
        assert not breaks_rules
    # The gateway undoing a payment on its own never claims the switch asked.
    if not rev and event not in (Event.REVERSAL_RECEIVED, Event.REVERSAL_AMOUNT_MISMATCH):
        assert not decision.reversal_requested
    # A payment the switch says it debited never ends quietly undone.
    undone = (State.REVERSED, State.DECLINED)
    if decision.advice_received and not decision.reversal_requested and (
            decision.state is not state or (event is Event.ADVICE_RECEIVED and not adv)):
        assert decision.state not in undone
