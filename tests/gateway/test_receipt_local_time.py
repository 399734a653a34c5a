"""The dates an SMS receipt shows are the gateway's local time
([business_day] timezone), not UTC: tested on both sides of local midnight,
where the two disagree about the day."""
import datetime as dt

import pytest

from billgw.gateway.config import load_settings
from billgw.gateway.receipts import ReceiptComposer

TEMPLATES = {"en": "{date} | {date_short} | {short_reference}"}
REVERSALS = {"en": "reversed {date} | {date_short}"}


def utc_seconds(*args) -> float:
    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


def render(composer: ReceiptComposer, paid_at: float, *, reversal: bool = False) -> str:
    settings = load_settings(environ={})
    biller = settings.billers["TEL"]
    render = composer.reversal_text if reversal else composer.receipt_text
    return render(language="en", biller=biller, service=biller.services["MOBILE"], billing_number="0791234567",
                  bill_number=None, amount=12500, fee=0, paid_at=paid_at, receipt_number="R1",
                  reference="3f9a1c07b2e84d0f9c51a6b7d2e3f405", masked_pan="476173******0010")


# Asia/Riyadh: UTC+3 all year since 1947 (no DST), so the expected texts do
# not depend on the machine's tzdata version.
@pytest.mark.parametrize("utc, local", [
    ((2026, 12, 5, 20, 59), "2026-12-05 23:59 | 05/12/26 23:59"),  # before local midnight
    ((2026, 12, 5, 21, 0), "2026-12-06 00:00 | 06/12/26 00:00"),   # local midnight, 21:00 UTC
    ((2026, 12, 5, 21, 30), "2026-12-06 00:30 | 06/12/26 00:30"),  # UTC still says the 5th
    ((2026, 12, 31, 22, 15), "2027-01-01 01:15 | 01/01/27 01:15"),  # the year turns locally first
])
def test_receipt_dates_are_the_gateways_local_time_across_midnight(utc, local):
    composer = ReceiptComposer(TEMPLATES, REVERSALS, timezone="Asia/Riyadh")
    assert render(composer, utc_seconds(*utc)) == f"{local} | 3F9A1C07B2"
    assert render(composer, utc_seconds(*utc), reversal=True) == f"reversed {local}"


def test_utc_is_the_default_and_west_of_greenwich_goes_back_a_day():
    at = utc_seconds(2026, 12, 6, 2, 30)
    assert render(ReceiptComposer(TEMPLATES, REVERSALS), at) == "2026-12-06 02:30 | 06/12/26 02:30 | 3F9A1C07B2"
    # America/Panama: UTC-5 all year.
    assert render(ReceiptComposer(TEMPLATES, REVERSALS, timezone="America/Panama"), at) == (
        "2026-12-05 21:30 | 05/12/26 21:30 | 3F9A1C07B2")


def test_an_unknown_timezone_is_refused_when_the_composer_is_built():
    with pytest.raises(ValueError, match="Mars/Olympus"):
        ReceiptComposer(TEMPLATES, REVERSALS, timezone="Mars/Olympus")
