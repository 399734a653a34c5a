"""Contract v2 in the state machine: ACCEPTED (recorded later by the
biller's batch) and billers that answer no status queries (capabilities)."""
import pytest

from billgw.gateway.machine import Action, Event, Facts, decide
from billgw.gateway.states import ALLOWED, APPROVED, State

S, E, A = State, Event, Action
NO_STATUS = {"can_query_status": False}


@pytest.mark.parametrize("facts, event, state, actions", [
    # Taken into the intake: approved, no receipt, polled.
    (Facts(S.POSTING), E.BILLER_ACCEPTED, S.ACCEPTED, (A.QUERY_STATUS,)),
    (Facts(S.POSTING, advice_received=True), E.BILLER_ACCEPTED, S.ACCEPTED, (A.QUERY_STATUS,)),
    # ... unless the switch reversed it meanwhile: withdraw it at once.
    (Facts(S.POSTING, reversal_requested=True), E.BILLER_ACCEPTED, S.REVERSING, (A.REVERSE,)),
    (Facts(S.POSTING, reversal_requested=True, can_reverse=False), E.BILLER_ACCEPTED, S.EXCEPTION, ()),
    # The batch ran: booked -> CONFIRMED and only now the receipt; rejected -> a person refunds.
    (Facts(S.ACCEPTED), E.STATUS_POSTED, S.CONFIRMED, (A.QUEUE_RECEIPT,)),
    (Facts(S.ACCEPTED), E.STATUS_REJECTED, S.EXCEPTION, ()),
    (Facts(S.ACCEPTED), E.STATUS_NOT_FOUND, S.EXCEPTION, ()),
    (Facts(S.ACCEPTED), E.STATUS_REVERSED, S.EXCEPTION, ()),
    (Facts(S.ACCEPTED), E.STATUS_ACCEPTED, S.ACCEPTED, ()),
    (Facts(S.ACCEPTED), E.OUTBOX_EXPIRED, S.EXCEPTION, ()),
    # A reversal (0420) of an accepted payment withdraws it where the biller allows.
    (Facts(S.ACCEPTED), E.REVERSAL_RECEIVED, S.REVERSING, (A.REVERSE,)),
    (Facts(S.ACCEPTED, can_reverse=False), E.REVERSAL_RECEIVED, S.EXCEPTION, ()),
    (Facts(S.ACCEPTED), E.ADVICE_RECEIVED, S.ACCEPTED, ()),
    (Facts(S.REVERSING, reversal_requested=True), E.STATUS_REJECTED, S.REVERSED, ()),
    # In doubt, and the status says "in the intake".
    (Facts(S.IN_DOUBT), E.STATUS_ACCEPTED, S.REVERSING, (A.REVERSE,)),
    (Facts(S.IN_DOUBT, advice_received=True), E.STATUS_ACCEPTED, S.ACCEPTED, (A.QUERY_STATUS,)),
    (Facts(S.IN_DOUBT), E.STATUS_REJECTED, S.DECLINED, ()),
    (Facts(S.IN_DOUBT, advice_received=True), E.STATUS_REJECTED, S.EXCEPTION, ()),
    # No status queries: the switch still gets its time to advise or
    # reverse (the STATUS item is only the moment to settle), then the
    # biller's own means settle it.
    (Facts(S.POSTING, **NO_STATUS), E.BILLER_NO_ANSWER, S.IN_DOUBT, (A.QUERY_STATUS,)),
    (Facts(S.POSTING, **NO_STATUS), E.STALE, S.IN_DOUBT, (A.QUERY_STATUS,)),
    (Facts(S.IN_DOUBT, advice_received=True, **NO_STATUS), E.NO_STATUS, S.POSTING, (A.POST,)),
    (Facts(S.IN_DOUBT, **NO_STATUS), E.NO_STATUS, S.REVERSING, (A.REVERSE,)),
    (Facts(S.IN_DOUBT, can_reverse=False, **NO_STATUS), E.NO_STATUS, S.EXCEPTION, ()),
    (Facts(S.IN_DOUBT, **NO_STATUS), E.ADVICE_RECEIVED, S.POSTING, (A.POST,)),
    (Facts(S.POSTING, **NO_STATUS), E.BILLER_ACCEPTED, S.ACCEPTED, ()),
    (Facts(S.ACCEPTED, **NO_STATUS), E.NO_STATUS, S.ACCEPTED, ()),
])
def test_transition(facts, event, state, actions):
    decision = decide(facts, event)
    assert (decision.state, decision.actions) == (state, actions)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
@pytest.mark.parametrize("rev", [False, True])
@pytest.mark.parametrize("adv", [False, True])
@pytest.mark.parametrize("can_reverse", [False, True])
@pytest.mark.parametrize("can_query_status", [False, True])
def test_money_rules_hold_for_every_decision(state, event, rev, adv, can_reverse, can_query_status):
    facts = Facts(state, reversal_requested=rev, advice_received=adv, can_reverse=can_reverse,
                  can_query_status=can_query_status)
    decision = decide(facts, event)
    assert decision.state is state or decision.state in ALLOWED[state]
    # A biller that answers no status queries gets its STATUS item only as
    # the moment to settle an in-doubt payment (the worker never sends it).
    if not can_query_status and Action.QUERY_STATUS in decision.actions:
        assert decision.state is State.IN_DOUBT
    # The receipt only with CONFIRMED: never for ACCEPTED.
    if Action.QUEUE_RECEIPT in decision.actions:
        assert decision.state is State.CONFIRMED
    # Only the biller's booking turns an accepted payment into a confirmed one.
    if state is State.ACCEPTED and decision.state is State.CONFIRMED:
        assert event is Event.STATUS_POSTED
    # A payment the switch reversed is never left approved.
    if rev and decision.state is not state:
        assert decision.state not in APPROVED


def test_accepted_is_an_approved_state_and_not_an_unsettled_one():
    from billgw.gateway.states import UNSETTLED

    assert State.ACCEPTED in APPROVED and State.ACCEPTED not in UNSETTLED
