"""HTTP to a biller: a bounded connection pool, a time budget per call, and
every ending of an exchange classified by what it means for the money.

:class:`HttpTransport` wraps ``twisted.web.client.Agent``.  It answers an
:class:`HttpAnswer` (status, headers, body) or fails with one of the
interface's errors:

- :class:`BillerUnavailable` -- the request certainly never left: the
  connection could not be opened (refused, DNS, connect timeout), the pooled
  connection was found dead before writing, or the call's budget ran out
  while it waited for a connection slot or was still connecting;
- :class:`BillerOutcomeUnknown` -- the request may have reached the biller:
  the connection failed after the request was written, the budget ran out
  waiting for the answer, the answer was cut short or larger than allowed;
- ``CancelledError`` -- the caller cancelled (its own timeout): the
  connection is aborted, whatever the exchange was doing.

What an HTTP *status* means is a second, separate question
(:func:`status_meaning`): only a status that says the request was refused
before anything was done counts as a refusal; 408, 429, 409, 5xx and every
status we do not know are "outcome unknown".  The adapter looks at the body
with that in mind (a SOAP fault or a JSON error may say more).

Concurrency: at most ``pool_size`` exchanges run at once, each on its own
connection; persistent connections are kept (up to ``pool_size``) and closed
after ``idle_timeout``.  A call beyond ``pool_size`` waits for a slot within
its budget.  Requests are never retried here (``retryAutomatically`` off):
a silent resend of a payment is exactly what must not happen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, succeed
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web._newclient import RequestNotSent, RequestTransmissionFailed
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from billgw.billing_adapters.interface import BillerError, BillerOutcomeUnknown, BillerUnavailable

DEFAULT_MAX_BODY = 256 * 1024

# Statuses that say "your request was refused, nothing was done": malformed,
# unauthorised, no such resource or method, unacceptable body.  Not in the
# list and so "outcome unknown": 408 and 429 (the biller may have taken the
# request before giving up on it, or a proxy answered for it), 409 and 412
# (a conflict may well be "that payment id is already recorded"), 410, every
# 5xx, and anything we do not know.
REFUSED_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 411, 413, 414, 415, 422, 431})

ANSWERED = "answered"  # 2xx: read the body
REFUSED = "refused"    # the request was refused before anything was done
UNKNOWN = "unknown"    # the request may have been carried out


def status_meaning(code: int) -> str:
    """What an HTTP status says about the request: ANSWERED, REFUSED or UNKNOWN."""
    if 200 <= code < 300:
        return ANSWERED
    if code in REFUSED_STATUSES:
        return REFUSED
    return UNKNOWN


@dataclass(frozen=True)
class HttpAnswer:
    code: int
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


# Phases of one exchange, to tell "nothing left" from "may have arrived".
_QUEUED, _CONNECTING, _SENT = "queued", "connecting", "sent"


class _BodyCollector(Protocol):
    """Collects a response body up to ``limit`` bytes.

    Used instead of ``readBody``, whose cancellation cannot abort the
    connection through the response's transport proxy, and which has no
    size bound: a biller is a peer we do not control.
    """

    def __init__(self, finished: Deferred[bytes], limit: int):
        self._finished = finished
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._finished.errback(BillerOutcomeUnknown(f"answer larger than {self._limit} bytes"))
            self.transport.loseConnection()
            return
        self._parts.append(data)

    def connectionLost(self, reason=None) -> None:
        if self._finished.called:
            return
        if reason.check(ResponseDone):
            self._finished.callback(b"".join(self._parts))
        else:
            # Includes PotentialDataLoss: a body ended by a close may be cut short.
            self._finished.errback(reason)


def read_body(response, limit: int) -> Deferred[bytes]:
    """The whole body of ``response``; cancelling drops the connection."""
    collector: _BodyCollector | None = None

    def cancel(_d: Deferred[bytes]) -> None:
        if collector is not None and collector.transport is not None:
            collector.transport.loseConnection()

    finished: Deferred[bytes] = Deferred(cancel)
    collector = _BodyCollector(finished, limit)
    response.deliverBody(collector)
    return finished


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory.  Twisted's FileBodyProducer would
    schedule writes on the global cooperator; this writes at once, and tells
    the exchange the moment the request is on the wire."""

    def __init__(self, data: bytes, on_start):
        self._data = data
        self._on_start = on_start
        self.length = len(data)

    def startProducing(self, consumer) -> Deferred[None]:
        self._on_start()
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _connect_failure(exc: BaseException) -> bool:
    """Failures that prove nothing was written."""
    return isinstance(exc, (net_error.ConnectError, net_error.DNSLookupError,
                            net_error.ConnectingCancelledError, RequestNotSent))


