"""Misbehaving telecom billers, one misbehaviour per subclass of the site's
:class:`~.site.TelecomResource` (Jasmin's simulator family), and for chaos
runs a seeded mix of them drawn per request (:class:`FaultOptions`,
:class:`FaultyTelecomResource`).

Refusing reversals is not here: it is biller policy, a simulator option
(``reversal_policy="never"``), not a fault.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.web import server

from .back_office import TelecomSimulator
from .site import TelecomResource


class SlowTelecomResource(TelecomResource):
    """A biller that takes ``delay`` seconds on ``clock`` before it even
    starts on a request -- or, with ``delay=None``, never answers at all.

    The request is still processed after the delay if the client has gone:
    a real biller does not know the gateway gave up (IN_DOUBT).
    """

    def __init__(self, simulator: TelecomSimulator, *, clock, delay: float | None = None):
        super().__init__(simulator)
        self._clock = clock
        self._delay = delay

    def answer(self, action: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        if self._delay is None:
            return Deferred()
        return deferLater(self._clock, self._delay, lambda: None).addCallback(
            lambda _: super(SlowTelecomResource, self).answer(action, body)
        )


# What a crashed front end answers: not SOAP, so the adapter cannot read a fault.
HTML_500 = b"<html><body><h1>500 Internal Server Error</h1></body></html>"


class FailingTelecomResource(TelecomResource):
    """A biller whose front end crashes: HTTP 500 with an HTML page, no
    SOAP fault, nothing recorded."""

    def answer(self, action: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        return succeed((500, HTML_500))


class GarbageTelecomResource(TelecomResource):
    """A biller that processes the request, then answers HTTP 200 with
    bytes that are not XML: the posting exists, the answer is useless."""

    def deliver(self, request: server.Request, code: int, body: bytes) -> None:
        super().deliver(request, 200, b"<soap:Envelope><<<\x00 not xml")


class PostThenDropResource(TelecomResource):
    """A biller that records the request, then drops the connection without
    answering: the IN_DOUBT case the gateway must resolve by a status query."""

    def deliver(self, request: server.Request, code: int, body: bytes) -> None:
        self.log.info("telecom_sim_dropping_connection")
        request.channel.transport.abortConnection()


# --- fault injection for chaos tests -----------------------------------------

FAULT_SLOW = "slow"
FAULT_ERROR = "error"
FAULT_DROP_AFTER_POST = "drop_after_post"
FAULT_DROP_BEFORE = "drop_before"
FAULT_KINDS = (FAULT_DROP_BEFORE, FAULT_ERROR, FAULT_SLOW, FAULT_DROP_AFTER_POST)
# What the gateway needs to settle an in-doubt payment: never faulted by the
# posting rates, or an in-doubt payment could never be resolved.
SETTLING_OPERATIONS = ("GetPaymentStatus", "ReversePayment")
FAULTABLE_OPERATIONS = ("PostPayment", "GetBills")

# (code, body) sentinel: drop the connection instead of answering.
_DROP = -1


@dataclass(frozen=True)
class FaultOptions:
    """How often the biller misbehaves, drawn per request from ``seed``.

    The rates are probabilities per request of an operation in
    ``operations`` (PostPayment by default; add GetBills if inquiries should
    suffer too); at most one fault per request, so their sum must be <= 1.

    - ``slow``: wait ``slow_seconds`` on the simulator's clock, then process
      and answer (if the client is still there) -- longer than the gateway's
      biller timeout, it makes payments IN_DOUBT that are in fact posted;
    - ``error``: HTTP 500 with an HTML page, nothing processed;
    - ``drop_after_post``: process (the posting is recorded), then drop the
      connection without an answer;
    - ``drop_before``: drop the connection before processing anything.

    GetPaymentStatus and ReversePayment, which the gateway uses to settle
    in-doubt payments, only fail with ``settle_error_rate`` (HTTP 500,
    nothing done), zero by default.
    """

    seed: int = 0
    slow_rate: float = 0.0
    slow_seconds: float = 12.0
    error_rate: float = 0.0
    drop_after_post_rate: float = 0.0
    drop_before_rate: float = 0.0
    settle_error_rate: float = 0.0
    operations: tuple[str, ...] = ("PostPayment",)

    def __post_init__(self):
        for name in ("slow_rate", "error_rate", "drop_after_post_rate", "drop_before_rate", "settle_error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        total = self.slow_rate + self.error_rate + self.drop_after_post_rate + self.drop_before_rate
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault rates add up to {total:g}; at most 1 fault per request")
        if not self.slow_seconds > 0:
            raise ValueError(f"slow_seconds must be positive, not {self.slow_seconds}")
        unknown = set(self.operations) - set(FAULTABLE_OPERATIONS)
        if unknown:
            raise ValueError(f"faults apply to {FAULTABLE_OPERATIONS} only, not {sorted(unknown)}")

    @property
    def active(self) -> bool:
        return any((self.slow_rate, self.error_rate, self.drop_after_post_rate, self.drop_before_rate,
                    self.settle_error_rate))

    def choose(self, rng: random.Random, operation: str) -> str | None:
        """The fault for one request of ``operation`` (None: behave).

        One draw per request whatever the operation, so the sequence of
        faults depends only on the seed and the order of requests.
        """
        draw = rng.random()
        if operation in SETTLING_OPERATIONS:
            return FAULT_ERROR if draw < self.settle_error_rate else None
        if operation not in self.operations:
            return None
        threshold = 0.0
        for kind, rate in ((FAULT_DROP_BEFORE, self.drop_before_rate), (FAULT_ERROR, self.error_rate),
                           (FAULT_SLOW, self.slow_rate), (FAULT_DROP_AFTER_POST, self.drop_after_post_rate)):
            threshold += rate
            if draw < threshold:
                return kind
        return None


class FaultyTelecomResource(TelecomResource):
    """A biller that misbehaves now and then, as :class:`FaultOptions` says.

    Each misbehaviour does what the matching single-fault resource above
    does (``drop_before`` aside, which has none), picked per request by a
    seeded RNG so a chaos run is repeatable; ``fault_counts``
    says how many of each were injected.  The operation is read from the
    SOAPAction header (cheap, before any parsing); a request whose header
    lies about its body gets no fault and is refused by the normal path.
    """

    def __init__(self, simulator: TelecomSimulator, *, clock, faults: FaultOptions):
        super().__init__(simulator)
        self._clock = clock
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self.fault_counts: Counter[str] = Counter()

    def answer(self, action: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        operation = action[len(self.soap_action_prefix):] if action.startswith(self.soap_action_prefix) else ""
        kind = self.faults.choose(self._rng, operation)
        if kind is None:
            return super().answer(action, body)
        self.fault_counts[kind] += 1
        self.log.info("telecom_sim_fault_injected", fault=kind, operation=operation)
        if kind == FAULT_DROP_BEFORE:
            return succeed((_DROP, b""))
        if kind == FAULT_ERROR:
            return succeed((500, HTML_500))
        if kind == FAULT_SLOW:
            return deferLater(self._clock, self.faults.slow_seconds, lambda: None).addCallback(
                lambda _: super(FaultyTelecomResource, self).answer(action, body))
        return super().answer(action, body).addCallback(lambda result: (_DROP, result[1]))

    def deliver(self, request: server.Request, code: int, body: bytes) -> None:
        if code == _DROP:
            request.channel.transport.abortConnection()
            return
        super().deliver(request, code, body)
