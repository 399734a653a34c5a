"""``[billers.CODE]`` and their ``services``: adapters, timeouts, resilience, bill rules.

A biller's adapter settings are kept as plain values here and checked
against its adapter kind's schema by :func:`validate_adapters`; a service's
amount bounds, billing-number pattern and bill rules (gateway/bill_rules.py,
docs/bill-rules.md) are checked in full.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from billgw.billing_adapters.breaker import BreakerSettings
from billgw.billing_adapters.maintenance import WEEKDAYS, MaintenanceWindow

from ..bill_rules import AMOUNT_RULES, ANY, SURCHARGE_KINDS, AmountRule, SurchargeRule
from ..business_day import CutOff
from .business_calendar import _cutoff
from .reader import ConfigError, _non_negative, _one_of, _plain, _positive, _regex, _Section

if TYPE_CHECKING:
    from . import Settings

POSTPAID = "postpaid"
PREPAID = "prepaid"
FEE_CUSTOMER = "customer"  # added to the customer's debit
FEE_BILLER = "biller"  # deducted from what the biller is paid at settlement
REFERENCE_IGNORED = "ignored"  # a payment's IR is not looked at
REFERENCE_CHECKED = "checked"  # checked when the payment quotes one
REFERENCE_REQUIRED = "required"  # every payment quotes a fresh one


@dataclass(frozen=True)
class ServiceSettings:
    code: str
    name_en: str
    name_ar: str
    currency: str
    currency_code: str
    exponent: int
    billing_number_pattern: str
    min_amount: int
    max_amount: int
    fee: int
    # The bill rules (gateway/bill_rules.py, docs/bill-rules.md).
    kind: str = POSTPAID
    amount_rule: AmountRule = AmountRule()
    surcharge: SurchargeRule | None = None
    fee_bearer: str = FEE_CUSTOMER
    topup_amounts: tuple[int, ...] = ()
    topup_step: int = 0
    inquiry_reference: str = REFERENCE_IGNORED
    inquiry_reference_ttl: float = 900.0

    def billing_number_ok(self, number: str) -> bool:
        return re.fullmatch(self.billing_number_pattern, number) is not None

    @property
    def prepaid(self) -> bool:
        return self.kind == PREPAID

    @property
    def needs_bills(self) -> bool:
        """A payment must see the open bills before it is posted: its amount
        is judged against them, or a surcharge is added to them."""
        return not self.prepaid and (self.amount_rule.needs_bills or self.surcharge is not None)

    @property
    def customer_fee(self) -> int:
        """The fee added to the customer's debit (0 when the biller bears it)."""
        return self.fee if self.fee_bearer == FEE_CUSTOMER else 0


@dataclass(frozen=True)
class BillerSettings:
    code: str
    name_en: str
    name_ar: str
    adapter: str
    timeout: float
    active: bool
    adapter_settings: Mapping[str, Any]
    services: Mapping[str, ServiceSettings]
    reversal_policy: str = "allowed"
    # Resilience (billing_adapters/guarded.py): calls in flight at most,
    # the circuit breaker, and the windows in which the biller is offline.
    max_concurrent: int = 32
    breaker: BreakerSettings = BreakerSettings()
    maintenance: tuple[MaintenanceWindow, ...] = ()
    # The biller's daily cut-off (gateway/business_day.py): None, none.
    cutoff: CutOff | None = None


def _service(code: str, s: _Section, biller_names: tuple[str, str]) -> ServiceSettings:
    exponent = s.get("exponent", int, check=lambda v: None if 0 <= v <= 3 else "must be 0..3")
    out = ServiceSettings(
        code=code,
        name_en=s.get("name_en", str, biller_names[0]),
        name_ar=s.get("name_ar", str, biller_names[1]),
        currency=s.get("currency", str, check=lambda v: None if len(v) == 3 and v.isdigit() else "must be an ISO 4217 numeric code such as \"400\""),
        currency_code=s.get("currency_code", str, check=lambda v: None if len(v) == 3 and v.isalpha() else "must be an ISO 4217 alphabetic code such as \"JOD\""),
        exponent=exponent,
        billing_number_pattern=s.get("billing_number_pattern", str, r".{1,30}", check=_regex),
        min_amount=s.get("min_amount", int, 1, check=_positive),
        max_amount=s.get("max_amount", int, 999_999_999_999, check=_positive),
        fee=s.get("fee", int, 0, check=_non_negative),
        **_bill_rules(s),
    )
    if out.min_amount > out.max_amount:
        raise ConfigError(f"{s.path}.min_amount: greater than max_amount")
    if out.prepaid:
        outside = [a for a in out.topup_amounts if not out.min_amount <= a <= out.max_amount]
        if outside:
            raise ConfigError(f"{s.path}.topup_amounts: {outside[0]} is outside min_amount..max_amount")
    s.done()
    return out