# How the network says an exchange failed; anything else is a bug of ours
# (logged with its traceback) -- still "outcome unknown" for the money.
NETWORK_FAILURES = (net_error.ConnectError, net_error.DNSLookupError, net_error.ConnectingCancelledError,
                    net_error.ConnectionLost, net_error.ConnectionDone, RequestNotSent,
                    RequestTransmissionFailed, ResponseFailed, CancelledError)


def classify_failure(exc: BaseException, sent: bool) -> BillerError:
    """A failed exchange as the interface error the gateway acts on."""
    if isinstance(exc, BillerError):
        return exc
    if _connect_failure(exc):
        return BillerUnavailable(f"could not connect: {exc.__class__.__name__}: {exc}")
    reasons = ", ".join(r.type.__name__ for r in getattr(exc, "reasons", []) or [])
    detail = f"{exc.__class__.__name__}({reasons})" if reasons else f"{exc.__class__.__name__}: {exc}"
    if not sent:
        # Not a connect failure, yet before the body was written: the
        # headers may have left, so the biller may have seen the request.
        return BillerOutcomeUnknown(f"exchange failed while sending: {detail}")
    return BillerOutcomeUnknown(f"connection failed after sending: {detail}")


class HttpTransport:
    """HTTP exchanges with one biller; see the module docstring.

    ``reactor`` opens connections; ``clock`` (the reactor by default) runs
    the per-call budget, ``timeout`` seconds from the call to the last byte
    of the answer (None: no budget of our own, the caller's timeout
    governs).  ``connect_timeout`` bounds opening one connection.
    """

    def __init__(self, reactor, *, pool_size: int = 4, connect_timeout: float = 5.0,
                 timeout: float | None = None, idle_timeout: float = 60.0,
                 max_body: int = DEFAULT_MAX_BODY, clock=None, log: Any = None):
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._timeout = timeout
        self._max_body = max_body
        self._log = log if log is not None else structlog.get_logger()
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = pool_size
        self._pool.cachedConnectionTimeout = idle_timeout
        self._pool.retryAutomatically = False
        self._agent = Agent(reactor, connectTimeout=connect_timeout, pool=self._pool)
        self._slots = DeferredSemaphore(pool_size)

    @property
    def in_flight(self) -> int:
        """Exchanges holding a connection slot now."""
        return self.pool_size - self._slots.tokens

    @property
    def waiting(self) -> int:
        return len(self._slots.waiting)

    def request(self, method: bytes, url: bytes, *, headers: Headers | None = None, body: bytes = b"",
                timeout: float | None = None) -> Deferred[HttpAnswer]:
        """One exchange.  ``timeout`` overrides the transport's budget for
        this call.  Cancelling the Deferred aborts the connection and fails
        it with CancelledError."""
        budget = self._timeout if timeout is None else timeout
        state = {"phase": _QUEUED, "cancelled": False, "expired": False}
        inner = Deferred.fromCoroutine(self._exchange(method, url, headers or Headers(), body, state))

        def cancel(_outer: Deferred) -> None:
            state["cancelled"] = True
            inner.cancel()

        outer: Deferred[HttpAnswer] = Deferred(cancel)
        expiry = None
        if budget is not None:
            def expire() -> None:
                state["expired"] = True
                inner.cancel()

            expiry = self._clock.callLater(budget, expire)

        def relay(result):
            if expiry is not None and expiry.active():
                expiry.cancel()
            if isinstance(result, Failure):
                sent = state["phase"] == _SENT
                if state["cancelled"]:
                    result = Failure(CancelledError("HTTP exchange cancelled"))
                elif state["expired"]:
                    result = Failure(BillerOutcomeUnknown(f"no answer within {budget:g} s") if sent else
                                     BillerUnavailable(f"no connection within {budget:g} s"))
                else:
                    if not isinstance(result.value, (BillerError,) + NETWORK_FAILURES):
                        self._log.error("http_exchange_failed", exc_info=(result.type, result.value, result.tb))
                    result = Failure(classify_failure(result.value, sent))
            if not outer.called:
                outer.callback(result) if not isinstance(result, Failure) else outer.errback(result)
            return None

        inner.addBoth(relay)
        return outer

    async def _exchange(self, method: bytes, url: bytes, headers: Headers, body: bytes, state) -> HttpAnswer:
        await self._slots.acquire()  # cancelled while queued: nothing to release
        try:
            state["phase"] = _CONNECTING
            producer = _BytesProducer(body, lambda: state.__setitem__("phase", _SENT))
            response = await self._agent.request(method, url, headers, producer)
            state["phase"] = _SENT  # an answer came: whatever the producer saw, it left
            try:
                data = await read_body(response, self._max_body)
            except BillerError:
                raise
            except Exception as exc:
                raise BillerOutcomeUnknown(f"answer cut short: {exc.__class__.__name__}") from exc
            return HttpAnswer(response.code, response.headers, data)
        finally:
            self._slots.release()

    def close(self) -> Deferred[None]:
        """Close the idle pooled connections (at shutdown)."""
        return self._pool.closeCachedConnections()
