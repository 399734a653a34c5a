"""A bank switch on Twisted: the load generator that proves the gateway under stress.

``atm-sim pay`` is one ATM doing one payment; this module is what really sits
in front of the gateway: a bank switch with a few persistent, signed-on
connections, many payments in flight, and the switch's own rules for money
it cannot account for.  It behaves as a real switch does, so that what it
ends up believing about every payment (its *view*) can be compared with the
biller's ledger:

- 0200 payment; an 0210 within ``answer_timeout`` decides it (00 approved
  and kept; anything else declined, nothing debited);
- no 0210 in time: the switch gives up, refunds the customer and sends an
  0420 reversal (F39 = 68), repeated as 0421 with the same F11/F7 every
  ``repeat_interval`` -- across reconnects -- until an 0430 arrives; an 0210
  that turns up after the reversal started is ignored;
- stand-in (``advice_rate``): the switch debited the customer without our
  0210 and sends an 0220 advice (same fields and keys as the 0200, F39 = 68
  as its reason), repeated
  as 0221 until an 0230: the payment is kept whatever the gateway said;
  an 0230/0430 with a code that says the gateway could not take the message
  in (96, 91...) is not an acknowledgement: the repeats go on;
- customer cancel (``cancel_rate``): an 0420 (F39 = 17) for an approved
  payment, repeated until 0430; the approval is then not kept;
- pipelined reversal (``pipelined_reversal_rate``): the 0420 (F39 = 17) is
  written on the same link right behind its 0200, before any answer -- the
  two are in flight together at the gateway; the payment is not kept;
- advice outside the rules (``rule_breaking_advice_rate``): a stand-in
  advice for an amount the gateway's service rules refuse
  (``rule_breaking_amount``, below the minimum): the switch debited the
  customer, and the gateway must acknowledge it and hand it to a person,
  never post it.  The report marks these by their role, so a checker knows
  the biller must NOT hold them;
- exact duplicates (``duplicate_rate``): the same 0200 bytes sent again,
  while the first is outstanding or after its answer; an answer to a
  duplicate is the same payment, counted once by its keys.

The gateway is matched by the interface's keys: each answer's MTI + F11 + F7
routes it to the payment (or reversal) that sent them, whatever connection
and order it arrives on.  The gateway's own 0800 echo tests are answered.

Everything is bounded: the number of payments, the concurrency, the start
rate, the repeats of each reversal and advice (``max_repeats``) and the
whole run (``max_duration``, after which repeats stop and what is still
unacknowledged is reported as such).  Time comes from the injected clock;
connections reconnect with backoff through Twisted's ``ClientService``, and
sign on (0800/001) before carrying traffic.  Only loopback addresses are
accepted: a load generator must not be aimed at a production gateway by a
typo.

:func:`run_switch` fires with a :class:`SwitchReport`, written as JSON by
``atm-sim load``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, DeferredSemaphore, TimeoutError, gatherResults, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.examples import TEST_PAN
from billgw.iso8583.framing import Framer, FramingError, encode_frame
from billgw.iso8583.messages import (
    DecodedResponse,
    MessageFormatError,
    OriginalData,
    decode_response,
    encode_fields,
)

from .client import PAYMENT_PROCESSING_CODE, Terminal, bill_fields, network_fields, transmission_datetime

# F39 of a reversal: why the switch reverses (ISO 8583:1987 codes).
REASON_LATE = "68"  # response received too late (switch timed out)
REASON_CUSTOMER_CANCEL = "17"  # customer cancellation

VIEW_KEPT = "kept"
VIEW_REVERSED = "reversed"
VIEW_DECLINED = "declined"

SIGN_ON = "001"
# Answers to an advice or reversal after which repeating cannot help: taken
# in (00), or refused for good (94 other transaction, 30 format error).
FINAL_ACKNOWLEDGEMENT_CODES = frozenset({"00", "94", "30"})
MAX_STAN = 999_999
MAX_PAYMENTS = 1_000_000
# How long the end of a run waits for its connections to close (a gateway
# that stopped reading would otherwise hold loseConnection for ever).
STOP_TIMEOUT = 5.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SwitchPlan:
    """What to send and how the switch behaves; every loop's bound is here."""

    count: int = 100
    subscribers: tuple[str, ...] = ("0790000000",)
    amount_min: int = 1_000  # minor units (1.000 JOD)
    amount_max: int = 50_000
    biller: str = "TEL"
    service: str = "MOBILE"
    currency: str = "400"
    acquirer_id: str = "123456"
    forwarder_id: str | None = None
    terminals: int = 4  # ATM00001 ... ATMnnnnn
    msisdn_prefix: str | None = "962"  # F48 MS = prefix + billing number without its 0; None: no SMS
    arabic_rate: float = 0.2
    concurrency: int = 20  # payments in flight at most
    rate: float = 20.0  # payments started per second at most
    connections: int = 2
    duplicate_rate: float = 0.1
    advice_rate: float = 0.05
    cancel_rate: float = 0.05
    advice_without_0200_rate: float = 0.3  # of the advices: stand-in without any 0200 reaching the gateway
    pipelined_reversal_rate: float = 0.0
    rule_breaking_advice_rate: float = 0.0
    rule_breaking_amount: int = 50  # minor units: below the packaged services' 0.100 JOD minimum
    seed: int = 0
    answer_timeout: float = 8.0  # the switch's own wait for an 0210
    repeat_interval: float = 3.0  # between 0421s / 0221s
    max_repeats: int = 100  # sends of one reversal or advice, at most
    connect_wait: float = 2.0  # how long a new payment waits for a link before the switch declines it
    sign_on_timeout: float = 5.0
    reconnect_max_delay: float = 2.0
    max_duration: float = 300.0  # the whole run
    framing: str = "binary2"
    max_frame: int = 4096
    first_stan: int | None = None  # default: from the clock, so reruns use new keys
    # Open loop: payments start at ``rate`` whatever is still in flight (no
    # concurrency cap), and a 0210's latency counts from the moment its 0200
    # was due, so a server that falls behind shows its queueing instead of
    # slowing the load down.  Closed loop (the default): at most
    # ``concurrency`` in flight, latency from the actual send.
    open_loop: bool = False

    def __post_init__(self):
        if not 1 <= self.count <= MAX_PAYMENTS:
            raise ValueError(f"count must be 1..{MAX_PAYMENTS}")
        if not self.subscribers:
            raise ValueError("at least one subscriber is needed")
        if not 0 < self.amount_min <= self.amount_max:
            raise ValueError("amounts must satisfy 0 < amount_min <= amount_max")
        for name in ("duplicate_rate", "advice_rate", "cancel_rate", "arabic_rate", "advice_without_0200_rate",
                     "pipelined_reversal_rate", "rule_breaking_advice_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if sum(rate for _, rate in self.role_rates()) > 1.0:
            raise ValueError("advice_rate + cancel_rate + pipelined_reversal_rate + rule_breaking_advice_rate "
                             "must not exceed 1 (a payment has one role)")
        if self.rule_breaking_amount < 1:
            raise ValueError("rule_breaking_amount must be positive")
        for name in ("answer_timeout", "repeat_interval", "connect_wait", "sign_on_timeout",
                     "reconnect_max_delay", "max_duration", "rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not 1 <= self.concurrency <= 10_000 or not 1 <= self.connections <= 64:
            raise ValueError("concurrency must be 1..10000 and connections 1..64")
        if not 1 <= self.terminals <= 99_999 or not 1 <= self.max_repeats <= 10_000:
            raise ValueError("terminals must be 1..99999 and max_repeats 1..10000")


    def role_rates(self) -> tuple[tuple[str, float], ...]:
        """Each special role and its share; the rest are plain payments.
        The order is fixed: a plan that leaves the newer roles at 0 draws
        exactly the payments it drew before they existed."""
        return ((ROLE_ADVICE, self.advice_rate), (ROLE_CANCEL, self.cancel_rate),
                (ROLE_PIPELINED_REVERSAL, self.pipelined_reversal_rate),
                (ROLE_RULE_BREAKING_ADVICE, self.rule_breaking_advice_rate))


ROLE_PLAIN = "plain"
ROLE_ADVICE = "advice"
ROLE_CANCEL = "cancel"
ROLE_PIPELINED_REVERSAL = "pipelined_reversal"
ROLE_RULE_BREAKING_ADVICE = "advice_outside_rules"
ADVICE_ROLES = frozenset({ROLE_ADVICE, ROLE_RULE_BREAKING_ADVICE})


@dataclass(frozen=True)
class PlannedPayment:
    """One payment as drawn from the seed, before any key is assigned."""

    index: int
    subscriber: str
    amount: int
    terminal_id: str
    language: str
    msisdn: str | None
    role: str  # one of the ROLE_* names
    duplicate: str | None  # None | "outstanding" | "after"
    duplicate_delay: float  # seconds after the 0200, when "outstanding"
    advice_without_0200: bool  # stand-in while the link was down: only the 0220 goes out
    advice_delay: float  # seconds between the 0200 and the 0220
    cancel_delay: float  # seconds between the approval and the customer's cancel


def plan_payments(plan: SwitchPlan) -> list[PlannedPayment]:
    """Every payment's subscriber, amount and role, from ``plan.seed`` alone
    (the same seed gives the same run, whatever the network does)."""
    rng = random.Random(plan.seed)
    planned = []
    for index in range(plan.count):
        subscriber = rng.choice(plan.subscribers)
        amount = rng.randint(plan.amount_min, plan.amount_max)
        terminal_id = f"ATM{rng.randrange(plan.terminals) + 1:05d}"
        language = "ar" if rng.random() < plan.arabic_rate else "en"
        draw = rng.random()
        role, threshold = ROLE_PLAIN, 0.0
        for name, rate in plan.role_rates():
            threshold += rate
            if draw < threshold:
                role = name
                break
        if role == ROLE_RULE_BREAKING_ADVICE:
            amount = plan.rule_breaking_amount
        duplicate = None
        if rng.random() < plan.duplicate_rate:
            duplicate = rng.choice(("outstanding", "after"))
        planned.append(PlannedPayment(
            index=index, subscriber=subscriber, amount=amount, terminal_id=terminal_id, language=language,
            msisdn=(plan.msisdn_prefix + subscriber.lstrip("0")) if plan.msisdn_prefix else None,
            role=role, duplicate=duplicate,
            # Soon after the 0200, so that the duplicate often meets its original in flight.
            duplicate_delay=rng.uniform(0.0, min(0.2, plan.answer_timeout * 0.5)),
            advice_without_0200=rng.random() < plan.advice_without_0200_rate,
            advice_delay=rng.uniform(0.0, min(1.0, plan.answer_timeout * 0.5)),
            cancel_delay=rng.uniform(0.0, 1.0),
        ))
    return planned


class _Latch:
    """A value set once, awaited with a deadline on the injected clock (a
    timed-out wait fires with None and leaves the latch usable: the next
    repeat waits again for the same answer)."""

    def __init__(self, clock):
        self._clock = clock
        self.is_set = False
        self.value: Any = None
        self._waiters: list[tuple[Deferred, Any]] = []

    def set(self, value) -> None:
        if self.is_set:
            return
        self.is_set = True
        self.value = value
        waiters, self._waiters = self._waiters, []
        for d, call in waiters:
            if call.active():
                call.cancel()
            d.callback(value)

    def wait(self, seconds: float) -> Deferred:
        if self.is_set:
            return succeed(self.value)
        d: Deferred = Deferred()

        def expire():
            self._waiters = [(w, c) for w, c in self._waiters if w is not d]
            d.callback(None)

        self._waiters.append((d, self._clock.callLater(max(0.0, seconds), expire)))
        return d


@dataclass
class _Exchange:
    """A reversal or an advice: sent once, repeated until acknowledged."""

    mti: str  # 0420 or 0220
    stan: str
    transmission_datetime: str
    reason: str | None = None
    sends: int = 0
    acknowledged: bool = False
    response_code: str | None = None
    ack_latency: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class PaymentRun:
    """What happened to one payment, from the switch's side."""

    planned: PlannedPayment
    stan: str | None = None
    transmission_datetime: str | None = None
    rrn: str | None = None
    fields: dict[str, str] | None = None
    state: str = "planned"  # planned, not_sent, waiting, approved, declined, reversing, advising
    response_code: str | None = None
    payment_reference: str | None = None
    receipt_number: str | None = None
    latency: float | None = None
    sent_at: float | None = None
    due_at: float | None = None  # when the plan meant it to start (open loop measures from here)
    sends_0200: int = 0
    timed_out: bool = False
    duplicate_answers: int = 0
    late_answers: int = 0
    late_approvals: int = 0
    anomalies: list[str] = field(default_factory=list)
    reversal: _Exchange | None = None
    advice: _Exchange | None = None
    error: str | None = None
    # One per duplicate sent: set by the second, third... 0210 with these keys.
    duplicate_latches: list = field(default_factory=list, repr=False)

    @property
    def view(self) -> str:
        """The switch's final belief: was the customer's money kept for the biller?"""
        if self.reversal is not None:
            return VIEW_REVERSED
        if self.advice is not None or self.state == "approved":
            return VIEW_KEPT
        return VIEW_DECLINED

    def as_dict(self, acquirer_id: str) -> dict:
        p = self.planned
        return {
            "index": p.index,
            "keys": {"acquirer_id": acquirer_id, "terminal_id": p.terminal_id, "stan": self.stan,
                     "transmission_datetime": self.transmission_datetime},
            "rrn": self.rrn,
            "subscriber": p.subscriber,
            "amount": p.amount,
            "language": p.language,
            "role": p.role,
            "duplicate": p.duplicate,
            "view": self.view,
            "state": self.state,
            "response_code": self.response_code,
            "payment_reference": self.payment_reference,
            "receipt_number": self.receipt_number,
            "latency": self.latency,
            "sends_0200": self.sends_0200,
            "timed_out": self.timed_out,
            "duplicate_answers": self.duplicate_answers,
            "late_answers": self.late_answers,
            "late_approvals": self.late_approvals,
            "reversal": self.reversal.as_dict() if self.reversal else None,
            "advice": self.advice.as_dict() if self.advice else None,
            "anomalies": list(self.anomalies),
            "error": self.error,
        }


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, int(round(fraction * (len(sorted_values) - 1)))))
    return sorted_values[rank]


