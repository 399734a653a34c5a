"""The water biller's tables as configuration: table names, column names and
code values, mapped per biller -- and the SQLAlchemy tables built from them.

A database biller's integration is a set of tables in *its* database, named
the biller's way (``WB_PAY_INTAKE.PROC_STAT = 'N'``...).  Nothing in the
adapter names them: the settings do, checked by :data:`MAPPING_SCHEMA` (via
the adapter kind's schema in ``registry.py``, so ``billgw check-config``
names a misspelt key), and :class:`WaterTables` builds the ``Table``
objects both the adapter and the simulator use.

The three tables (docs/billers.md, "The water biller"):

- **bills** -- the biller's open bills, one row per bill of an account;
- **intake** -- where the gateway inserts payments, unique on the gateway's
  payment id; the biller's batch marks each row posted (with its receipt
  number) or rejected;
- **reversals** (optional) -- where the gateway records the reversal of a
  payment the batch already booked; without it, only a payment still
  waiting in the intake can be undone (withdrawn).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, UniqueConstraint

from billgw.billing_adapters.interface import BillStatus
from billgw.billing_adapters.settings_schema import (
    Setting,
    SettingsError,
    Table as SettingsTable,
    mapping_of,
    non_empty_str,
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$#]{0,62}")


def sql_name(path: str, value: Any) -> str:
    """A table or column name: a plain SQL identifier (never quoted text from
    the configuration spliced into SQL: SQLAlchemy quotes it, and this keeps
    it a name)."""
    text = non_empty_str(path, value)
    if not _NAME.fullmatch(text):
        raise SettingsError(path, f"must be an SQL identifier (letters, digits, _ $ #), not {text!r}")
    return text


def code_value(path: str, value: Any) -> str:
    text = non_empty_str(path, value)
    if len(text) > 16:
        raise SettingsError(path, f"a code value is at most 16 characters, not {text!r}")
    return text


def _bill_status(path: str, value: Any) -> str:
    names = [s.value for s in BillStatus]
    if value not in names:
        raise SettingsError(path, f"must be one of {', '.join(map(repr, names))}, not {value!r}")
    return value


def _table(**columns: str | None) -> SettingsTable:
    """A column map: each key a column we need, required unless its default
    is given (None: the column is optional and absent)."""
    settings = {}
    for key, default in columns.items():
        if default == "required":
            settings[key] = Setting(sql_name, required=True)
        else:
            settings[key] = Setting(sql_name, default=default)
    return SettingsTable(settings)


TABLES = SettingsTable({
    "bills": Setting(sql_name, required=True, doc="the biller's bills table"),
    "intake": Setting(sql_name, required=True, doc="the payment intake table the batch books from"),
    "reversals": Setting(sql_name, default=None, doc="where reversals of booked payments go (optional)"),
})

BILL_COLUMNS = _table(account="required", bill_number="required", amount_due="required",
                      due_date="required", status="required", customer_name=None, issue_date=None,
                      service=None)

INTAKE_COLUMNS = _table(id="required", payment_id="required", account="required", bill_number="required",
                        amount="required", paid_at="required", status="required", receipt="required",
                        channel=None, service=None, reject_reason=None)

REVERSAL_COLUMNS = _table(payment_id="required", amount="required", reversed_at="required", reason=None)

INTAKE_CODES = SettingsTable({
    "pending": Setting(code_value, required=True, doc="inserted by the gateway, not batched yet"),
    "posted": Setting(code_value, required=True, doc="booked by the batch"),
    "rejected": Setting(code_value, required=True, doc="refused by the batch"),
    "withdrawn": Setting(code_value, required=True, doc="withdrawn by the gateway before the batch"),
})

MAPPING_SCHEMA: dict[str, Setting] = {
    "tables": Setting(TABLES, required=True, doc="the biller's table names"),
    "bill_columns": Setting(BILL_COLUMNS, required=True, doc="our name -> the bills table's column"),
    "bill_status_codes": Setting(mapping_of(_bill_status, key_pattern=r".{1,16}", min_items=1), required=True,
                                 doc="the biller's bill status codes -> NEW, PARTIALLY_PAID, PAID, ..."),
    "intake_columns": Setting(INTAKE_COLUMNS, required=True, doc="our name -> the intake table's column"),
    "intake_codes": Setting(INTAKE_CODES, required=True, doc="the intake row's processing codes"),
    "reversal_columns": Setting(REVERSAL_COLUMNS, default=None,
                                doc="our name -> the reversals table's column (with tables.reversals)"),
}


def check_mapping(checked: Mapping[str, Any]) -> None:
    """What the schema cannot see key by key: the parts that go together."""
    codes = checked["intake_codes"]
    values = list(codes.values())
    if len(set(values)) != len(values):
        raise SettingsError("intake_codes", f"the codes must differ from each other, not {values}")
    if (checked["tables"]["reversals"] is None) != (checked["reversal_columns"] is None):
        key = "reversal_columns" if checked["reversal_columns"] is None else "tables.reversals"
        raise SettingsError(key, "tables.reversals and reversal_columns go together: give both or neither")


@dataclass(frozen=True)
class WaterTables:
    """The biller's tables as SQLAlchemy sees them, named by the mapping.

    ``c_bill`` / ``c_intake`` / ``c_rev`` give a column by *our* name; code
    values by ``code``.  Amounts are integers in minor units; dates
    ``YYYY-MM-DD`` text; times ISO 8601 UTC text.
    """

    bills: Table
    intake: Table
    reversals: Table | None
    bill_columns: Mapping[str, str | None]
    intake_columns: Mapping[str, str | None]
    reversal_columns: Mapping[str, str | None] | None
    bill_status_codes: Mapping[str, BillStatus]
    code: Mapping[str, str]  # pending / posted / rejected / withdrawn -> the biller's value

    @classmethod
    def from_settings(cls, checked: Mapping[str, Any], schema: str | None = None) -> "WaterTables":
        check_mapping(checked)
        meta = MetaData(schema=schema or None)
        bc, ic, rc = checked["bill_columns"], checked["intake_columns"], checked["reversal_columns"]
        names = checked["tables"]

        def cols(mapping, types):
            return [Column(mapping[key], type_(), **kw) for key, (type_, kw) in types.items()
                    if mapping.get(key)]

        bills = Table(names["bills"], meta, *cols(bc, {
            "account": (lambda: String(32), {"nullable": False}),
            "bill_number": (lambda: String(30), {"nullable": False}),
            "customer_name": (lambda: String(80), {}),
            "service": (lambda: String(16), {}),
            "amount_due": (BigInteger, {"nullable": False}),
            "issue_date": (lambda: String(10), {}),
            "due_date": (lambda: String(10), {"nullable": False}),
            "status": (lambda: String(16), {"nullable": False}),
        }), UniqueConstraint(bc["account"], bc["bill_number"]))
        intake = Table(names["intake"], meta, *cols(ic, {
            "id": (Integer, {"primary_key": True, "autoincrement": True}),
            "payment_id": (lambda: String(64), {"nullable": False}),
            "account": (lambda: String(32), {"nullable": False}),
            "bill_number": (lambda: String(30), {}),
            "service": (lambda: String(16), {}),
            "amount": (BigInteger, {"nullable": False}),
            "paid_at": (lambda: String(25), {"nullable": False}),
            "channel": (lambda: String(10), {}),
            "status": (lambda: String(16), {"nullable": False}),
            "receipt": (lambda: String(32), {}),
            "reject_reason": (lambda: String(80), {}),
        }), UniqueConstraint(ic["payment_id"]))
        reversals = None
        if names["reversals"] is not None:
            reversals = Table(names["reversals"], meta, *cols(rc, {
                "payment_id": (lambda: String(64), {"nullable": False}),
                "amount": (BigInteger, {"nullable": False}),
                "reversed_at": (lambda: String(25), {"nullable": False}),
                "reason": (lambda: String(80), {}),
            }), UniqueConstraint(rc["payment_id"]))
        statuses = {code: BillStatus(name) for code, name in checked["bill_status_codes"].items()}
        return cls(bills, intake, reversals, bc, ic, rc, statuses, dict(checked["intake_codes"]))

    def c_bill(self, key: str):
        return self.bills.c[self.bill_columns[key]]

    def c_intake(self, key: str):
        return self.intake.c[self.intake_columns[key]]

    def c_rev(self, key: str):
        assert self.reversals is not None and self.reversal_columns is not None
        return self.reversals.c[self.reversal_columns[key]]

    def has_bill(self, key: str) -> bool:
        return bool(self.bill_columns.get(key))

    def has_intake(self, key: str) -> bool:
        return bool(self.intake_columns.get(key))

    @property
    def metadata(self) -> MetaData:
        return self.intake.metadata


class WaterSettings(SettingsTable):
    """The kind's settings table: each key checked, then the keys that go
    together (:func:`check_mapping`)."""

    def check(self, value: Any, path: str = "") -> dict[str, Any]:
        checked = super().check(value, path)
        check_mapping(checked)
        return checked
