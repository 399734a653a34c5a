"""The bill rules' configuration keys: read, checked, and named when wrong."""
import tomllib
from importlib import resources

import pytest

from billgw.gateway import bill_rules as br
from billgw.gateway.config import ConfigError, parse_settings


def doc_with(**service_keys):
    text = resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")
    doc = tomllib.loads(text)
    doc["billers"]["TEL"]["services"]["MOBILE"].update(service_keys)
    return doc


def service(**keys):
    return parse_settings(doc_with(**keys), environ={}).billers["TEL"].services["MOBILE"]


def test_defaults_keep_todays_behaviour():
    s = service()
    assert s.kind == "postpaid" and s.amount_rule == br.AmountRule(br.ANY)
    assert s.surcharge is None and s.fee_bearer == "customer" and not s.needs_bills


def test_rules_are_read():
    s = service(amount_rule="partial_or_over", partial_min=500, over_max=10_000, fee=250, fee_bearer="biller",
                late_surcharge={"kind": "yearly_rate", "rate_bp": 1800, "grace_days": 5})
    assert s.amount_rule == br.AmountRule(br.PARTIAL_OR_OVER, partial_min=500, over_max=10_000)
    assert s.surcharge == br.SurchargeRule(br.YEARLY_RATE, rate_bp=1800, grace_days=5)
    assert s.fee_bearer == "biller" and s.customer_fee == 0 and s.needs_bills
    top = service(kind="prepaid", topup_amounts=[5_000, 10_000])
    assert top.prepaid and top.topup_amounts == (5_000, 10_000) and not top.needs_bills
    assert service(late_surcharge={"kind": "fixed", "amount": 500}).needs_bills
    ref = service(inquiry_reference="required", inquiry_reference_ttl=300)
    assert (ref.inquiry_reference, ref.inquiry_reference_ttl) == ("required", 300.0)


P = r"^billers\.TEL\.services\.MOBILE\."


@pytest.mark.parametrize("keys, message", [
    ({"amount_rule": "some"}, P + r"amount_rule: must be one of any, exact"),
    ({"kind": "pre-paid"}, P + r"kind: must be one of postpaid, prepaid"),
    ({"fee_bearer": "bank"}, P + r"fee_bearer: must be one of customer, biller"),
    ({"amount_rule": "exact", "partial_min": 100}, P + r"partial_min: only with amount_rule"),
    ({"amount_rule": "partial", "over_max": 100}, P + r"over_max: only with amount_rule"),
    ({"amount_rule": "over"}, P + r"over_max: required with amount_rule \"over\""),
    ({"partial_min": -1, "amount_rule": "partial"}, P + r"partial_min: must not be negative"),
    ({"kind": "prepaid", "amount_rule": "exact"}, P + r"amount_rule: a prepaid service has no bill"),
    ({"kind": "prepaid", "topup_amounts": []}, P + r"topup_amounts: must be a non-empty list"),
    ({"kind": "prepaid", "topup_amounts": [5000, "x"]}, P + r"topup_amounts: must be a non-empty list"),
    ({"kind": "prepaid", "topup_amounts": [50]}, P + r"topup_amounts: 50 is outside min_amount"),
    ({"kind": "prepaid", "topup_amounts": [5000], "topup_step": 500}, P + r"topup_step: give topup_amounts"),
    ({"topup_step": 500}, P + r"topup_step: only for kind = \"prepaid\""),
    ({"kind": "prepaid", "late_surcharge": {"kind": "fixed", "amount": 5}}, P + r"late_surcharge: a prepaid"),
    ({"late_surcharge": {"kind": "daily"}}, P + r"late_surcharge\.kind: must be one of yearly_rate"),
    ({"late_surcharge": {"kind": "fixed"}}, P + r"late_surcharge\.amount: required and greater than zero"),
    ({"late_surcharge": {"kind": "percent", "amount": 5, "rate_bp": 100}}, P + r"late_surcharge\.amount: not used"),
    ({"late_surcharge": {"kind": "percent", "rate_bp": 100, "grace": 1}}, P + r"late_surcharge\.grace: unknown key"),
    ({"inquiry_reference": "always"}, P + r"inquiry_reference: must be one of ignored, checked, required"),
    ({"inquiry_reference_ttl": 0}, P + r"inquiry_reference_ttl: must be 0\.\.86400 s"),
])
def test_bad_rule_key_is_named(keys, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(doc_with(**keys), environ={})


def test_a_service_that_lists_bills_before_posting_needs_a_short_biller_timeout():
    doc = doc_with(amount_rule="exact")
    doc["billers"]["TEL"]["timeout"] = 13.0
    with pytest.raises(ConfigError, match=r"^billers\.TEL\.timeout: service MOBILE lists the bills"):
        parse_settings(doc, environ={})
    doc["billers"]["TEL"]["timeout"] = 12.5
    parse_settings(doc, environ={})


def test_the_audit_re_checks_a_top_up_rule():
    """A top-up rule is static (gateway/rules.py), so billgw audit re-checks
    every journaled payment against it, whatever let it through."""
    from billgw.gateway.audit.command import rule_check
    from billgw.gateway.audit.rows import JournalRow

    settings = parse_settings(doc_with(kind="prepaid", topup_amounts=[5_000, 10_000]), environ={})
    check = rule_check(settings)

    def row(amount):
        return JournalRow(id="p1", kind="payment", state="CONFIRMED", amount=amount, biller_code="TEL",
                          currency="400", service_code="MOBILE", billing_number="0791234567")

    assert check(row(5_000)) is None
    assert check(row(7_500)) == "amount_not_offered"