@dataclass
class SwitchReport:
    """The run as the switch saw it; ``to_dict`` is the JSON report."""

    plan: SwitchPlan
    payments: list[dict]
    started_at: float
    duration: float
    messages_sent: dict[str, int]
    messages_received: dict[str, int]
    link: dict[str, int]
    latencies: list[float]

    @property
    def counts(self) -> dict[str, int]:
        views = Counter(p["view"] for p in self.payments)
        return {
            "payments": len(self.payments),
            "not_sent": sum(1 for p in self.payments if p["state"] == "not_sent"),
            "approved": sum(1 for p in self.payments if p["response_code"] == "00" and p["advice"] is None),
            "declined": views[VIEW_DECLINED],
            "kept": views[VIEW_KEPT],
            "reversed": views[VIEW_REVERSED],
            "timed_out": sum(1 for p in self.payments if p["timed_out"]),
            "cancelled": sum(1 for p in self.payments if p["reversal"] and p["reversal"]["reason"]
                             == REASON_CUSTOMER_CANCEL),
            "advised": sum(1 for p in self.payments if p["advice"] is not None),
            "duplicates_sent": sum(max(0, p["sends_0200"] - 1) for p in self.payments),
            "repeats": (self.messages_sent.get("0421", 0) + self.messages_sent.get("0221", 0)
                        + sum(max(0, p["sends_0200"] - 1) for p in self.payments)),
            "late_answers_ignored": sum(p["late_answers"] for p in self.payments),
            "late_approvals_ignored": sum(p["late_approvals"] for p in self.payments),
            "unacknowledged_reversals": sum(1 for p in self.payments if p["reversal"]
                                            and not p["reversal"]["acknowledged"]),
            "unacknowledged_advices": sum(1 for p in self.payments if p["advice"]
                                          and not p["advice"]["acknowledged"]),
            "anomalies": sum(len(p["anomalies"]) for p in self.payments),
            "errors": sum(1 for p in self.payments if p["error"]),
        }

    @property
    def kept_by_subscriber(self) -> dict[str, int]:
        """Sum of kept amounts per subscriber: what the biller must hold."""
        sums: Counter[str] = Counter()
        for p in self.payments:
            if p["view"] == VIEW_KEPT:
                sums[p["subscriber"]] += p["amount"]
        return dict(sorted(sums.items()))

    @property
    def latency(self) -> dict[str, float | None]:
        values = sorted(self.latencies)
        return {"count": len(values), "p50": _percentile(values, 0.5), "p90": _percentile(values, 0.9),
                "p99": _percentile(values, 0.99), "p99.9": _percentile(values, 0.999),
                "max": values[-1] if values else None}

    @property
    def all_acknowledged(self) -> bool:
        counts = self.counts
        return counts["unacknowledged_reversals"] == 0 and counts["unacknowledged_advices"] == 0

    def to_dict(self) -> dict:
        return {
            "plan": dataclasses.asdict(self.plan),
            "started_at": self.started_at,
            "duration": self.duration,
            "counts": self.counts,
            "kept_by_subscriber": self.kept_by_subscriber,
            "kept_total": sum(self.kept_by_subscriber.values()),
            "latency": self.latency,
            "messages_sent": dict(sorted(self.messages_sent.items())),
            "messages_received": dict(sorted(self.messages_received.items())),
            "link": dict(sorted(self.link.items())),
            "payments": self.payments,
        }

    def write(self, path) -> None:
        """The JSON report (blocking file write: call it off the reactor or
        after the run, as the CLI does)."""
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, ensure_ascii=False, indent=1)
            handle.write("\n")

    def summary(self) -> str:
        """The figures a person wants after a run."""
        c = self.counts
        lat = self.latency

        def ms(value):
            return "-" if value is None else f"{value * 1000:.0f} ms"

        lines = [
            f"payments   {c['payments']} in {self.duration:.1f} s "
            f"({self.messages_sent.get('0200', 0)} 0200 sent, {c['not_sent']} not sent: no link)",
            f"approved   {c['approved']}   declined {c['declined']}   advised {c['advised']}   "
            f"reversed {c['reversed']} (timeouts {c['timed_out']}, cancels {c['cancelled']})",
            f"kept       {c['kept']} payments, {sum(self.kept_by_subscriber.values())} minor units "
            f"over {len(self.kept_by_subscriber)} subscribers",
            f"repeats    {c['repeats']} (duplicate 0200 {c['duplicates_sent']}, "
            f"0421 {self.messages_sent.get('0421', 0)}, 0221 {self.messages_sent.get('0221', 0)}); "
            f"late 0210 ignored {c['late_answers_ignored']}",
            f"latency    0210 p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p99 {ms(lat['p99'])}  "
            f"max {ms(lat['max'])}  (n={lat['count']})",
            f"link       {self.link.get('connections', 0)} connections, {self.link.get('lost', 0)} lost, "
            f"{self.link.get('sign_on_failures', 0)} sign-on failures",
        ]
        if c["unacknowledged_reversals"] or c["unacknowledged_advices"]:
            lines.append(f"UNACKNOWLEDGED reversals {c['unacknowledged_reversals']}, "
                         f"advices {c['unacknowledged_advices']} (gave up after the bounds)")
        if c["anomalies"] or c["errors"]:
            lines.append(f"ANOMALIES {c['anomalies']}, errors {c['errors']} (see the JSON report)")
        return "\n".join(lines)


