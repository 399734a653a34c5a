"""From a confirmed payment to the text of its SMS receipt.

The gateway renders the text when it confirms the payment and stores it in
the outbox in the same transaction: what the subscriber receives is fixed at
confirmation (the templates come from conf/, the rendering from billgw.sms).

Dates in the text (``{date}``, ``{date_short}``) are the gateway's local
time -- ``[business_day] timezone``, the zone its business dates and the
customer's ATM slip use -- not UTC: a payment at 00:30 in Amman is
receipted on the day the customer paid, not the evening before.
"""
from __future__ import annotations

import datetime as _dt
from typing import Mapping

from billgw.sms.templates import ReceiptData, render_receipt, render_reversal_notice

from .business_day import zone
from .config import BillerSettings, ServiceSettings


class ReceiptComposer:
    """Renders receipts with dates in ``timezone`` (an IANA name; the
    gateway passes its business day's)."""

    def __init__(self, receipt_templates: Mapping[str, str], reversal_templates: Mapping[str, str],
                 timezone: str = "UTC"):
        self._receipt = dict(receipt_templates)
        self._reversal = dict(reversal_templates)
        self._zone = zone(timezone)

    def data(self, *, biller: BillerSettings, service: ServiceSettings, billing_number: str,
             bill_number: str | None, amount: int, fee: int, paid_at: float, receipt_number: str,
             reference: str, masked_pan: str | None, surcharge: int = 0) -> ReceiptData:
        return ReceiptData(
            biller_name_en=service.name_en or biller.name_en,
            biller_name_ar=service.name_ar or biller.name_ar,
            billing_number=billing_number,
            bill_number=bill_number,
            amount=amount,
            currency=service.currency,
            exponent=service.exponent,
            currency_code=service.currency_code,
            fee=fee,
            paid_at=local_time(paid_at, self._zone),
            receipt_number=receipt_number,
            reference=reference,
            masked_pan=masked_pan or "",
            surcharge=surcharge,
            biller_code=biller.code,
        )

    def receipt_text(self, *, language: str, **kwargs) -> str:
        return render_receipt(language, self.data(**kwargs), self._receipt)

    def reversal_text(self, *, language: str, **kwargs) -> str:
        return render_reversal_notice(language, self.data(**kwargs), self._reversal)


def local_time(seconds: float, tz: _dt.tzinfo) -> _dt.datetime:
    """The wall-clock time in ``tz`` of a clock reading, naive (what a
    template prints)."""
    return _dt.datetime.fromtimestamp(seconds, tz).replace(tzinfo=None)
