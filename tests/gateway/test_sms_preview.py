"""``billgw sms preview`` (templates rendered, encoding, parts) and
``billgw sms ref`` (a receipt's short reference back to its payments)."""
import argparse
import datetime as dt
import io

import pytest

from billgw.gateway import cli
from billgw.gateway.config import load_settings
from billgw.gateway.schema import transactions
from billgw.gateway.sms_preview import find_by_short_reference, preview, run_preview, run_ref, sample_receipt
from billgw.sms.templates import short_reference


@pytest.fixture(scope="module")
def settings():
    return load_settings(None)  # the packaged conf/billgw.toml


def _args(**kw):
    base = dict(biller=None, language=None, reversal=False)
    base.update(kw)
    return argparse.Namespace(**base)


def test_every_packaged_default_receipt_fits_one_part(settings):
    data = sample_receipt(settings, None)
    for language in ("en", "el", "ar"):
        for reversal in (False, True):
            templates = settings.sms.reversal_templates if reversal else settings.sms.receipt_templates
            p = preview(templates, language, data, reversal=reversal)
            assert p.parts == 1, p.render()
            assert p.encoding == ("UCS-2" if language == "ar" else "GSM-7")
            assert short_reference(data.reference) in p.text


def test_preview_names_the_biller_template_encoding_and_parts(settings):
    out = io.StringIO()
    assert run_preview(settings, _args(biller="TEL", language="ar"), out) == 0
    text = out.getvalue()
    assert "[ar] template 'TEL/ar': UCS-2, 61 characters, 1 part(s)" in text
    assert "لخط خلوي 0791234567" in text and "3F9A1C07B2" in text


def test_preview_flags_a_template_past_one_part(settings):
    # The generic Arabic receipt with the telecom's 25-letter Arabic name: two parts.
    templates = {k: v for k, v in settings.sms.receipt_templates.items() if not k.startswith("TEL/")}
    p = preview(templates, "ar", sample_receipt(settings, "TEL"))
    assert (p.key, p.encoding, p.parts) == ("ar", "UCS-2", 2)
    assert "2 part(s)   <- more than one part" in p.render()


def test_every_packaged_template_of_the_packaged_biller_fits_one_part(settings, capsys):
    for reversal in (False, True):
        out = io.StringIO()
        run_preview(settings, _args(biller="TEL", reversal=reversal), out)
        assert "more than one part" not in out.getvalue(), out.getvalue()


def test_preview_of_an_unknown_biller_is_a_usage_error(settings, capsys):
    assert run_preview(settings, _args(biller="NOPE")) == 2
    assert "no biller NOPE" in capsys.readouterr().err


def test_the_command_line_reaches_preview(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["sms", "preview", "--language", "el"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "[el] template 'el': GSM-7" in out and "1 part(s)" in out


def _payment(conn, pid, at, stan):
    now = dt.datetime(2024, 2, 3, 14, 5)
    conn.execute(transactions.insert().values(
        id=pid, kind="payment", mti="0200", processing_code="500000", acquirer_id="123456", terminal_id="ATM00001",
        stan=stan, transmission_dt="0203140509", rrn="000000000001", fingerprint="f" * 64, amount=12500,
        currency="400", fee=250, biller_code="TEL", service_code="MOB", billing_number="0791234567",
        state="CONFIRMED", created_at=at or now, updated_at=now))


def test_a_short_reference_finds_every_payment_that_starts_with_it(engine):
    with engine.begin() as conn:
        _payment(conn, "3f9a1c07b2e84d0f9c51a6b7d2e3f405", dt.datetime(2024, 2, 3, 14, 5), "000001")
        _payment(conn, "3f9a1c07b2ffffffffffffffffffffff", dt.datetime(2024, 2, 4, 9, 0), "000002")
        _payment(conn, "3f9a1c07b3000000000000000000000a", dt.datetime(2024, 2, 4, 9, 1), "000003")
    assert [r["id"] for r in find_by_short_reference(engine, "3F9A1C07B2")] == [
        "3f9a1c07b2e84d0f9c51a6b7d2e3f405", "3f9a1c07b2ffffffffffffffffffffff"]
    assert [r["id"] for r in find_by_short_reference(engine, "3f9a1c07b3")] == ["3f9a1c07b3000000000000000000000a"]
    assert find_by_short_reference(engine, "0000000000") == []
    with pytest.raises(ValueError, match="hexadecimal"):
        find_by_short_reference(engine, "3F9A-1C07")


def test_the_ref_command_lists_the_payments(engine, db_url, settings):
    import dataclasses

    with engine.begin() as conn:
        _payment(conn, "aa11bb22cc33dd44ee55ff6677889900", None, "000009")
    local = dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=db_url))
    out = io.StringIO()
    assert run_ref(local, argparse.Namespace(reference="AA11BB22CC"), out) == 0
    assert "aa11bb22cc33dd44ee55ff6677889900  2024-02-03 14:05  payment CONFIRMED  TEL/MOB" in out.getvalue()
    out = io.StringIO()
    assert run_ref(local, argparse.Namespace(reference="0123456789"), out) == 1
    assert "no payment starts with 0123456789" in out.getvalue()


def test_ref_on_a_journal_that_does_not_exist_is_a_usage_error(settings, tmp_path, capsys):
    import dataclasses

    missing = f"sqlite:///{tmp_path / 'nope.sqlite'}"
    local = dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=missing))
    assert run_ref(local, argparse.Namespace(reference="AA11BB22CC")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nope.sqlite").exists()