def _amount_list(value):
    if not value or not all(isinstance(a, int) and not isinstance(a, bool) and a > 0 for a in value):
        return "must be a non-empty list of positive integers (minor units)"
    return None


def _bill_rules(s: _Section) -> dict[str, Any]:
    """The service's bill rules: amount rule, top-ups, surcharge, fee bearer."""
    kind = s.get("kind", str, POSTPAID, check=_one_of(POSTPAID, PREPAID))
    rule_kind = s.get("amount_rule", str, ANY, check=_one_of(*AMOUNT_RULES))
    partial_min = s.get("partial_min", int, 0, check=_non_negative)
    over_max = s.get("over_max", int, 0, check=_non_negative)
    if partial_min and rule_kind not in ("partial", "partial_or_over"):
        raise ConfigError(f"{s.path}.partial_min: only with amount_rule \"partial\" or \"partial_or_over\"")
    if over_max and rule_kind not in ("over", "partial_or_over"):
        raise ConfigError(f"{s.path}.over_max: only with amount_rule \"over\" or \"partial_or_over\"")
    if rule_kind in ("over", "partial_or_over") and not over_max:
        raise ConfigError(f"{s.path}.over_max: required with amount_rule \"{rule_kind}\" (minor units above the due)")
    topup_amounts = tuple(s.get("topup_amounts", list, [], check=_amount_list) if "topup_amounts" in s.data else ())
    topup_step = s.get("topup_step", int, 0, check=_non_negative)
    if kind == PREPAID:
        if rule_kind != ANY:
            raise ConfigError(f"{s.path}.amount_rule: a prepaid service has no bill to judge the amount by")
        if topup_amounts and topup_step:
            raise ConfigError(f"{s.path}.topup_step: give topup_amounts or topup_step, not both")
    elif topup_amounts or topup_step:
        key = "topup_amounts" if topup_amounts else "topup_step"
        raise ConfigError(f"{s.path}.{key}: only for kind = \"prepaid\"")
    surcharge = None
    if "late_surcharge" in s.data:
        if kind == PREPAID:
            raise ConfigError(f"{s.path}.late_surcharge: a prepaid service has no due date")
        surcharge = _surcharge(s.section("late_surcharge"))
    return dict(
        kind=kind, amount_rule=AmountRule(rule_kind, partial_min=partial_min, over_max=over_max),
        surcharge=surcharge,
        fee_bearer=s.get("fee_bearer", str, FEE_CUSTOMER, check=_one_of(FEE_CUSTOMER, FEE_BILLER)),
        topup_amounts=topup_amounts, topup_step=topup_step,
        inquiry_reference=s.get("inquiry_reference", str, REFERENCE_IGNORED,
                                check=_one_of(REFERENCE_IGNORED, REFERENCE_CHECKED, REFERENCE_REQUIRED)),
        inquiry_reference_ttl=s.get("inquiry_reference_ttl", float, 900.0,
                                    check=lambda v: None if 0 < v <= 86400 else "must be 0..86400 s"),
    )


def _surcharge(s: _Section) -> SurchargeRule:
    kind = s.get("kind", str, check=_one_of(*SURCHARGE_KINDS))
    needs = "amount" if kind == "fixed" else "rate_bp"
    rate_bp = s.get("rate_bp", int, 0, check=lambda v: None if 0 <= v <= 100_000 else "must be 0..100000 (basis points)")
    amount = s.get("amount", int, 0, check=_non_negative)
    grace_days = s.get("grace_days", int, 0, check=_non_negative)
    other = "rate_bp" if needs == "amount" else "amount"
    if other in s.data:
        raise ConfigError(f"{s.path}.{other}: not used by kind = \"{kind}\" (give {needs})")
    if not (amount if needs == "amount" else rate_bp):
        raise ConfigError(f"{s.path}.{needs}: required and greater than zero for kind = \"{kind}\"")
    s.done()
    return SurchargeRule(kind, rate_bp=rate_bp, amount=amount, grace_days=grace_days)


