"""What a payment's MSISDN (F48 tag MS) means for the payment: pure rules.

The number is judged before anything is posted, with the configured country
(``[sms] country``) and policy (``[sms] invalid_msisdn``):

* a valid number (national, international, typed in Arabic-Indic digits) is
  journaled as its E.164 digits, so the receipt goes to exactly that number;
* an invalid one (``000000``, letters, a number of no country) either
  **declines** the payment before it reaches the biller (``decline``, the
  default: outcome ``invalid_msisdn``, response code from ``conf/``), or lets
  it go on **without a receipt** (``pay_without_sms``): the journal then
  holds the empty string in ``msisdn`` -- "a number was given and it was
  invalid", distinct from NULL, "no number given" -- so the audit counts
  those payments (note ``sms_invalid_msisdn``) and no receipt is queued;
* an advice (0220/0221) is never declined for its number: the customer was
  debited, so the payment goes on without a receipt whatever the policy;
* an inquiry sends no SMS: its number is only normalised.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from billgw.iso8583.codes import Outcome
from billgw.sms.msisdn import InvalidMsisdn, normalise_msisdn

# phonenumbers takes ~55 us a number on the reactor thread; subscribers pay
# again and again, so valid answers are remembered (bounded; an invalid
# number raises and is not cached).
_normalise = functools.lru_cache(maxsize=4096)(normalise_msisdn)

DECLINE = "decline"
PAY_WITHOUT_SMS = "pay_without_sms"
POLICIES = (DECLINE, PAY_WITHOUT_SMS)
INVALID_MARK = ""  # journaled msisdn of a payment that goes on without its receipt


@dataclass(frozen=True)
class MsisdnVerdict:
    msisdn: str | None  # what the journal keeps: E.164 digits, None (none given) or INVALID_MARK
    problem: Outcome | None = None  # decline the payment with this
    reason: str | None = None  # why the number is not used (never the number itself)


def judge_msisdn(raw: str | None, *, country: str, policy: str, payment: bool, advice: bool = False) -> MsisdnVerdict:
    if policy not in POLICIES:
        raise ValueError(f"invalid_msisdn policy must be one of {', '.join(POLICIES)}")
    if raw is None or raw == "":
        return MsisdnVerdict(None)
    try:
        return MsisdnVerdict(_normalise(raw, country).address)
    except InvalidMsisdn as exc:
        reason = str(exc)
    if payment and not advice and policy == DECLINE:
        return MsisdnVerdict(None, Outcome.INVALID_MSISDN, reason)
    return MsisdnVerdict(INVALID_MARK if payment else None, None, reason)
