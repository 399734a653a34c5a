"""The bill rules at their edges (pure: bills, rules and ``today`` in)."""
import datetime as dt

import pytest

from billgw.gateway import bill_rules as br
from billgw.gateway.bill_rules import AmountRule, BillShare, OpenBill, SurchargeRule
from billgw.iso8583.codes import Outcome

D = dt.date
YEARLY_18 = SurchargeRule(br.YEARLY_RATE, rate_bp=1800)


# --- surcharges ---------------------------------------------------------------

@pytest.mark.parametrize("due, today, days", [
    (D(2026, 1, 31), D(2026, 1, 31), 0),  # on the due date: not overdue
    (D(2026, 1, 31), D(2026, 1, 30), 0),  # before it
    (D(2026, 1, 31), D(2026, 2, 1), 1),  # across a month's end
    (D(2026, 12, 31), D(2027, 1, 1), 1),  # across a year's end
    (D(2024, 2, 28), D(2024, 3, 1), 2),  # 29 February 2024 is a day
    (D(2026, 2, 28), D(2026, 3, 1), 1),  # 2026 has none
    (D(2024, 2, 29), D(2025, 2, 28), 365),
])
def test_overdue_days(due, today, days):
    assert br.overdue_days(due, today) == days


def test_yearly_rate_counts_actual_days_over_365():
    # 18 % a year on 10.000 JOD: 1 day = 4.93 fils -> 5; 30 days = 147.9 -> 148.
    assert br.surcharge(YEARLY_18, 10_000, D(2026, 1, 31), D(2026, 2, 1)) == 5
    assert br.surcharge(YEARLY_18, 10_000, D(2026, 1, 31), D(2026, 3, 2)) == 148
    assert br.surcharge(YEARLY_18, 10_000, D(2026, 1, 31), D(2026, 1, 31)) == 0


def test_yearly_rate_across_29_february():
    # 28 Feb -> 1 Mar is 2 days in 2024 (leap) and 1 day in 2026.
    rule = SurchargeRule(br.YEARLY_RATE, rate_bp=3650)  # 36.5 % a year: 0.1 % of the bill a day
    assert br.surcharge(rule, 100_000, D(2024, 2, 28), D(2024, 3, 1)) == 200
    assert br.surcharge(rule, 100_000, D(2026, 2, 28), D(2026, 3, 1)) == 100
    # A whole leap-to-leap year of 365 days is exactly the yearly rate.
    assert br.surcharge(YEARLY_18, 10_000, D(2024, 2, 29), D(2025, 2, 28)) == 1800


@pytest.mark.parametrize("amount, expected", [(125, 1), (149, 1), (150, 2), (50, 1), (49, 0)])
def test_rounding_is_half_up_to_the_minor_unit(amount, expected):
    rule = SurchargeRule(br.PERCENT, rate_bp=100)  # 1 %
    assert br.surcharge(rule, amount, D(2026, 1, 1), D(2026, 1, 2)) == expected


def test_percent_and_fixed_apply_from_the_day_after_the_due_date():
    percent = SurchargeRule(br.PERCENT, rate_bp=500)
    fixed = SurchargeRule(br.FIXED, amount=750)
    assert br.surcharge(percent, 12_500, D(2026, 11, 30), D(2026, 11, 30)) == 0
    assert br.surcharge(percent, 12_500, D(2026, 11, 30), D(2026, 12, 1)) == 625
    assert br.surcharge(percent, 12_500, D(2026, 11, 30), D(2027, 6, 1)) == 625  # once, not per day
    assert br.surcharge(fixed, 12_500, D(2026, 11, 30), D(2026, 11, 30)) == 0
    assert br.surcharge(fixed, 12_500, D(2026, 11, 30), D(2026, 12, 1)) == 750


def test_grace_days_delay_the_surcharge_but_a_yearly_rate_counts_from_the_due_date():
    rule = SurchargeRule(br.YEARLY_RATE, rate_bp=3650, grace_days=3)
    assert br.surcharge(rule, 100_000, D(2026, 2, 28), D(2026, 3, 3)) == 0  # day 3: in grace
    assert br.surcharge(rule, 100_000, D(2026, 2, 28), D(2026, 3, 4)) == 400  # day 4: 4 days


