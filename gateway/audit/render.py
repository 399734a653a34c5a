"""The audit's report for a person (text) and for a machine (JSON)."""
from __future__ import annotations

import json
from typing import Any, Mapping

from .rows import BROKEN_CATEGORIES, NOTE_CATEGORIES, AuditReport, Finding

def _detail_text(details: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in details.items() if value not in (None, ""))


def _finding_line(finding: Finding, width: int) -> str:
    return (f"  {finding.category:<{width}}  {finding.payment_id or '-'}  {finding.biller_code or '-'}  "
            f"{finding.message}  [{_detail_text(finding.details)}]")


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
        lines.append(f"  totals {code}: {journal_part}; {ledger_part}")
    for name, states in report.counts.items():
        lines.append(f"  states {name}: " + ", ".join(f"{state} {n}" for state, n in states.items()))
    return "\n".join(lines) + "\n"


def render_json(report: AuditReport) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"
