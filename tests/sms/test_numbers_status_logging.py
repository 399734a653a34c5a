"""MSISDN normalisation, the command_status table from conf/, smpplib's log
lines routed through structlog, and the [sms] configuration checks."""
import logging
import tomllib
from importlib import resources

import pytest
from structlog.testing import capture_logs

from billgw.gateway.config import ConfigError, SmsSettings, parse_settings, require_sms_password
from billgw.sms.msisdn import InvalidMsisdn, normalise_msisdn
from billgw.sms.smpplib_logging import route_smpplib_logging
from billgw.sms.status_table import StatusClass, StatusTable, load_status_table


@pytest.mark.parametrize("raw, country, e164", [
    ("962791234567", "JO", "962791234567"),   # international without +
    ("+962791234567", "JO", "962791234567"),
    ("0791234567", "JO", "962791234567"),     # national, Jordan
    ("0944123456", "SY", "963944123456"),     # national, Syria
    ("6944123456", "GR", "306944123456"),     # national, Greece
    ("306944123456", "JO", "306944123456"),   # a Greek number paid for in Jordan
])
def test_numbers_are_normalised_to_e164_and_sent_as_international(raw, country, e164):
    dest = normalise_msisdn(raw, country)
    assert (dest.address, dest.ton, dest.npi) == (e164, 1, 1)


@pytest.mark.parametrize("raw, country, e164", [
    ("٠٧٩١٢٣٤٥٦٧", "JO", "962791234567"),     # Arabic-Indic digits, national
    ("+٩٦٢٧٩١٢٣٤٥٦٧", "JO", "962791234567"),  # Arabic-Indic, international
    ("۰۹۴۴۱۲۳۴۵۶", "SY", "963944123456"),      # Eastern Arabic-Indic (Persian/Urdu keypads)
])
def test_arabic_indic_digits_are_read_as_the_digits_they_are(raw, country, e164):
    assert normalise_msisdn(raw, country).address == e164


@pytest.mark.parametrize("raw", ["000000", "٠٠٠٠٠٠", "07912345６７", "12", "", "0791 234 567x", "07９1234567"])
def test_nonsense_and_non_ascii_digits_are_invalid_without_echoing_the_number(raw):
    with pytest.raises(InvalidMsisdn) as e:
        normalise_msisdn(raw, "JO")
    assert raw == "" or raw not in str(e.value)


def test_packaged_status_table_classifies_the_statuses_of_the_issue():
    table = load_status_table()
    assert [table.classify(s) for s in (0x58, 0x14, 0x08, 0x64)] == [StatusClass.TEMPORARY] * 4
    assert [table.is_permanent(s) for s in (0x0B, 0x01, 0x0A)] == [True, True, True]
    assert table.classify(0x400) is StatusClass.TEMPORARY  # unlisted: the default


@pytest.mark.parametrize("data, message", [
    ({"status": {"0x58": "sometimes"}}, r"status\.0x58: must be"),
    ({"status": {"fifty": "temporary"}}, r"status\.fifty: not a command_status"),
    ({"default": "never"}, "default: must be"),
    ({"statuses": {}}, "statuses: unknown key"),
])
def test_a_bad_status_table_names_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        StatusTable.from_mapping(data, "t.toml")


def test_smpplib_log_records_become_structlog_events_not_text_lines(capsys):
    route_smpplib_logging()
    route_smpplib_logging()  # twice is harmless
    with capture_logs() as logs:
        logging.getLogger("smpplib.command").warning("Unknown optional parameter %s", "0x1403")
    assert logs == [{"event": "smpplib", "message": "Unknown optional parameter 0x1403", "log_level": "warning"}]
    assert capsys.readouterr().err == ""  # nothing reached the last-resort text handler
    assert logging.getLogger("smpplib").propagate is False


def default_doc():
    return tomllib.loads(resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8"))


def test_no_default_password_a_missing_one_stops_the_gateway_naming_the_key():
    settings = parse_settings(default_doc(), environ={})
    assert settings.sms.password == ""
    with pytest.raises(ConfigError, match=r"sms\.password: required when sms\.enabled"):
        require_sms_password(settings.sms)
    require_sms_password(parse_settings(default_doc(), environ={"BILLGW_SMPP_PASSWORD": "pw"}).sms)
    require_sms_password(SmsSettings(enabled=False))  # no SMS, no password needed


@pytest.mark.parametrize("key, value, message", [
    ("window", 0, r"sms\.window: must be 1\.\.1000"),
    ("rate", 0.0, r"sms\.rate: must be greater than zero"),
    ("country", "XX", r"sms\.country: must be an ISO 3166"),
    ("max_pdu_length", 10, r"sms\.max_pdu_length: must be 64"),
    ("status_table", "/nonexistent.toml", r"sms\.status_table: .*nonexistent"),
    ("lease_seconds", 5.0, r"sms\.lease_seconds: must exceed submit_timeout \+ window / rate"),
    ("throttle", 1.0, r"sms\.throttle: unknown key"),
])
def test_bad_sms_settings_fail_naming_the_key(key, value, message):
    doc = default_doc()
    doc["sms"][key] = value
    with pytest.raises(ConfigError, match=message):
        parse_settings(doc, environ={})


def test_a_status_table_of_ones_own_replaces_the_packaged_one(tmp_path):
    path = tmp_path / "status.toml"
    path.write_text('default = "permanent"\n[status]\n"0x0B" = "temporary"\n')
    doc = default_doc()
    doc["sms"]["status_table"] = str(path)
    table = parse_settings(doc, environ={}).sms.status_table
    assert not table.is_permanent(0x0B) and table.is_permanent(0x58)
