"""The SMSC simulator's misbehaving variants, after Jasmin's family: one
subclass of the happy simulator (:class:`~billgw.sms.smsc_happy.SmscFactory`)
per misbehaviour, each overriding only what it changes -- mostly
:meth:`~billgw.sms.smsc_happy.SmscFactory.respond_to_submit`.  They
cooperate through ``super()``, so a test may combine two (a class deriving
from ``ThrottleEveryNthSMSC`` and ``DropMidWindowSMSC`` throttles and drops).
Time is the factory's clock: nothing here touches the global reactor.
"""
from __future__ import annotations

from billgw.sms import smpp_pdu as p
from billgw.sms.smsc_happy import SmscFactory


class ErrorOnSubmitSMSC(SmscFactory):
    """Answers every submit_sm with an error status (default: throttled)."""

    def __init__(self, clock, *, error_status: int = p.ESME_RTHROTTLED, **kwargs):
        super().__init__(clock, **kwargs)
        self.error_status = error_status

    def respond_to_submit(self, proto, pdu, sm) -> None:
        proto.respond(pdu, self.error_status)


class NoResponseOnSubmitSMSC(SmscFactory):
    """Never answers submit_sm (but still answers enquire_link)."""

    def respond_to_submit(self, proto, pdu, sm) -> None:
        pass


class DropOnSubmitSMSC(SmscFactory):
    """Closes the connection on submit_sm, ``drops`` times (None: always),
    then behaves; so a test can watch an ESME rebind and succeed."""

    def __init__(self, clock, *, drops: int | None = None, **kwargs):
        super().__init__(clock, **kwargs)
        self.drops_left = drops

    def respond_to_submit(self, proto, pdu, sm) -> None:
        if self.drops_left is None or self.drops_left > 0:
            if self.drops_left is not None:
                self.drops_left -= 1
            proto.transport.abortConnection()
            return
        super().respond_to_submit(proto, pdu, sm)


class ThrottleEveryNthSMSC(SmscFactory):
    """Refuses every ``n``-th submit_sm with ``error_status`` (default 0x58
    throttled; 0x14 makes it a queue-full SMSC) and accepts the rest."""

    def __init__(self, clock, *, n: int = 5, error_status: int = p.ESME_RTHROTTLED, **kwargs):
        super().__init__(clock, **kwargs)
        self.n = n
        self.error_status = error_status
        self.refused = 0

    def respond_to_submit(self, proto, pdu, sm) -> None:
        if self.submits_received % self.n == 0:
            self.refused += 1
            proto.respond(pdu, self.error_status)
            return
        super().respond_to_submit(proto, pdu, sm)


class DropMidWindowSMSC(SmscFactory):
    """Every ``every``-th submit_sm is taken (recorded as received) and then
    the connection is dropped before any answer: the ESME's window holds
    submits the SMSC may or may not have, the ambiguous case."""

    def __init__(self, clock, *, every: int = 50, **kwargs):
        super().__init__(clock, **kwargs)
        self.every = every
        self.drops = 0

    def respond_to_submit(self, proto, pdu, sm) -> None:
        if self.submits_received % self.every == 0:
            self.drops += 1
            message_id = f"{self.message_id_prefix}{next(self._ids):06d}"
            self.accept(proto.system_id or "", sm, message_id)  # taken, never answered
            proto.transport.abortConnection()
            return
        super().respond_to_submit(proto, pdu, sm)


class RefuseBindSMSC(SmscFactory):
    """Refuses every bind with ``status`` (default 0x0E, invalid password)."""

    def __init__(self, clock, *, status: int = p.ESME_RINVPASWD, **kwargs):
        super().__init__(clock, **kwargs)
        self.status = status

    def bind_received(self, proto, pdu, req) -> None:
        self.binds.append((req.system_id, p.BINDS[pdu.command_id], self.status))
        proto.respond(pdu, self.status)


class SlowSMSC(SmscFactory):
    """Answers each submit_sm after ``delay`` seconds on the factory's clock:
    the round trip of a busy SMSC, where only a window keeps the rate up."""

    def __init__(self, clock, *, delay: float = 0.05, **kwargs):
        super().__init__(clock, **kwargs)
        self.delay = delay
        self.outstanding = 0  # submits received, not yet answered
        self.max_outstanding = 0  # the ESME's window, as seen from here

    def respond_to_submit(self, proto, pdu, sm) -> None:
        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)

        def answer():
            self.outstanding -= 1
            if proto.transport is not None and not proto.transport.disconnecting and proto.bound_as:
                SmscFactory.respond_to_submit(self, proto, pdu, sm)

        self.clock.callLater(self.delay, answer)
