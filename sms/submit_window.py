"""The window of one bind: which parts go out when, and what each answer means.

:class:`SubmitWindow` holds the messages handed to a bind and writes their
parts on its session as the window and the pacer allow:

* at most ``window`` submit_sm in flight; the parts of one message go one
  after the other, each under its own response timer (``response_timeout``
  covers one part, never the whole message), and the next part of a message
  goes before any new message;
* submits spaced to ``rate`` per second; a temporary refusal (per the status
  table in ``conf/smpp_status.toml``) pauses the whole bind, doubling per
  consecutive refusal (:mod:`billgw.sms.pacer`);
* each message ends as one outcome of :mod:`billgw.sms.smpp_outcomes`: a
  refused first part is a :class:`SmppSubmitError`; a refused later part is
  retried in place, same UDH reference, up to ``part_retries`` times, then
  the message is :class:`SmppUncertain` (some parts are on the handset), as
  is a part written and never answered.

The session (connect, bind, reconnect) is the link's
(:mod:`billgw.sms.smpp_link`); the window only asks it for the bound
protocol to write on.  All on the reactor, time from the injected clock.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable

from smpplib import smpp
from twisted.internet import defer
from twisted.python.failure import Failure

from billgw.sms.encoding import EncodedMessage
from billgw.sms.msisdn import Destination
from billgw.sms.pacer import Pacer
from billgw.sms.smpp_client import ResponseTimeout, SessionLost, SmppClientProtocol, describe_status, text
from billgw.sms.smpp_link_config import SmppLinkConfig, relative_validity
from billgw.sms.smpp_outcomes import SmppInvalidMessage, SmppLinkDown, SmppSubmitError, SmppUncertain, SubmitResult
from billgw.sms.status_table import StatusTable


def part_fields(message: EncodedMessage, index: int) -> dict:
    """The submit_sm fields one part carries, sent as they are.

    A part is either the ``short_message`` octets (the message's esm_class
    applies), or an object that carries its own ``short_message``, and may
    carry ``esm_class`` and optional TLVs (``optional_params`` or ``tlvs``,
    a mapping of smpplib parameter names, e.g. ``sar_msg_ref_num``): the
    encoder decides how a message is split and joined, the link never
    rebuilds it.
    """
    # The message's own view of the part (sms/encoding.py: its UDH or SAR
    # TLVs included) where it offers one; bare octets otherwise.
    segments = getattr(message, "segments", ())
    part = segments[index] if segments else message.parts[index]
    if isinstance(part, (bytes, bytearray)):
        return {"short_message": bytes(part), "esm_class": message.esm_class}
    fields = {"short_message": part.short_message, "esm_class": getattr(part, "esm_class", message.esm_class)}
    for name in ("optional_params", "tlvs"):
        extra = getattr(part, name, None)
        if extra:
            fields.update(extra)
    return fields


@dataclass(eq=False)
class SubmitJob:
    """One message on its way: the part to write next, what the SMSC gave so far."""

    destination: Destination
    message: EncodedMessage
    deferred: defer.Deferred = field(repr=False)
    next_part: int = 0  # index of the part to write next
    message_ids: list[str] = field(default_factory=list)
    part_times: list[float] = field(default_factory=list)
    retries_left: int = 0
    cancelled: bool = False



class SubmitWindow:
    """See the module docstring.  ``session()`` returns the protocol to write
    on while the bind is up, None otherwise; the link calls :meth:`pump` when
    it binds and :meth:`fail_all` when the session ends."""

    def __init__(self, clock, config: SmppLinkConfig, *, status_table: StatusTable, log,
                 session: Callable[[], SmppClientProtocol | None]):
        self._clock = clock
        self.config = config
        self.status_table = status_table
        self._log = log
        self._session = session
        self.pacer = Pacer(config.rate, pause_base=config.throttle_pause, pause_cap=config.throttle_pause_cap)
        self._ready: collections.deque[SubmitJob] = collections.deque()
        self.in_flight = 0
        self._pump_timer = None

    @property
    def queued(self) -> int:
        return len(self._ready)

    @property
    def free(self) -> int:
        """Window slots not taken by messages in flight or queued here."""
        return self.config.window - self.in_flight - len(self._ready)

    def add(self, job: SubmitJob) -> None:
        self._ready.append(job)
        self.pump()

    def pump(self) -> None:
        """Write what the window and the pacer allow; reschedule for the rest."""
        if self._pump_timer is not None:
            if self._pump_timer.active():
                return  # a paced pump is already due
            self._pump_timer = None
        proto = self._session()
        while self._ready and proto is not None and proto.is_bound and self._session() is proto:
            if self.in_flight >= self.config.window:
                return  # a response will call us again
            wait = self.pacer.delay(self._clock.seconds())
            if wait > 0:
                self._pump_timer = self._clock.callLater(wait, self.pump)
                return
            job = self._ready.popleft()
            if job.cancelled and job.next_part == 0:
                continue
            self._write(proto, job)

    def fail_all(self, reason: str) -> None:
        """The session ended (or the link stops): what is queued here ends at
        once -- unwritten messages as :class:`SmppLinkDown`, messages with
        parts accepted as :class:`SmppUncertain`."""
        jobs, self._ready = list(self._ready), collections.deque()
        for job in jobs:
            self._finish(job, SmppLinkDown(reason) if job.next_part == 0 else self._partial(job, reason))

    def _write(self, proto: SmppClientProtocol, job: SubmitJob) -> None:
        cfg = self.config
        message = job.message
        fields = dict(
            source_addr_ton=cfg.source_addr_ton, source_addr_npi=cfg.source_addr_npi, source_addr=cfg.source_addr,
            dest_addr_ton=job.destination.ton, dest_addr_npi=job.destination.npi,
            destination_addr=job.destination.address,
            data_coding=message.data_coding, registered_delivery=cfg.registered_delivery,
        )
        if cfg.validity_period:
            fields["validity_period"] = relative_validity(cfg.validity_period)
        try:
            fields.update(part_fields(message, job.next_part))
            pdu = smpp.make_pdu("submit_sm", client=proto, **fields)
            d = proto.request(pdu, cfg.response_timeout)
        except Exception as e:  # nothing was written: this row alone fails
            self._log.warning("smpp.unencodable_submit", error=type(e).__name__, part=job.next_part + 1)
            if job.next_part == 0:
                self._finish(job, SmppInvalidMessage(f"cannot encode submit_sm: {type(e).__name__}"))
            else:
                self._finish(job, self._partial(job, f"part {job.next_part + 1} cannot be encoded"))
            return
        self.pacer.take(self._clock.seconds())
        self.in_flight += 1
        d.addCallbacks(self._answered, self._unanswered, callbackArgs=(job,), errbackArgs=(job,))

    def _answered(self, resp, job: SubmitJob) -> None:
        self.in_flight -= 1
        part, parts = job.next_part + 1, len(job.message.parts)
        status = resp.status
        if resp.command == "generic_nack" and status == 0:
            status = 0x08  # a nack that claims success is still not an answer to submit_sm
        if status == 0:
            self.pacer.accepted()
            job.message_ids.append(text(getattr(resp, "message_id", "")))
            job.part_times.append(self._clock.seconds())
            job.next_part += 1
            if job.next_part == parts:
                self._finish(job, SubmitResult(job.message_ids, parts, job.message.data_coding,
                                               tuple(job.part_times), self.config.name))
            else:
                self._ready.appendleft(job)  # the next part goes before new messages
        else:
            permanent = self.status_table.is_permanent(status)
            if not permanent:
                pause = self.pacer.refused(self._clock.seconds())
                self._log.warning("smpp.submit_refused", status=describe_status(status), part=part,
                                  pause=round(pause, 3))
            else:
                self._log.warning("smpp.submit_refused", status=describe_status(status), part=part,
                                  permanent=True)
            if job.next_part == 0:
                self._finish(job, SmppSubmitError(status, part, parts, permanent=permanent))
            elif not permanent and job.retries_left > 0:
                job.retries_left -= 1
                self._ready.appendleft(job)  # same part, same UDH reference, after the pause
            else:
                self._finish(job, self._partial(job, f"part {part}/{parts} refused: status {describe_status(status)}"))
        self.pump()

    def _unanswered(self, failure: Failure, job: SubmitJob) -> None:
        self.in_flight -= 1
        part, parts = job.next_part + 1, len(job.message.parts)
        if failure.check(ResponseTimeout, SessionLost):
            reason = f"part {part}/{parts} written, no answer: {failure.getErrorMessage()}"
        else:
            reason = f"part {part}/{parts} written, then {failure.getErrorMessage()}"
        self._finish(job, SmppUncertain(reason, job.message_ids, parts, job.part_times, self.config.name))
        self.pump()

    def _partial(self, job: SubmitJob, reason: str) -> SmppUncertain:
        accepted = len(job.message_ids)
        return SmppUncertain(f"{accepted} of {len(job.message.parts)} parts accepted; {reason}",
                             job.message_ids, len(job.message.parts), job.part_times, self.config.name)

    def _finish(self, job: SubmitJob, result) -> None:
        if job.deferred.called:
            return
        if isinstance(result, BaseException):
            job.deferred.errback(Failure(result))
        else:
            job.deferred.callback(result)
