"""Bad configuration fails at start-up with a message naming the key."""
import tomllib
from importlib import resources

import pytest

from billgw.gateway.config import ConfigError, load_settings, parse_settings
from billgw.iso8583.codes import Outcome


def default_doc():
    text = resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")
    return tomllib.loads(text)


def test_packaged_default_loads_with_telecom_biller():
    settings = load_settings(environ={})
    tel = settings.billers["TEL"]
    assert tel.adapter == "telecom_soap"
    assert tel.services["MOBILE"].exponent == 3
    assert tel.adapter_settings["pool_size"] == 4  # ints stay ints
    assert settings.sms.password == ""  # no default: GatewayService refuses to start without one
    assert settings.response_codes.code(Outcome.BILLER_UNAVAILABLE) == "91"


def test_secret_comes_from_the_environment():
    settings = parse_settings(default_doc(), environ={"BILLGW_SMPP_PASSWORD": "s3cr3t"})
    assert settings.sms.password == "s3cr3t"


def test_missing_environment_variable_names_key():
    doc = default_doc()
    doc["sms"]["password"] = "${NOT_SET_ANYWHERE}"
    with pytest.raises(ConfigError, match=r"sms\.password: environment variable NOT_SET_ANYWHERE"):
        parse_settings(doc, environ={})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["gateway"].__setitem__("lisen", "x"), r"^gateway\.lisen: unknown key$"),
        (lambda d: d.__setitem__("extra", {}), r"^extra: unknown key$"),
        (lambda d: d["gateway"].__setitem__("framing", "ascii2"), r"^gateway\.framing: must be one of"),
        (lambda d: d["gateway"].__setitem__("idle_timeout", "soon"), r"^gateway\.idle_timeout: expected float"),
        (lambda d: d["billers"]["TEL"].__setitem__("timeout", 40), r"^billers\.TEL\.timeout: must be 0\.\.25"),
        (lambda d: d["billers"]["TEL"]["services"]["MOBILE"].__setitem__("exponent", 5),
         r"^billers\.TEL\.services\.MOBILE\.exponent"),
        (lambda d: d["billers"]["TEL"]["services"]["MOBILE"].__setitem__("billing_number_pattern", "(("),
         r"^billers\.TEL\.services\.MOBILE\.billing_number_pattern: not a valid regular expression"),
        (lambda d: d["billers"]["TEL"]["services"]["MOBILE"].pop("currency"),
         r"^billers\.TEL\.services\.MOBILE\.currency: required key is missing"),
        (lambda d: d["billers"]["TEL"].pop("adapter"), r"^billers\.TEL\.adapter: required key is missing"),
        (lambda d: d["response_codes"].__setitem__("approvd", {"code": "00"}), r"^response_codes: unknown outcome 'approvd'"),
        (lambda d: d["sms"]["templates"]["receipt"].__setitem__("en", "Paid {amont}"), r"^sms\.templates\.receipt: "),
        (lambda d: d["sms"].__setitem__("password", "much-too-long"), r"^sms\.password: SMPP 3\.4 passwords"),
    ],
)
def test_bad_key_is_named(mutate, message):
    doc = default_doc()
    mutate(doc)
    with pytest.raises(ConfigError, match=message):
        parse_settings(doc, environ={})


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\nlisten=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_relative_sqlite_path_is_resolved_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = parse_settings({"database": {"url": "sqlite:///var/j.sqlite"}}, base=tmp_path, environ={})
    assert settings.database.url == f"sqlite:///{tmp_path}/var/j.sqlite"
