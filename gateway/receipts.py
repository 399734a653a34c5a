"""From a confirmed payment to the text of its SMS receipt.

The gateway renders the text when it confirms the payment and stores it in
the outbox in the same transaction: what the subscriber receives is fixed at
confirmation (the templates come from conf/, the rendering from billgw.sms).
"""
from __future__ import annotations

import datetime as _dt
from typing import Mapping

from billgw.sms.templates import ReceiptData, render_receipt, render_reversal_notice

from .config import BillerSettings, ServiceSettings


class ReceiptComposer:
    def __init__(self, receipt_templates: Mapping[str, str], reversal_templates: Mapping[str, str]):
        self._receipt = dict(receipt_templates)
        self._reversal = dict(reversal_templates)

    @staticmethod
    def data(*, biller: BillerSettings, service: ServiceSettings, billing_number: str,
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
            paid_at=_dt.datetime.fromtimestamp(paid_at, _dt.timezone.utc).replace(tzinfo=None),
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
