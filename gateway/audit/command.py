"""``billgw audit`` on the command line: arguments checked against the
configuration, the stores read (journal first), the report printed, the exit
status returned (0 clean, 1 broken, 2 usage)."""
from __future__ import annotations

import os
import sqlite3
import sys
import time
from typing import Sequence, TextIO

from sqlalchemy.exc import SQLAlchemyError

from billgw.billing_adapters.interface import LedgerUnavailable
from billgw.billing_adapters.registry import AdapterConfigError

from .. import rules as service_rules
from .render import render_json, render_text
from .rows import JournalRow
from .sms_health import extend_report, load_sms_health, sms_health_findings
from .rules import RuleCheck, _mask_foreign, audit
from .snapshot import LEDGER_READERS, LedgerReader, biller_ledger_reader, load_journal, make_audit_engine

class AuditUsageError(ValueError):
    """The command line or the files it names cannot be used (exit status 2)."""


def parse_ledger_args(values: Sequence[str], settings) -> dict[str, tuple[str, LedgerReader]]:
    """``CODE=SOURCE`` arguments -> {biller code: (source, reader)}, checked
    against the configuration before anything is read.  SOURCE is what the
    biller's adapter reads its ledger from: the telecom simulator's SQLite
    file, a JSON biller's base URL (docs/billers.md)."""
    chosen: dict[str, tuple[str, LedgerReader]] = {}
    for value in values:
        code, sep, path = value.partition("=")
        code, path = code.strip(), path.strip()
        if not sep or not code or not path:
            raise AuditUsageError(f"--ledger {value!r}: expected CODE=PATH, e.g. TEL=var/telecom-sim.sqlite")
        if code not in settings.billers:
            known = ", ".join(sorted(settings.billers)) or "none"
            raise AuditUsageError(f"--ledger {code}: no biller {code} in {settings.source} (billers: {known})")
        if code in chosen:
            raise AuditUsageError(f"--ledger {code}: given twice")
        biller = settings.billers[code]
        try:
            reader = biller_ledger_reader(biller)
        except AdapterConfigError as exc:
            raise AuditUsageError(f"--ledger {code}: billers.{code}.{exc.key}: {exc.problem}") from None
        if reader is None:
            raise AuditUsageError(f"--ledger {code}: no ledger reader for adapter kind {biller.adapter!r} "
                                  f"(readers: {', '.join(sorted(LEDGER_READERS))})")
        chosen[code] = (path, reader)
    if not chosen:
        raise AuditUsageError("give at least one --ledger CODE=PATH")
    return chosen


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return _mask_foreign(f"{type(cause).__name__}: {text[0] if text else ''}")


def rule_check(settings) -> RuleCheck:
    """The configured services' local rules, applied to a journal row."""
    def check(row: JournalRow) -> str | None:
        problem, _ = service_rules.check_request(
            settings.billers, kind=row.kind, biller_code=row.biller_code, service_code=row.service_code,
            currency=row.currency, billing_number=row.billing_number, amount=row.amount)
        return problem.value if problem is not None else None
    return check


def run_command(settings, ledger_args: Sequence[str], *, as_json: bool = False,
                out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``billgw audit``: returns the exit status (0 clean, 1 broken, 2 usage).

    The journal is read before the ledgers (see :func:`load_journal`).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        chosen = parse_ledger_args(ledger_args, settings)
        engine = make_audit_engine(settings.database.url)
        shown_url = engine.url.render_as_string(hide_password=True)
        try:
            database = engine.url.database
            if engine.url.get_backend_name() == "sqlite" and database not in (None, "", ":memory:") \
                    and not os.path.isfile(database):
                raise AuditUsageError(f"journal database {database} does not exist (database.url in "
                                      f"{settings.source})")
            try:
                snapshot = load_journal(engine)
                sms_health = load_sms_health(engine, now=time.time(),
                                             queued_alert_after=settings.sms.queued_alert_after)
            except SQLAlchemyError as exc:
                raise AuditUsageError(f"cannot read the journal at {shown_url} ({_first_line(exc)}); "
                                      "is its schema up to date (billgw db upgrade)?") from None
        finally:
            engine.dispose()
        ledgers = {}
        for code, (path, reader) in chosen.items():
            try:
                ledgers[code] = reader(path)
            except LedgerUnavailable as exc:
                raise AuditUsageError(f"--ledger {code}: {_mask_foreign(str(exc))}") from None
            except (sqlite3.Error, OSError) as exc:
                raise AuditUsageError(f"--ledger {code}: cannot read ledger {path} ({_first_line(exc)})") from None
    except AuditUsageError as exc:
        print(f"billgw audit: {exc}", file=err)
        return 2
    report = audit(snapshot.transactions, ledgers, snapshot.sms, snapshot.reversals, snapshot.biller_outbox,
                   rules=rule_check(settings), now=time.time(),
                   accepted_limit=settings.recovery.accepted_alert_after)
    report = extend_report(report, *sms_health_findings(sms_health, now=time.time(),
                                                        queued_alert_after=settings.sms.queued_alert_after))
    out.write(render_json(report) if as_json else render_text(report))
    out.flush()
    return report.exit_status