class SwitchProtocol(Protocol):
    """One connection: frames in and out, everything else is the switch's."""

    def __init__(self, switch: "Switch"):
        self.switch = switch
        self.framer = Framer(switch.plan.framing, switch.plan.max_frame)
        self.ready = False
        self.alive = False

    def connectionMade(self):
        self.alive = True
        self.switch.connection_made(self)

    def dataReceived(self, data: bytes):
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            self.switch.log.warning("switch_bad_frame", error=str(exc))
            self.transport.abortConnection()
            return
        for payload in frames:
            try:
                message = decode_response(payload)
            except MessageFormatError as exc:
                self.switch.received["unreadable"] += 1
                self.switch.log.warning("switch_unreadable_message", error=str(exc))
                continue
            self.switch.message_received(self, message)

    def connectionLost(self, reason=None):
        self.alive = False
        self.switch.connection_lost(self)

    def send(self, mti: str, fields: dict[str, str]) -> None:
        self.transport.write(encode_frame(encode_fields(mti, fields), self.switch.plan.framing))
        self.switch.sent[mti] += 1


class _SwitchFactory(Factory):
    noisy = False

    def __init__(self, switch: "Switch"):
        self.switch = switch

    def buildProtocol(self, addr):
        return SwitchProtocol(self.switch)


