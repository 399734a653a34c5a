"""What one submitted message comes to: the answers of the SMPP link.

Every :meth:`~billgw.sms.smpp_link.SmppLink.submit` fires with exactly one
of these, and the outbox sender maps each to a row state
(:mod:`billgw.sms.sender`): :class:`SubmitResult` (every part accepted),
:class:`SmppLinkDown` (nothing written: retry, it cost nothing),
:class:`SmppSubmitError` (the first part refused; ``permanent`` from the
status table), :class:`SmppInvalidMessage` (this message can never be
sent: it fails alone), :class:`SmppUncertain` (the SMSC may hold it: never
resent blindly, see docs/sms.md).  Kept apart from the link so that the
sender, the router and the window share them without importing the
session.
"""
from __future__ import annotations

from dataclasses import dataclass

from billgw.sms.smpp_client import describe_status


class SmppLinkDown(Exception):
    """Nothing of the message was written: the link is not bound or went
    down first.  Retrying it cannot duplicate anything."""


class SmppSubmitError(Exception):
    """The SMSC refused the message's first part (nothing was accepted)."""

    def __init__(self, status: int, part: int = 1, parts: int = 1, permanent: bool = False):
        kind = "permanently" if permanent else "temporarily"
        super().__init__(f"SMSC refused submit_sm part {part}/{parts} {kind}: status {describe_status(status)}")
        self.status = status
        self.permanent = permanent


class SmppInvalidMessage(Exception):
    """This message can never be sent as it is (bad MSISDN, unencodable)."""


class SmppUncertain(Exception):
    """The SMSC may hold all or part of the message: never resend it blindly.
    ``message_ids`` (and ``part_times``) are the parts it did accept."""

    def __init__(self, reason: str, message_ids: list[str], parts: int, part_times=(), smsc: str | None = None):
        super().__init__(reason)
        self.message_ids = list(message_ids)
        self.parts = parts
        self.part_times = tuple(part_times)
        self.smsc = smsc


@dataclass(frozen=True)
class SubmitResult:
    message_ids: list[str]  # one per part, in part order
    parts: int
    data_coding: int
    part_times: tuple[float, ...] = ()  # when each part's submit_sm_resp came (clock seconds)
    smsc: str | None = None  # the SMSC connection that took it (SmppLinkConfig.name)

