"""A biller's configuration as an operator meets it: ``billgw check-config``
refuses an unknown adapter kind, a misspelt adapter setting, a bad nested
value, a bad breaker or maintenance window -- each with a message naming the
key -- and the gateway puts every adapter behind its guard."""
from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from billgw.billing_adapters.breaker import BreakerSettings
from billgw.billing_adapters.guarded import GuardedAdapter
from billgw.billing_adapters.telecom_soap import TelecomSoapAdapter
from billgw.gateway.cli import main
from billgw.gateway.config import ConfigError, parse_settings, validate_adapters


def packaged_text() -> str:
    return resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")


def check_config(tmp_path, text: str, capsys) -> tuple[int, str, str]:
    path = tmp_path / "billgw.toml"
    path.write_text(text, encoding="utf-8")
    try:
        main(["--config", str(path), "check-config"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_packaged_configuration_passes(tmp_path, capsys):
    code, out, err = check_config(tmp_path, packaged_text(), capsys)
    assert (code, err) == (0, "")
    assert "OK (1 biller(s))" in out


@pytest.mark.parametrize("old,new,message", [
    ('adapter = "telecom_soap"', 'adapter = "carrier_pigeon"',
     "billers.TEL.adapter: unknown biller adapter kind 'carrier_pigeon'"),
    ("pool_size = 4 ", "pool_sise = 4 ", "billers.TEL.settings.pool_sise: unknown setting"),
    ("pool_size = 4 ", 'pool_size = "4" ', "billers.TEL.settings.pool_size: must be a positive integer"),
    ('url = "http://127.0.0.1:8081/BillingService"', 'url = { host = "127.0.0.1" }',
     "billers.TEL.settings.url: must be a string URL"),
    ('url = "http://127.0.0.1:8081/BillingService"', '',
     "billers.TEL.settings.url: required setting is missing"),
    ("failure_threshold = 5", "failure_threshold = 0", "billers.TEL.breaker.failure_threshold: must be greater"),
    ("\nopen_seconds = 30\n", "\nopen_seconds = 600\n",
     "billers.TEL.breaker.open_seconds: greater than max_open_seconds"),
    ("enabled = true\nfailure", "enabeld = true\nfailure", "billers.TEL.breaker.enabeld: unknown key"),
    ("max_concurrent = 32", "max_concurrent = 0", "billers.TEL.max_concurrent: must be 1..10000"),
])
def test_check_config_names_the_key(tmp_path, capsys, old, new, message):
    text = packaged_text()
    assert old in text
    code, out, err = check_config(tmp_path, text.replace(old, new, 1), capsys)
    assert code == 2, out
    assert message in err
    assert "Traceback" not in err


WINDOWS = '''
[[billers.TEL.maintenance]]
start = "{start}"
end = "{end}"
days = {days}
'''


@pytest.mark.parametrize("start,end,days,message", [
    ("25:00", "01:00", "[]", "billers.TEL.maintenance[0]: must be a time of day HH:MM"),
    ("01:00", "02:00", '["someday"]', "billers.TEL.maintenance[0].days: 'someday' is not one of"),
    ("01:00", "02:00", '"fri"', "billers.TEL.maintenance[0].days: expected list"),
])
def test_bad_maintenance_windows_are_named(tmp_path, capsys, start, end, days, message):
    text = _insert_before_services(packaged_text(), WINDOWS.format(start=start, end=end, days=days))
    code, _, err = check_config(tmp_path, text, capsys)
    assert code == 2 and message in err


def test_windows_and_breaker_are_parsed(tmp_path):
    text = _insert_before_services(packaged_text(), WINDOWS.format(start="23:30", end="00:30", days='["sat"]'))
    settings = parse_settings(tomllib.loads(text), environ={})
    tel = settings.billers["TEL"]
    [window] = tel.maintenance
    assert (window.start, window.end, window.days) == (23 * 60 + 30, 30, frozenset({5}))
    assert tel.breaker == BreakerSettings(enabled=True, failure_threshold=5, open_seconds=30.0, max_open_seconds=300.0)
    assert tel.max_concurrent == 32


def test_nested_adapter_settings_reach_the_schema_with_environment_values():
    doc = tomllib.loads(packaged_text())
    doc["billers"]["TEL"]["settings"]["url"] = "${TEL_URL}"
    settings = parse_settings(doc, environ={"TEL_URL": "http://10.0.0.7:80/BillingService"})
    assert settings.billers["TEL"].adapter_settings["url"] == "http://10.0.0.7:80/BillingService"
    doc["billers"]["TEL"]["settings"]["codes"] = {"E1": {"meaning": "${MISSING}"}}
    with pytest.raises(ConfigError, match=r"billers\.TEL\.settings\.codes\.E1\.meaning: environment variable"):
        parse_settings(doc, environ={"TEL_URL": "x"})
    doc["billers"]["TEL"]["settings"]["codes"] = {"E1": {"meaning": "refused"}}
    with pytest.raises(ConfigError, match=r"^billers\.TEL\.settings\.codes: unknown setting"):
        validate_adapters(parse_settings(doc, environ={"TEL_URL": "http://h/x"}))


def test_the_gateway_guards_every_adapter(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from billgw.gateway.service import GatewayService

    doc = tomllib.loads(packaged_text())
    doc["database"]["url"] = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    doc["sms"]["enabled"] = False
    doc["billers"]["TEL"]["max_concurrent"] = 3
    doc["billers"]["TEL"]["breaker"]["failure_threshold"] = 2
    doc["billers"]["TEL"]["maintenance"] = [{"start": "01:00", "end": "02:00"}]
    settings = parse_settings(doc, environ={})
    gateway = GatewayService(settings, MemoryReactorClock())
    try:
        adapter = gateway.processor.route("TEL").adapter
        assert isinstance(adapter, GuardedAdapter) and isinstance(adapter.adapter, TelecomSoapAdapter)
        assert adapter.max_concurrent == 3
        assert adapter.breaker.settings.failure_threshold == 2
        assert [(w.start, w.end) for w in adapter.maintenance] == [(60, 120)]
        assert gateway.billers.adapters == {"TEL": adapter}
    finally:
        gateway.engine.dispose()


def _insert_before_services(text: str, block: str) -> str:
    marker = "# Services of the biller"
    assert marker in text
    return text.replace(marker, block + "\n" + marker, 1)


def test_the_json_billers_example_passes_check_config(tmp_path, capsys):
    example = resources.files("billgw.conf").joinpath("billers-json.example.toml").read_text("utf-8")
    code, out, err = check_config(tmp_path, packaged_text() + "\n" + example, capsys)
    assert (code, err) == (0, "")
    assert "OK (3 biller(s))" in out
    settings = parse_settings(tomllib.loads(packaged_text() + "\n" + example), environ={})
    mun = settings.billers["MUN"]
    assert [(w.start, w.end, w.days) for w in mun.maintenance] == [(23 * 60 + 30, 15, frozenset({4}))]
    assert settings.billers["WAT"].adapter_settings["headers"] == {"Authorization": "Bearer demo-token"}


def test_the_electricity_example_passes_check_config(tmp_path, capsys):
    example = resources.files("billgw.conf").joinpath("billers-electricity.example.toml").read_text("utf-8")
    code, out, err = check_config(tmp_path, packaged_text() + "\n" + example, capsys)
    assert (code, err) == (0, ""), err
    assert "OK (2 biller(s))" in out
    settings = parse_settings(tomllib.loads(packaged_text() + "\n" + example), environ={"ELE_PASSWORD": "pw123"})
    assert settings.billers["ELE"].adapter_settings["password"] == "pw123"


@pytest.mark.parametrize("old,new,message", [
    ('framing = "length2"', 'framing = "fixed"',
     'billers.ELE.settings.record_length: required with framing = "fixed"'),
    ('framing = "length2"', 'framing = "fixed"\nrecord_length = 100',
     "billers.ELE.settings.record_length: must hold the longest record (379 bytes)"),
    ('code_page = "cp037"', 'code_page = "utf-8"', "billers.ELE.settings.code_page: code page 'utf-8' is not"),
    ('code_page = "cp037"', 'code_page = "ebcdic-martian"', "billers.ELE.settings.code_page: unknown code page"),
    ('user = "BILLGW"', 'user = "BILLGATEWAY"', "billers.ELE.settings.user: at most 8 characters"),
    ('user = "BILLGW"', 'user = "BILL€"', "billers.ELE.settings.user: text 'BILL€' has a character"),
    ('port = 8084', 'port = 70000', "billers.ELE.settings.port: must be a TCP port"),
    ('heartbeat_timeout = 10 ', 'heartbeat_timeout = 40 ',
     "billers.ELE.settings.heartbeat_timeout: must be shorter than heartbeat_interval"),
    ('E201 = "cutoff_passed"', 'E201 = "closed"', "billers.ELE.settings.error_codes.E201: must be one of"),
    ('E201 = "cutoff_passed"', 'e201 = "cutoff_passed"', "billers.ELE.settings.error_codes.e201: key does not"),
    ('currency_exponent = 3 ', 'currency_exponent = 4 ', "billers.ELE.settings.currency_exponent: must be 0-3"),
    ('heartbeat_interval = 30 ', 'heartbeat_intervall = 30 ', "billers.ELE.settings.heartbeat_intervall: unknown"),
])
def test_check_config_names_the_electricity_key(tmp_path, capsys, old, new, message):
    example = resources.files("billgw.conf").joinpath("billers-electricity.example.toml").read_text("utf-8")
    assert old in example
    code, out, err = check_config(tmp_path, packaged_text() + "\n" + example.replace(old, new, 1), capsys)
    assert code == 2, out
    assert message in err