class Switch:
    """The run: connections, routing of answers, and one task per payment."""

    def __init__(self, reactor, host: str, port: int, plan: SwitchPlan, *, clock=None, log=None,
                 on_payment_started: Callable[[int], None] | None = None):
        if not _is_loopback(host):
            raise ValueError(f"the load generator only talks to loopback addresses, not {host!r}")
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.plan = plan
        # Told the index of each payment as it starts: lets a test act at a
        # point of the load (kill the gateway after the 30th payment...)
        # instead of at a wall-clock moment the load may already have passed.
        self._on_payment_started = on_payment_started or (lambda index: None)
        self.log = (log if log is not None else structlog.get_logger()).bind(component="switch")
        self.terminal = Terminal(acquirer_id=plan.acquirer_id)
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.link: Counter[str] = Counter()
        self.latencies: list[float] = []
        self._routes: dict[tuple[str, str, str], Callable[[DecodedResponse], None]] = {}
        self._ready: list[SwitchProtocol] = []
        self._ready_waiters: list[_Latch] = []
        self._next_link = 0
        self._timers: list = []
        self._deadline = float("inf")
        self._stan = (plan.first_stan if plan.first_stan is not None
                      else int(self.clock.seconds()) % MAX_STAN) % MAX_STAN
        endpoint_class = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        endpoint = endpoint_class(reactor, host, port, timeout=max(1, int(plan.sign_on_timeout)))
        self._services = [
            ClientService(endpoint, _SwitchFactory(self), clock=self.clock,
                          retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=plan.reconnect_max_delay,
                                                    factor=1.5, jitter=lambda: 0.0))
            for _ in range(plan.connections)
        ]

    # -- keys and time --------------------------------------------------------------

    def now(self) -> float:
        return self.clock.seconds()

    def next_stan(self) -> str:
        self._stan = self._stan % MAX_STAN + 1
        return f"{self._stan:06d}"

    def f7(self) -> str:
        return transmission_datetime(dt.datetime.fromtimestamp(self.now(), dt.timezone.utc))

    # -- connections ----------------------------------------------------------------

    def connection_made(self, protocol: SwitchProtocol) -> None:
        """Sign on before carrying traffic; a connection that does not get its
        0810/00 in time is dropped (ClientService reconnects)."""
        self.link["connections"] += 1
        stan, f7 = self.next_stan(), self.f7()
        answer = _Latch(self.clock)
        key = ("0810", stan, f7)
        self._routes[key] = answer.set
        protocol.send("0800", network_fields(SIGN_ON, stan=stan, f7=f7, terminal=self.terminal))

        def signed(response):
            self._routes.pop(key, None)
            if not protocol.alive:
                return
            if response is None or response.response_code != "00":
                self.link["sign_on_failures"] += 1
                self.log.warning("switch_sign_on_failed",
                                 response_code=None if response is None else response.response_code)
                protocol.transport.abortConnection()
                return
            protocol.ready = True
            self._ready.append(protocol)
            waiters, self._ready_waiters = self._ready_waiters, []
            for waiter in waiters:
                waiter.set(protocol)

        answer.wait(self.plan.sign_on_timeout).addCallback(signed)

    def connection_lost(self, protocol: SwitchProtocol) -> None:
        self.link["lost"] += 1
        if protocol in self._ready:
            self._ready.remove(protocol)
        protocol.ready = False

    def connection(self, wait: float) -> Deferred:
        """A signed-on connection (round robin), or None if none comes within ``wait``."""
        if self._ready:
            self._next_link = (self._next_link + 1) % len(self._ready)
            return succeed(self._ready[self._next_link])
        latch = _Latch(self.clock)
        self._ready_waiters.append(latch)

        def done(protocol):
            if latch in self._ready_waiters:
                self._ready_waiters.remove(latch)
            if protocol is not None and not protocol.ready:
                return None
            return protocol

        return latch.wait(wait).addCallback(done)

    def message_received(self, protocol: SwitchProtocol, message: DecodedResponse) -> None:
        self.received[message.mti] += 1
        if message.mti == "0800":
            # The gateway's echo test: answered as a switch must.
            fields = {f: message.fields[f] for f in ("7", "11", "32", "70") if f in message.fields}
            fields["39"] = "00"
            protocol.send("0810", fields)
            return
        handler = self._routes.get((message.mti, message.fields.get("11"), message.fields.get("7")))
        if handler is None:
            self.received["unmatched"] += 1
            self.log.warning("switch_unmatched_message", mti=message.mti, stan=message.fields.get("11"),
                             response_code=message.response_code)
            return
        handler(message)

    async def _send(self, mti: str, fields: dict[str, str], wait: float) -> bool:
        protocol = await self.connection(wait)
        if protocol is None:
            return False
        protocol.send(mti, fields)
        return True

    def sleep(self, seconds: float) -> Deferred:
        return _Latch(self.clock).wait(seconds)

    # -- the run --------------------------------------------------------------------

    async def run(self) -> SwitchReport:
        started = self.now()
        self._deadline = started + self.plan.max_duration
        runs = [PaymentRun(planned=p) for p in plan_payments(self.plan)]
        for service in self._services:
            service.startService()
        try:
            await self._launch(runs, started)
        finally:
            for timer in self._timers:
                if timer.active():
                    timer.cancel()
            # A plain Deferred in front: a timeout cancels it, not the
            # services' own stop (which may still finish later).
            stopped: Deferred = Deferred()
            gatherResults([service.stopService() for service in self._services]).chainDeferred(stopped)
            try:
                await stopped.addTimeout(STOP_TIMEOUT, self.clock)
            except TimeoutError:
                self.log.warning("switch_stop_timeout", timeout=STOP_TIMEOUT)
        return SwitchReport(
            plan=self.plan,
            payments=[r.as_dict(self.plan.acquirer_id) for r in runs],
            started_at=started,
            duration=self.now() - started,
            messages_sent=dict(self.sent),
            messages_received=dict(self.received),
            link=dict(self.link),
            latencies=list(self.latencies),
        )

    async def _launch(self, runs: list[PaymentRun], started: float) -> None:
        """Start payments at most ``rate`` per second and ``concurrency`` at a
        time; none starts after the deadline."""
        semaphore = DeferredSemaphore(MAX_PAYMENTS if self.plan.open_loop else self.plan.concurrency)
        tasks = []
        for run in runs:
            due = started + run.planned.index / self.plan.rate
            if due > self.now():
                await self.sleep(due - self.now())
            run.due_at = due
            await semaphore.acquire()
            if self.now() >= self._deadline:
                semaphore.release()
                run.state = "not_sent"
                continue
            task = Deferred.fromCoroutine(self._payment(run))
            task.addBoth(lambda result: semaphore.release())
            tasks.append(task)
            self._on_payment_started(run.planned.index)
        await gatherResults(tasks)

    async def _payment(self, run: PaymentRun) -> None:
        try:
            await self._payment_steps(run)
        except Exception as exc:  # one payment's bug must not stop the run; it is reported
            run.error = f"{type(exc).__name__}: {exc}"
            self.log.exception("switch_payment_failed", index=run.planned.index)

    async def _payment_steps(self, run: PaymentRun) -> None:
        p = run.planned
        run.stan, run.transmission_datetime = self.next_stan(), self.f7()
        bill = BillRequestData(biller_code=self.plan.biller, service_code=self.plan.service,
                               billing_number=p.subscriber, msisdn=p.msisdn, language=p.language)
        run.fields = bill_fields(PAYMENT_PROCESSING_CODE, amount_minor=p.amount, currency=self.plan.currency,
                                 bill=bill, stan=run.stan, f7=run.transmission_datetime,
                                 terminal=Terminal(self.plan.acquirer_id, p.terminal_id), pan=TEST_PAN)
        if self.plan.forwarder_id:
            run.fields["33"] = self.plan.forwarder_id
        run.rrn = run.fields["37"]
        answer = _Latch(self.clock)
        self._routes[("0210", run.stan, run.transmission_datetime)] = (
            lambda message: self._on_0210(run, answer, message))

        if p.role in ADVICE_ROLES and p.advice_without_0200:
            await self._advise(run)
            return
        link = await self.connection(self.plan.connect_wait)
        if link is None:
            if p.role in ADVICE_ROLES:  # stand-in precisely because the link is down
                await self._advise(run)
            else:
                run.state = "not_sent"
            return
        link.send("0200", run.fields)
        run.sends_0200 += 1
        run.sent_at = self.now()
        run.state = "waiting"
        if p.role == ROLE_PIPELINED_REVERSAL:
            await self._reverse(run, REASON_CUSTOMER_CANCEL, link=link)
            return
        if p.duplicate == "outstanding":
            self._duplicate_later(run, p.duplicate_delay)
        if p.role in ADVICE_ROLES:
            await self.sleep(p.advice_delay)
            await self._advise(run)
            return

        response = await answer.wait(self.plan.answer_timeout)
        if response is None:
            run.timed_out = True
            await self._reverse(run, REASON_LATE)
            return
        if p.duplicate == "after" and run.state in ("approved", "declined"):
            await self._send_duplicate(run)
        # Wait (bounded) for the duplicates' answers, so the report can say
        # whether the gateway answered them as it answered the original.
        for latch in list(run.duplicate_latches):
            await latch.wait(self.plan.answer_timeout)
        if run.state == "approved" and p.role == ROLE_CANCEL:
            await self.sleep(p.cancel_delay)
            await self._reverse(run, REASON_CUSTOMER_CANCEL)

    def _on_0210(self, run: PaymentRun, answer: _Latch, message: DecodedResponse) -> None:
        """Every 0210 with this payment's keys: the first decides (if in
        time); the others are answers to duplicates, or late."""
        code = message.response_code
        reference = message.bill.payment_reference if message.bill else None
        if run.state == "waiting" and run.reversal is None and not answer.is_set:
            run.latency = self.now() - (run.due_at if self.plan.open_loop else run.sent_at)
            self.latencies.append(run.latency)
            run.response_code = code
            if code == "00":
                run.state = "approved"
                run.payment_reference = reference
                run.receipt_number = message.bill.receipt_number if message.bill else None
            else:
                run.state = "declined"
            answer.set(message)
            return
        if run.reversal is not None and (run.reversal.reason == REASON_LATE or run.response_code is None):
            # The 0210 came after the switch had reversed (timed out, or
            # reversed before any answer): it decides nothing.
            run.late_answers += 1
            if code == "00":
                run.late_approvals += 1
                run.payment_reference = run.payment_reference or reference
            return
        if run.advice is not None:
            # Stand-in: the 0210 no longer decides, but its reference helps the audit.
            if code == "00" and reference:
                run.payment_reference = run.payment_reference or reference
                if reference != run.payment_reference:
                    run.anomalies.append(f"0210 reference {reference} differs from {run.payment_reference}")
            run.duplicate_answers += 1
            return
        run.duplicate_answers += 1
        if code != run.response_code:
            run.anomalies.append(f"duplicate answered {code}, first answer {run.response_code}")
        elif code == "00" and reference != run.payment_reference:
            run.anomalies.append(f"duplicate approval with reference {reference}, first {run.payment_reference}")
        for latch in run.duplicate_latches:
            if not latch.is_set:
                latch.set(message)
                break

    def _duplicate_later(self, run: PaymentRun, delay: float) -> None:
        def resend():
            if run.state == "waiting" and run.reversal is None:
                return Deferred.fromCoroutine(self._send_duplicate(run))
            return None

        self._timers.append(self.clock.callLater(delay, resend))

    async def _send_duplicate(self, run: PaymentRun) -> None:
        """The very same 0200 again (same keys, same content)."""
        latch = _Latch(self.clock)
        run.duplicate_latches.append(latch)  # before sending: the answer may be quick
        if await self._send("0200", run.fields, self.plan.connect_wait):
            run.sends_0200 += 1
        else:
            run.duplicate_latches.remove(latch)

    async def _reverse(self, run: PaymentRun, reason: str, *, link: SwitchProtocol | None = None) -> None:
        """0420, then 0421 with the same F11/F7 until an 0430 (bounded);
        ``link``: write the 0420 on that connection (pipelined behind its
        0200), the repeats on any."""
        stan, f7 = self.next_stan(), self.f7()
        run.reversal = _Exchange(mti="0420", stan=stan, transmission_datetime=f7, reason=reason)
        run.state = "reversing"
        fields = {
            "3": run.fields["3"],
            "4": run.fields["4"],
            "7": f7,
            "11": stan,
            "12": f7[4:10],
            "13": f7[0:4],
            "32": self.plan.acquirer_id,
            "37": run.rrn,
            "39": reason,
            "41": run.planned.terminal_id,
            "49": run.fields["49"],
            "90": OriginalData("0200", run.stan, run.transmission_datetime, self.plan.acquirer_id,
                               self.plan.forwarder_id).format(),
        }
        if self.plan.forwarder_id:
            fields["33"] = self.plan.forwarder_id
        await self._until_acknowledged(run.reversal, "0420", "0421", "0430", fields, run, first_link=link)

    async def _advise(self, run: PaymentRun) -> None:
        """0220 with the 0200's fields and keys (plus the switch's reason in
        F39: 68, no answer in time), then 0221 until an 0230."""
        run.advice = _Exchange(mti="0220", stan=run.stan, transmission_datetime=run.transmission_datetime,
                               reason=REASON_LATE)
        run.state = "advising"
        await self._until_acknowledged(run.advice, "0220", "0221", "0230", {**run.fields, "39": REASON_LATE}, run)

    async def _until_acknowledged(self, exchange: _Exchange, first_mti: str, repeat_mti: str, answer_mti: str,
                                  fields: dict[str, str], run: PaymentRun,
                                  first_link: SwitchProtocol | None = None) -> None:
        """Send, then repeat every ``repeat_interval`` (bounded) until an
        answer with a final code: 00, or 94/30 which no repeat can change.
        Any other code (96 system malfunction, 91...) means the gateway did
        not take the message in: noted as an anomaly and repeated."""
        key = (answer_mti, exchange.stan, exchange.transmission_datetime)
        started = self.now()
        current = {"latch": _Latch(self.clock)}

        def answered(message: DecodedResponse) -> None:
            code = message.response_code
            if exchange.acknowledged:
                return  # an answer to one of the repeats sent before the final one
            exchange.response_code = code
            if code in FINAL_ACKNOWLEDGEMENT_CODES:
                exchange.acknowledged = True
                exchange.ack_latency = self.now() - started
                if message.bill and message.bill.payment_reference:
                    run.payment_reference = run.payment_reference or message.bill.payment_reference
            else:
                run.anomalies.append(f"{answer_mti} answered {code} to {exchange.mti} STAN {exchange.stan}; repeated")
            current["latch"].set(message)

        self._routes[key] = answered
        for attempt in range(self.plan.max_repeats):
            if attempt > 0 and self.now() >= self._deadline:
                break
            current["latch"] = latch = _Latch(self.clock)
            mti = first_mti if exchange.sends == 0 else repeat_mti
            if exchange.sends == 0 and first_link is not None and first_link.ready:
                first_link.send(mti, fields)
                sent = True
            else:
                sent = await self._send(mti, fields, self.plan.repeat_interval)
            if sent:
                exchange.sends += 1
                answer = await latch.wait(self.plan.repeat_interval)
                if exchange.acknowledged:
                    return
                if answer is not None:  # refused for now: pause before the repeat
                    await self.sleep(self.plan.repeat_interval)
        self.log.warning("switch_gave_up_unacknowledged", mti=first_mti, stan=exchange.stan,
                         sends=exchange.sends, last_code=exchange.response_code)


def run_switch(reactor, host: str, port: int, plan: SwitchPlan, *, clock=None, log=None,
               on_payment_started: Callable[[int], None] | None = None) -> Deferred:
    """Play the bank switch against the gateway at ``host:port`` (loopback
    only); fires with the :class:`SwitchReport` once every payment is
    settled from the switch's side or the plan's bounds have run out.
    ``on_payment_started`` is called with each payment's index as it starts."""
    switch = Switch(reactor, host, port, plan, clock=clock, log=log, on_payment_started=on_payment_started)
    return Deferred.fromCoroutine(switch.run())
