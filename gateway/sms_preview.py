"""``billgw sms preview`` and ``billgw sms ref``: the receipt texts seen before
a subscriber sees them, and a short reference read out by a subscriber
turned back into payments.

``preview`` renders the configured templates with sample data (the biller's
own names and its first service's currency when ``--biller`` is given) and
says what the SMSC will get: the template key used (after the fallback
biller+language -> language -> biller+en -> en), the encoding (GSM-7 or
UCS-2), the code units (an escaped GSM character or a surrogate pair counts
two) and the number of parts under the configured concatenation scheme.  A
template that goes past one part is flagged, so an operator who edits
``conf/`` sees the cost before the first payment.

``ref`` finds the payments whose id starts with a short reference
(:func:`billgw.sms.templates.short_reference`): a range scan of the primary
key, read-only, so it is cheap on both databases.  Several payments can
share 40 bits; the command lists them all with the date, amount and account
the SMS also shows, so the right one is told apart.

Both print only what a receipt itself shows (no PAN, no MSISDN).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
from dataclasses import dataclass, replace
from typing import TextIO

from billgw.sms.encoding import DATA_CODING_GSM7, MessageTooLong, split_message
from billgw.sms.templates import (
    SAMPLE_RECEIPT,
    SHORT_REFERENCE_LENGTH,
    ReceiptData,
    normalise_language,
    pick_template,
    render_receipt,
    render_reversal_notice,
)

SAMPLE_REFERENCE = "3f9a1c07b2e84d0f9c51a6b7d2e3f405"


@dataclass(frozen=True)
class Preview:
    key: str  # the template used: "ar" or "TEL/ar"
    language: str  # asked for
    text: str
    encoding: str  # "GSM-7" | "UCS-2"
    units: int
    parts: int

    def render(self) -> str:
        flag = "" if self.parts == 1 else "   <- more than one part"
        return (f"[{self.language}] template {self.key!r}: {self.encoding}, {self.units} characters, "
                f"{self.parts} part(s){flag}\n  {self.text}")


def sample_receipt(settings, biller_code: str | None) -> ReceiptData:
    """Sample data, in the biller's names and currency when it is known."""
    data = replace(SAMPLE_RECEIPT, reference=SAMPLE_REFERENCE, paid_at=_dt.datetime(2024, 2, 3, 14, 5),
                   receipt_number="R-778", billing_number="0791234567", bill_number="2024-01")
    biller = settings.billers.get(biller_code or "")
    if biller is None:
        return replace(data, biller_code=biller_code or "")
    service = next(iter(biller.services.values()), None)
    data = replace(data, biller_code=biller.code, biller_name_en=biller.name_en, biller_name_ar=biller.name_ar)
    if service is not None:
        data = replace(data, currency=service.currency, exponent=service.exponent,
                       currency_code=service.currency_code,
                       biller_name_en=service.name_en or biller.name_en,
                       biller_name_ar=service.name_ar or biller.name_ar)
    return data


def preview(templates, language: str, data: ReceiptData, *, reversal: bool = False,
            scheme: str = "udh8") -> Preview:
    render = render_reversal_notice if reversal else render_receipt
    key, _, _ = pick_template(language, templates, data.biller_code)
    text = render(language, data, templates)
    try:
        message = split_message(text, scheme=scheme)
        parts, units, coding = len(message.parts), message.units, message.data_coding
    except MessageTooLong:
        parts, units, coding = 256, len(text), None
    return Preview(key, normalise_language(language) or "en", text,
                   "GSM-7" if coding == DATA_CODING_GSM7 else "UCS-2", units, parts)


def _languages(templates, biller_code: str | None) -> list[str]:
    langs = {key.rpartition("/")[2] for key in templates
             if "/" not in key or key.startswith(f"{biller_code}/")}
    return sorted(langs)


