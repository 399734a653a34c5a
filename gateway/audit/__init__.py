"""``billgw audit``: the journal against the billers' ledgers and the SMS outbox.

The gateway promises never to lose a payment, post it twice, or tell a
customer "paid" when the biller has no record of it.  Each promise spans
stores written at different moments by different parties -- our journal,
each biller's own ledger, the SMS outbox -- so a crash, a timeout or a bug
can break one without any single component noticing.  Only comparing the
stores after the fact shows it; this module does that comparison and names
every payment that breaks an invariant, so a person can act on it.

One module per job, so that the rules can be tested without databases or
files:

- :mod:`.rows`: plain dataclasses of what was read (:class:`JournalRow`,
  :class:`SmsRow`, :class:`ReversalRow`, :class:`BillerOutboxRow`; ledgers
  are lists of the interface's :class:`LedgerEntry`, the auditor's view of
  a biller's ledger, read by the biller's adapter), of what was found, and
  the categories;
- :mod:`.rules`: :func:`audit`, pure: rows in, :class:`AuditReport` out,
  with the money's invariants (journal against ledgers, states, reversals,
  the biller outbox); the SMS receipts' are :mod:`.sms_rules`, contract
  v2's :mod:`.accepted`, the report's counts and totals :mod:`.totals`,
  and how a finding shows a payment (masked) :mod:`.details`;
- :mod:`.snapshot`: :func:`load_journal`, a thin blocking loader reading the
  journal's tables in one read transaction (one consistent snapshot), and
  :data:`LEDGER_READERS`, the adapter kinds whose adapter reads its
  biller's ledger (``read_ledger``: a file, a reconciliation URL...);
- :mod:`.sms_health`: the SMS side's sending (receipts stuck in the queue,
  a refused bind, from ``sms_link_health``), read and judged apart;
- :mod:`.render` (:func:`render_text` / :func:`render_json`) and
  :mod:`.command` (:func:`run_command`, the CLI).

The audit is an offline tool: it blocks, and needs no reactor.  Card data:
the journal holds only the masked PAN, and every value shown is passed
through the project's masking again, because output of an audit ends up in
tickets and e-mails where a leaked card number would stay.
"""
from .command import AuditUsageError, parse_ledger_args, run_command
from .render import render_json, render_text
from .rows import (  # noqa: F401 (the categories, for callers and tests)
    ACCEPTED_BOOKED,
    ACCEPTED_MISSING_AT_BILLER,
    ACCEPTED_TOO_LONG,
    CONFIRMED_NOT_BOOKED,
    ADVISED_NOT_HELD,
    AMOUNT_MISMATCH,
    BROKEN_CATEGORIES,
    CONFIRMED_AFTER_REVERSAL,
    CONFIRMED_MISSING_AT_BILLER,
    EXCEPTION,
    NOT_AUDITED,
    POSTED_OUTSIDE_RULES,
    POSTED_TWICE,
    REVERSAL_MISSED_ORIGINAL,
    REVERSAL_NOT_FOUND,
    REVERSED_STILL_POSTED,
    SMS_ABANDONED,
    SMS_BIND_REFUSED,
    SMS_FOR_UNCONFIRMED,
    SMS_INVALID_MSISDN,
    SMS_LINK_NOT_BOUND,
    SMS_MISSING,
    SMS_STUCK,
    SMS_UNCERTAIN,
    UNKNOWN_POSTING,
    UNRESOLVED,
    NOTE_CATEGORIES,
    AuditReport,
    BillerOutboxRow,
    BillerTotals,
    Finding,
    JournalRow,
    JournalSnapshot,
    ReversalRow,
    SmsRow,
)
from .rules import audit
from .snapshot import LEDGER_READERS, load_journal, make_audit_engine

__all__ = [
    "AuditReport", "AuditUsageError", "BROKEN_CATEGORIES", "BillerOutboxRow", "BillerTotals", "Finding",
    "JournalRow", "JournalSnapshot", "LEDGER_READERS", "NOTE_CATEGORIES", "ReversalRow", "SmsRow", "audit",
    "load_journal", "make_audit_engine", "parse_ledger_args", "render_json", "render_text", "run_command",
]