def test_no_rule_or_nothing_due_is_no_surcharge():
    assert br.surcharge(None, 10_000, D(2020, 1, 1), D(2026, 1, 1)) == 0
    assert br.surcharge(SurchargeRule(br.FIXED, amount=500), 0, D(2020, 1, 1), D(2026, 1, 1)) == 0


# --- amount rules against the bills due ---------------------------------------

TODAY = D(2026, 11, 22)
BILLS = (OpenBill("B-2", 7_000, D(2026, 12, 1)), OpenBill("B-1", 12_500, D(2026, 11, 1)))


def plan(amount, kind=br.ANY, named=(), surcharge=None, bills=BILLS, **bounds):
    return br.plan_payment(bills, amount=amount, rule=AmountRule(kind, **bounds), surcharge_rule=surcharge,
                           named=named, today=TODAY)


@pytest.mark.parametrize("amount, outcome", [
    (12_500, None),  # the oldest bill, whole
    (19_500, None),  # both
    (12_499, Outcome.AMOUNT_BELOW_DUE),
    (12_501, Outcome.AMOUNT_BELOW_DUE),  # would leave B-2 partly paid
    (19_501, Outcome.AMOUNT_ABOVE_DUE),
    (7_000, Outcome.AMOUNT_BELOW_DUE),  # not the oldest: name B-2 to pay it alone
])
def test_exact(amount, outcome):
    assert plan(amount, br.EXACT)[0] is outcome


def test_exact_named_bill_must_be_paid_whole():
    problem, p = plan(7_000, br.EXACT, named=("B-2",))
    assert problem is None and p.shares == (BillShare("B-2", 7_000, 0),)
    assert plan(6_999, br.EXACT, named=("B-2",))[0] is Outcome.AMOUNT_BELOW_DUE
    assert plan(7_001, br.EXACT, named=("B-2",))[0] is Outcome.AMOUNT_ABOVE_DUE


@pytest.mark.parametrize("amount, outcome", [
    (999, Outcome.AMOUNT_BELOW_DUE), (1_000, None), (12_501, None), (19_500, None),
    (19_501, Outcome.AMOUNT_ABOVE_DUE)])
def test_partial_with_a_lower_bound(amount, outcome):
    assert plan(amount, br.PARTIAL, partial_min=1_000)[0] is outcome


def test_partial_pays_the_oldest_first():
    _, p = plan(13_000, br.PARTIAL, partial_min=1_000)
    assert p.shares == (BillShare("B-1", 12_500, 0), BillShare("B-2", 500, 0)) and p.advance == 0


@pytest.mark.parametrize("amount, outcome, advance", [
    (12_000, Outcome.AMOUNT_BELOW_DUE, None), (12_500, None, 0), (19_500, None, 0),
    (24_500, None, 5_000), (24_501, Outcome.AMOUNT_ABOVE_DUE, None)])
def test_over_with_an_upper_bound(amount, outcome, advance):
    problem, p = plan(amount, br.OVER, over_max=5_000)
    assert problem is outcome
    assert (p.advance if p else None) == advance


def test_partial_or_over_both_bounds():
    assert plan(999, br.PARTIAL_OR_OVER, partial_min=1_000, over_max=100)[0] is Outcome.AMOUNT_BELOW_DUE
    assert plan(1_000, br.PARTIAL_OR_OVER, partial_min=1_000, over_max=100)[0] is None
    assert plan(19_600, br.PARTIAL_OR_OVER, partial_min=1_000, over_max=100)[0] is None
    assert plan(19_601, br.PARTIAL_OR_OVER, partial_min=1_000, over_max=100)[0] is Outcome.AMOUNT_ABOVE_DUE


def test_named_bills_are_settled_oldest_first_whatever_the_order_named():
    problem, p = plan(19_500, br.EXACT, named=("B-2", "B-1"))
    assert problem is None
    assert p.bill_numbers == ("B-1", "B-2") and p.amount == 19_500


def test_named_bill_unknown_or_twice():
    assert plan(7_000, br.EXACT, named=("B-9",))[0] is Outcome.RECORD_NOT_FOUND
    assert plan(14_000, br.EXACT, named=("B-2", "B-2"))[0] is Outcome.INVALID_TRANSACTION


