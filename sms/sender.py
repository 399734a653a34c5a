"""OutboxSender: drains ``sms_outbox`` into an SMPP link.

Why it is shaped like this:

* The database is reached only through the injected ``run_in_db(fn, *args)``,
  which runs ``fn(conn, *args)`` in one transaction on the gateway's bounded
  DB pool; so this package never imports the gateway, and tests pass a
  synchronous one.
* Rows are *claimed* with a lease (``claim_due``) in one short transaction,
  marked SENDING right before their submit (``begin_submit``) in another and
  SENT/FAILED after it in a third; no transaction stays open across the network.
  The submit timeout must be shorter than the lease, otherwise a slow submit
  could be claimed again by another sender while still in flight.
* A poll (``LoopingCall`` on the injected clock) catches retries and rows
  written by other processes; :meth:`OutboxSender.wake` lets the gateway send
  a fresh receipt at once.  At most one drain runs at a time; a wake during a
  drain makes it do one more pass instead of starting a second drain.
* The drain never fails: a database or link error on one row is logged and
  the row is left to its lease, so the LoopingCall keeps running.  A row not
  yet submitted is claimed again once the lease expires; a SENDING row (the
  SMSC may have it) becomes UNCERTAIN instead and is never sent twice.
* While the link reports it is not bound, nothing is claimed: claiming counts
  an attempt, and an SMSC outage must not use up a receipt's attempts.

Logs carry the payment id and outbox id, never the text (it names the card's
last digits and the subscriber's account) nor the MSISDN.
"""
from __future__ import annotations

import structlog
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.python.failure import Failure

from billgw.sms import outbox
from billgw.sms.backoff import exponential_backoff


def describe_error(failure) -> str:
    """A short, card-data-free description of why a submit failed."""
    error = failure.value
    if isinstance(error, defer.TimeoutError):
        return "no answer from the SMPP link in time"
    return f"{type(error).__name__}: {error}"


class OutboxSender(Service):
    def __init__(
        self,
        *,
        run_in_db,
        link,
        clock,
        owner: str,
        poll_interval: float = 5.0,
        batch_size: int = 20,
        lease_seconds: float = 120.0,
        max_attempts: int = 10,
        retry_base: float = 30.0,
        retry_cap: float = 3600.0,
        submit_timeout: float = 60.0,
        logger=None,
    ):
        if submit_timeout >= lease_seconds:
            raise ValueError(
                f"submit_timeout ({submit_timeout}s) must be shorter than lease_seconds "
                f"({lease_seconds}s), or a row could be claimed twice while in flight"
            )
        if batch_size < 1 or max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        self._run_in_db = run_in_db
        self._link = link
        self._clock = clock
        self.owner = owner
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.submit_timeout = submit_timeout
        self._log = (logger or structlog.get_logger()).bind(sms_sender=owner)
        self._loop: task.LoopingCall | None = None
        self._draining = False
        self._again = False
        self._stopping = False
        self._drain_waiters: list[defer.Deferred] = []

    def startService(self):
        super().startService()
        self._stopping = False
        self._loop = task.LoopingCall(self.wake)
        self._loop.clock = self._clock
        self._loop.start(self.poll_interval, now=True)

    def stopService(self):
        """Stop polling and wait for the drain in progress (itself bounded by
        the submit timeout)."""
        super().stopService()
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return self._when_drained() if self._draining else defer.succeed(None)

    def wake(self) -> defer.Deferred:
        """Send what is due now.  Fires (never fails) once a drain that started
        after this call has finished."""
        waiter = self._when_drained()
        if self._draining:
            self._again = True
        else:
            self._draining = True
            self._drain().addBoth(self._drained)
        return waiter

    def _when_drained(self) -> defer.Deferred:
        d = defer.Deferred()
        self._drain_waiters.append(d)
        return d

    def _drained(self, result):
        if isinstance(result, Failure):  # a bug: _drain catches what it expects
            self._log.error("sms.drain_crashed", exc_info=result.value)
        self._draining = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)

    @defer.inlineCallbacks
    def _drain(self):
        while True:
            self._again = False
            if not getattr(self._link, "bound", True):
                self._log.debug("sms.link_not_bound")
                return
            try:
                items = yield self._run_in_db(self._claim, self._clock.seconds())
            except Exception:
                self._log.exception("sms.claim_failed")
                return
            for item in items:
                if self._stopping:
                    # Stopping: leave the rest; their leases expire and
                    # another run sends them.
                    return
                yield self._send(item)
            if not self._again and len(items) < self.batch_size:
                return

    def _claim(self, conn, now):
        return outbox.claim_due(
            conn, now=now, owner=self.owner, lease_seconds=self.lease_seconds, limit=self.batch_size
        )

    @defer.inlineCallbacks
    def _send(self, item):
        log = self._log.bind(payment_id=item.payment_id, outbox_id=item.id, attempt=item.attempts)
        try:
            ours = yield self._run_in_db(self._begin_submit, item.id, self._clock.seconds())
        except Exception:
            log.exception("sms.begin_submit_failed")
            return
        if not ours:
            # Cancelled since the claim (payment reversed), or lease lost.
            log.info("sms.not_sent_no_longer_ours")
            return
        try:
            d = self._link.submit(item.msisdn, item.text)
            d.addTimeout(self.submit_timeout, self._clock)
            result = yield d
        except Exception:
            yield self._failed(item, describe_error(Failure()), log)
            return
        try:
            recorded = yield self._run_in_db(
                self._mark_sent, item.id, result.message_ids, result.data_coding, result.parts, self._clock.seconds()
            )
        except Exception:
            # The SMSC has it: the row stays SENDING and becomes UNCERTAIN when
            # its lease expires (never resent; billgw audit lists it).
            log.exception("sms.mark_sent_failed", message_ids=result.message_ids)
            return
        if recorded:
            log.info("sms.sent", message_ids=result.message_ids, parts=result.parts, data_coding=result.data_coding)
        else:
            log.warning("sms.sent_but_lease_lost", message_ids=result.message_ids)

    @defer.inlineCallbacks
    def _failed(self, item, error: str, log):
        now = self._clock.seconds()
        if item.attempts >= self.max_attempts:
            retry_at = None
        else:
            retry_at = now + exponential_backoff(item.attempts, self.retry_base, self.retry_cap)
        try:
            yield self._run_in_db(self._mark_failed, item.id, error, now, retry_at)
        except Exception:
            log.exception("sms.mark_failed_failed", error=error)
            return
        if retry_at is None:
            log.error("sms.abandoned", error=error)
        else:
            log.warning("sms.send_failed", error=error, retry_in=retry_at - now)

    def _begin_submit(self, conn, item_id, now):
        return outbox.begin_submit(conn, item_id, owner=self.owner, now=now)

    def _mark_sent(self, conn, item_id, message_ids, data_coding, parts, now):
        return outbox.mark_sent(
            conn, item_id, owner=self.owner, message_ids=message_ids, data_coding=data_coding, parts=parts, now=now
        )

    def _mark_failed(self, conn, item_id, error, now, retry_at):
        return outbox.mark_failed(conn, item_id, owner=self.owner, error=error, now=now, retry_at=retry_at)
