"""The audit's report for a person (text) and for a machine (JSON).

Both print values that came from the network (terminal ids, billing
numbers, a biller's texts): in the text report every value is shown with
its control characters escaped (:func:`escape_control`), so an ANSI escape
sent as a terminal id cannot drive the operator's terminal; the JSON report
escapes them as JSON ``\\u`` escapes (the same data for a machine).
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from billgw.iso8583.masking import escape_control

from .rows import BROKEN_CATEGORIES, NOTE_CATEGORIES, AuditReport, Finding


def _shown(value: Any) -> str:
    return escape_control(str(value))


def _detail_text(details: Mapping[str, Any]) -> str:
    return " ".join(f"{_shown(key)}={_shown(value)}" for key, value in details.items() if value not in (None, ""))


def _finding_line(finding: Finding, width: int) -> str:
    return (f"  {_shown(finding.category):<{width}}  {_shown(finding.payment_id or '-')}  "
            f"{_shown(finding.biller_code or '-')}  {_shown(finding.message)}  [{_detail_text(finding.details)}]")


def render_text(report: AuditReport) -> str:
    """For a person: the verdict, a line per category, a line per finding,
    then the informational part (notes, totals, states)."""
    lines = []
    if report.broken:
        lines.append(f"billgw audit: BROKEN -- {len(report.findings)} finding(s)")
    else:
        lines.append("billgw audit: OK -- no invariant broken")
    width = max(len(c) for c in BROKEN_CATEGORIES + NOTE_CATEGORIES)
    for category, count in report.category_counts().items():
        lines.append(f"  {category:<{width}}  {count}")
    if report.findings:
        lines.append("")
        lines.append("findings:")
        lines.extend(_finding_line(f, width) for f in report.findings)
    lines.append("")
    lines.append("information (not broken):")
    lines.extend(_finding_line(n, width) for n in report.notes)
    for code, totals in report.billers.items():
        journal_part = (f"journal confirmed {totals.journal_confirmed_count} payment(s), "
                        f"{totals.journal_confirmed_amount} minor units")
        if totals.audited:
            ledger_part = (f"ledger posted {totals.ledger_posted_count} payment(s), "
                           f"{totals.ledger_posted_amount} minor units")
        else:
            ledger_part = "ledger not audited"
        lines.append(f"  totals {_shown(code)}: {journal_part}; {ledger_part}")
    for name, states in report.counts.items():
        lines.append(f"  states {_shown(name)}: " + ", ".join(f"{_shown(state)} {n}" for state, n in states.items()))
    return "\n".join(lines) + "\n"


# What json.dumps(ensure_ascii=False) leaves raw but a terminal may obey:
# C1 controls (0x9b is a CSI on some terminals) and bidirectional overrides.
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def render_json(report: AuditReport) -> str:
    text = json.dumps(report.as_dict(), indent=2, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text) + "\n"
