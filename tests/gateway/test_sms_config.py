"""The [sms] keys of the receipts' text and numbers: concatenation scheme,
stuck-queue limit, invalid-MSISDN policy, templates per biller."""
import tomllib
from importlib import resources

import pytest

from billgw.gateway.config import ConfigError, parse_settings


def default_doc():
    return tomllib.loads(resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8"))


def test_packaged_values():
    sms = parse_settings(default_doc(), environ={}).sms
    assert (sms.concatenation, sms.queued_alert_after, sms.invalid_msisdn) == ("udh8", 900.0, "decline")
    assert {"en", "ar", "el", "TEL/en", "TEL/ar"} <= set(sms.receipt_templates)


def test_a_biller_table_adds_its_own_templates():
    doc = default_doc()
    doc["sms"]["templates"]["receipt"]["WAT"] = {"ar": "دفع {amount} مرجع {short_reference}"}
    doc["sms"]["concatenation"] = "sar"
    sms = parse_settings(doc, environ={}).sms
    assert sms.receipt_templates["WAT/ar"] == "دفع {amount} مرجع {short_reference}"
    assert sms.concatenation == "sar"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["sms"].__setitem__("concatenation", "udh32"), r"^sms\.concatenation: must be one of"),
    (lambda d: d["sms"].__setitem__("invalid_msisdn", "ignore"), r"^sms\.invalid_msisdn: must be one of"),
    (lambda d: d["sms"].__setitem__("queued_alert_after", 0), r"^sms\.queued_alert_after: must be greater"),
    (lambda d: d["sms"]["templates"]["receipt"]["TEL"].__setitem__("ar", "{pan}"),
     r"^sms\.templates\.receipt: SMS template 'TEL/ar': unknown placeholder \{pan\}"),
    (lambda d: d["sms"]["templates"]["receipt"]["TEL"].__setitem__("el", 5),
     r"^sms\.templates\.receipt\.TEL\.el: expected str"),
])
def test_bad_key_is_named(mutate, message):
    doc = default_doc()
    mutate(doc)
    with pytest.raises(ConfigError, match=message):
        parse_settings(doc, environ={})