def _biller(code: str, s: _Section) -> BillerSettings:
    name_en = s.get("name_en", str)
    name_ar = s.get("name_ar", str, name_en)
    adapter = s.get("adapter", str)
    # The adapter's own settings may nest (column maps, code tables); they
    # are checked against the adapter kind's schema by validate_adapters.
    settings_section = s.section("settings")
    adapter_settings = _plain(settings_section.data, settings_section.path, s.environ)
    services_section = s.section("services", required=True)
    services = {
        svc: _service(svc, services_section.section(svc), (name_en, name_ar))
        for svc in services_section.keys()
    }
    if not services:
        raise ConfigError(f"{services_section.path}: a biller needs at least one service")
    out = BillerSettings(
        code=code,
        name_en=name_en,
        name_ar=name_ar,
        adapter=adapter,
        timeout=s.get("timeout", float, 10.0, check=lambda v: None if 0 < v <= 25 else "must be 0..25 s, under the switch's 30 s"),
        active=s.get("active", bool, True),
        reversal_policy=s.get("reversal_policy", str, "allowed", check=_one_of("allowed", "never")),
        adapter_settings=adapter_settings,
        services=services,
        max_concurrent=s.get("max_concurrent", int, BillerSettings.max_concurrent,
                             check=lambda v: None if 1 <= v <= 10_000 else "must be 1..10000"),
        breaker=_breaker(s.section("breaker")),
        maintenance=_maintenance(s),
        cutoff=_cutoff(s),
    )
    _bill_lookup_fits(out, s.path)
    s.done()
    return out


def _bill_lookup_fits(biller: "BillerSettings", path: str) -> None:
    """A service judged against its bills calls the biller twice per payment
    (list the bills, then post): both calls must fit the switch's 30 s."""
    looked_up = [svc for svc in biller.services.values() if svc.needs_bills]
    if looked_up and 2 * biller.timeout > 25:
        raise ConfigError(f"{path}.timeout: service {looked_up[0].code} lists the bills before it posts, "
                          "two biller calls per payment: at most 12.5 s so both fit under the switch's 30 s")


def _breaker(s: _Section) -> BreakerSettings:
    d = BreakerSettings()
    values = dict(
        enabled=s.get("enabled", bool, d.enabled),
        failure_threshold=s.get("failure_threshold", int, d.failure_threshold, check=_positive),
        open_seconds=s.get("open_seconds", float, d.open_seconds, check=_positive),
        max_open_seconds=s.get("max_open_seconds", float, d.max_open_seconds, check=_positive),
    )
    if values["open_seconds"] > values["max_open_seconds"]:
        raise ConfigError(f"{s.path}.open_seconds: greater than max_open_seconds")
    s.done()
    return BreakerSettings(**values)


def _maintenance(biller: _Section) -> tuple[MaintenanceWindow, ...]:
    """``[[billers.X.maintenance]]``: start, end (HH:MM UTC), days, reason."""
    entries = biller.get("maintenance", list, [])
    windows = []
    for i, entry in enumerate(entries):
        s = _Section(entry, f"{biller.path}.maintenance[{i}]", biller.environ)
        start = s.get("start", str)
        end = s.get("end", str)
        days = s.get("days", list, [])
        reason = s.get("reason", str, "")
        for day in days:
            if day not in WEEKDAYS:
                raise ConfigError(f"{s.path}.days: {day!r} is not one of {', '.join(WEEKDAYS)}")
        try:
            windows.append(MaintenanceWindow.parse(start, end, days=days, reason=reason))
        except ValueError as exc:
            raise ConfigError(f"{s.path}: {exc}") from None
        s.done()
    return tuple(windows)


def validate_adapters(settings: Settings) -> None:
    """Check each biller's adapter kind and its settings against the kind's
    schema, without building anything; ConfigError naming the key
    (``billers.TEL.settings.pool_size``) otherwise.  ``check-config`` and
    ``serve`` call it; parsing alone does not, so tools that only read the
    file (the audit) work with kinds this process cannot build."""
    from billgw.billing_adapters.registry import AdapterConfigError, check_adapter

    for code, biller in settings.billers.items():
        try:
            check_adapter(biller.adapter, dict(biller.adapter_settings))
        except AdapterConfigError as exc:
            raise ConfigError(f"billers.{code}.{exc.key}: {exc.problem}") from None