def run_preview(settings, args, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    sms = settings.sms
    if args.biller and args.biller not in settings.billers:
        known = ", ".join(sorted(settings.billers)) or "none"
        print(f"billgw sms preview: no biller {args.biller} in {settings.source} (billers: {known})",
              file=sys.stderr)
        return 2
    templates = sms.reversal_templates if args.reversal else sms.receipt_templates
    data = sample_receipt(settings, args.biller)
    languages = [args.language] if args.language else _languages(templates, args.biller)
    kind = "reversal notice" if args.reversal else "receipt"
    print(f"{kind} templates, concatenation {sms.concatenation}, sample data"
          f"{' of biller ' + args.biller if args.biller else ''}:", file=out)
    for language in languages:
        print(preview(templates, language, data, reversal=args.reversal, scheme=sms.concatenation).render(),
              file=out)
    return 0


# -- billgw sms ref -----------------------------------------------------------

def _hex_prefix(short: str) -> str | None:
    text = short.strip().lower()
    if not 4 <= len(text) <= 32 or any(c not in "0123456789abcdef" for c in text):
        return None
    return text


def find_by_short_reference(engine, short: str) -> list[dict]:
    """Payments whose id starts with ``short`` (blocking; a CLI helper).
    A range on the primary key (``id >= p AND id < p + 'g'``): indexed on
    SQLite and PostgreSQL alike, where LIKE would not be on PostgreSQL."""
    from sqlalchemy import and_, select

    from .schema import transactions as t

    prefix = _hex_prefix(short)
    if prefix is None:
        raise ValueError(f"a short reference is 4..32 hexadecimal characters, not {short!r}")
    query = (select(t.c.id, t.c.created_at, t.c.state, t.c.kind, t.c.biller_code, t.c.service_code,
                    t.c.billing_number, t.c.amount, t.c.currency)
             .where(and_(t.c.id >= prefix, t.c.id < prefix + "g")).order_by(t.c.created_at).limit(50))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def run_ref(settings, args, out: TextIO | None = None) -> int:
    import os

    from sqlalchemy.exc import SQLAlchemyError

    from .audit.snapshot import make_audit_engine  # read-only on SQLite

    out = out or sys.stdout
    engine = make_audit_engine(settings.database.url)
    try:
        database = engine.url.database
        if engine.url.get_backend_name() == "sqlite" and database not in (None, "", ":memory:") \
                and not os.path.isfile(database):
            raise ValueError(f"journal database {database} does not exist (database.url in {settings.source})")
        rows = find_by_short_reference(engine, args.reference)
    except ValueError as exc:
        print(f"billgw sms ref: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", exc)).splitlines()[0]
        print(f"billgw sms ref: cannot read the journal ({cause}); is its schema up to date "
              "(billgw db upgrade)?", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if not rows:
        print(f"no payment starts with {args.reference.upper()}", file=out)
        return 1
    if len(rows) > 1:
        print(f"{len(rows)} payments share {args.reference.upper()}: tell them apart by date, amount and account",
              file=out)
    for r in rows:
        print(f"{r['id']}  {r['created_at']:%Y-%m-%d %H:%M}  {r['kind']:<7} {r['state']:<10} "
              f"{r['biller_code']}/{r['service_code']}  account {r['billing_number']}  "
              f"amount {r['amount']} (currency {r['currency']})", file=out)
    return 0


def add_arguments(sms_sub) -> None:
    """The ``preview`` and ``ref`` sub-commands of ``billgw sms``."""
    p = sms_sub.add_parser("preview", help="show the receipt templates rendered, their encoding and parts")
    p.add_argument("--biller", help="a biller code: its own templates, names and currency")
    p.add_argument("--language", help="one language (default: every configured one)")
    p.add_argument("--reversal", action="store_true", help="the reversal notice instead of the receipt")
    r = sms_sub.add_parser("ref", help="find the payment(s) of a receipt's short reference")
    r.add_argument("reference", help=f"the {SHORT_REFERENCE_LENGTH}-character reference the SMS shows")


def run(settings, args: argparse.Namespace) -> int:
    if args.sms_command == "preview":
        return run_preview(settings, args)
    if args.sms_command == "ref":
        return run_ref(settings, args)
    raise SystemExit(f"unknown sms command {args.sms_command}")
