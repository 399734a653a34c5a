"""Transaction states and the transitions between them (pure).

A payment moves RECEIVED -> POSTING -> CONFIRMED or DECLINED; a biller that
does not answer in time leaves it IN_DOUBT until a status query or a
reversal settles it.  A biller that records later (contract v2, a database
biller's intake table) leaves it ACCEPTED -- the switch was approved, no
receipt yet -- until its batch books it (CONFIRMED, the receipt goes out)
or rejects it (EXCEPTION: a person refunds).  An inquiry ends ANSWERED or DECLINED.  Every state
change goes through :func:`check_transition`, so an impossible move (say,
DECLINED -> CONFIRMED) is a bug caught where it happens.
"""
from __future__ import annotations

import enum


class State(enum.Enum):
    RECEIVED = "RECEIVED"
    POSTING = "POSTING"
    CONFIRMED = "CONFIRMED"
    ACCEPTED = "ACCEPTED"  # in the biller's intake: approved, recorded by its batch later
    DECLINED = "DECLINED"
    IN_DOUBT = "IN_DOUBT"
    REVERSING = "REVERSING"  # to be undone at the biller (outbox item pending)
    REVERSED = "REVERSED"
    EXCEPTION = "EXCEPTION"
    ANSWERED = "ANSWERED"



ALLOWED: dict[State, frozenset[State]] = {
    # EXCEPTION from RECEIVED: an advice for a payment that cannot be posted.
    State.RECEIVED: frozenset({State.POSTING, State.DECLINED, State.ANSWERED, State.EXCEPTION}),
    State.POSTING: frozenset({State.CONFIRMED, State.DECLINED, State.IN_DOUBT, State.REVERSING,
                              State.EXCEPTION, State.ACCEPTED}),
    State.IN_DOUBT: frozenset({State.CONFIRMED, State.DECLINED, State.POSTING, State.REVERSING,
                               State.REVERSED, State.EXCEPTION, State.ACCEPTED}),
    # The biller's batch booked it (CONFIRMED), rejected it (EXCEPTION), or
    # the switch reversed it first (REVERSING: the intake row is withdrawn).
    State.ACCEPTED: frozenset({State.CONFIRMED, State.EXCEPTION, State.REVERSING, State.REVERSED}),
    State.CONFIRMED: frozenset({State.REVERSING, State.EXCEPTION}),
    # An advice says the customer was debited: post it, or (when it breaks
    # the local rules) a person refunds.
    State.DECLINED: frozenset({State.POSTING, State.EXCEPTION}),
    State.REVERSING: frozenset({State.REVERSED, State.EXCEPTION}),
    # An advice after the gateway undid an in-doubt payment on its own.
    State.REVERSED: frozenset({State.EXCEPTION}),
    State.EXCEPTION: frozenset(),
    State.ANSWERED: frozenset(),
}

# Payments in these states have work left that the gateway itself owns.
UNSETTLED = frozenset({State.RECEIVED, State.POSTING, State.IN_DOUBT, State.REVERSING})

# The switch was (or is) told "approved" (00) for payments in these states.
APPROVED = frozenset({State.CONFIRMED, State.ACCEPTED})


class IllegalTransition(RuntimeError):
    pass


def check_transition(current: State, new: State) -> None:
    if new not in ALLOWED[current]:
        raise IllegalTransition(f"{current.value} -> {new.value} is not allowed")


def sources_of(new: State) -> frozenset[State]:
    """The states from which ``new`` may be entered."""
    return frozenset(s for s, targets in ALLOWED.items() if new in targets)