def test_nothing_due():
    assert plan(100, br.EXACT, bills=())[0] is Outcome.NO_BILL_DUE
    assert plan(100, br.PARTIAL, partial_min=1, bills=(OpenBill("B-0", 0, TODAY),))[0] is Outcome.NO_BILL_DUE
    problem, p = plan(100, br.OVER, over_max=100, bills=())
    assert problem is None and p.shares == () and p.advance == 100  # an advance on the account
    assert plan(101, br.OVER, over_max=100, bills=())[0] is Outcome.AMOUNT_ABOVE_DUE


def test_surcharge_is_part_of_the_due_and_settled_first():
    late = SurchargeRule(br.FIXED, amount=500)  # B-1 is overdue on TODAY, B-2 is not
    assert plan(12_500, br.EXACT, surcharge=late)[0] is Outcome.AMOUNT_BELOW_DUE
    problem, p = plan(13_000, br.EXACT, surcharge=late)
    assert problem is None and p.shares == (BillShare("B-1", 12_500, 500),) and p.surcharge == 500
    _, p = plan(1_000, br.PARTIAL, partial_min=100, surcharge=late)
    assert p.shares == (BillShare("B-1", 500, 500),)


def test_any_rule_only_allocates():
    problem, p = plan(30_000)
    assert problem is None and p.bill_numbers == ("B-1", "B-2") and p.advance == 10_500


# --- prepaid top-ups ------------------------------------------------------------

@pytest.mark.parametrize("amount, outcome", [
    (5_000, None), (10_000, None), (7_500, Outcome.AMOUNT_NOT_OFFERED)])
def test_topup_allowed_amounts(amount, outcome):
    assert br.topup_problem(amount, min_amount=100, max_amount=50_000, allowed=(5_000, 10_000)) is outcome


@pytest.mark.parametrize("amount, outcome", [
    (1_000, None), (1_500, None), (50_000, None), (1_499, Outcome.AMOUNT_NOT_OFFERED),
    (999, Outcome.INVALID_AMOUNT), (50_500, Outcome.INVALID_AMOUNT)])
def test_topup_range_and_step(amount, outcome):
    assert br.topup_problem(amount, min_amount=1_000, max_amount=50_000, step=500) is outcome


# --- the biller's confirmation ----------------------------------------------------

def test_confirmation_of_another_amount_is_a_problem():
    assert br.confirmation_problem(1_000, 1_000) is None
    assert "1 is not the 1000" in br.confirmation_problem(1_000, 1)
    assert br.confirmation_problem(1_000, 1_001) is not None
    assert br.confirmation_problem(1_000, 1_000, [600, 400]) is None
    assert br.confirmation_problem(1_000, 1_000, [600, 500]) is not None


def test_due_dates_from_billers_are_checked():
    assert br.due_date_problem("20240229") is None
    assert br.due_date_problem("20250229") is not None
    assert br.due_date_problem("2026-11-01") is not None


def test_bill_day_is_the_utc_date():
    assert br.bill_day(1795375800) == D(2026, 11, 22)  # 2026-11-22T19:30:00Z
    assert br.bill_day(1795391999) == D(2026, 11, 22)
    assert br.bill_day(1795392000) == D(2026, 11, 23)


# --- inquiry references ----------------------------------------------------------

def record(**over):
    values = dict(kind="inquiry", answered=True, biller_code="TEL", service_code="MOBILE",
                  billing_number="0791234567", at=1000.0)
    values.update(over)
    return br.InquiryRecord(**values)


def reference(rec, now=1000.0, ttl=900.0, billing="0791234567"):
    return br.reference_problem(rec, biller_code="TEL", service_code="MOBILE", billing_number=billing,
                                now=now, ttl=ttl)


def test_reference_fresh_until_its_ttl():
    assert reference(record(), now=1900.0) is None
    assert reference(record(), now=1900.001) is Outcome.INQUIRY_REFERENCE_EXPIRED


@pytest.mark.parametrize("rec", [
    None, record(kind="payment"), record(answered=False), record(biller_code="WAT"),
    record(service_code="HOME"), record(billing_number="0797654321")])
def test_reference_unknown_or_foreign(rec):
    assert reference(rec) is Outcome.INQUIRY_REFERENCE_UNKNOWN
