"""Statements run on the DB-API cursor give what SQLAlchemy's own path gives:
the same columns, the same Python types (datetimes, booleans, NULLs), the
INSERT's scalar defaults, and they join the caller's transaction."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import bindparam, insert, select, update

from billgw.gateway.prepared import Prepared
from billgw.gateway.schema import transactions as t

BY_ID = select(t).where(t.c.id == bindparam("b_id"))
INSERT = Prepared(insert(t).returning(*t.c), keyed=True)
UPDATE = Prepared(update(t).where(t.c.id == bindparam("b_id")).returning(*t.c), keyed=True, fixed=("b_id",))
AT = dt.datetime(2026, 12, 2, 5, 0, 0, 123456)


def values(txn_id: str) -> dict:
    return dict(id=txn_id, kind="payment", mti="0200", processing_code="500000", acquirer_id="123456",
                forwarder_id=None, terminal_id="ATM00001", stan=txn_id[-6:], transmission_dt="1202050000",
                rrn="050000000001", fingerprint="f" * 64, masked_pan=None, amount=12_500, currency="400",
                biller_code="TEL", service_code="MOBILE", billing_number="0790000000", bill_number=None,
                msisdn=None, language="en", state="POSTING", created_at=AT, updated_at=AT)


def test_insert_returning_gives_the_row_as_sqlalchemy_reads_it_with_defaults_filled(engine):
    with engine.begin() as conn:
        row = INSERT.one(conn, values("a00001"))
        assert (row.id, row.amount, row.created_at, row.fee, row.reversal_requested) == (
            "a00001", 12_500, AT, 0, False)
        assert row.reversal_requested is False and row.response_code is None
        assert tuple(row) == tuple(conn.execute(BY_ID, {"b_id": "a00001"}).one())


def test_a_keyed_update_sets_only_what_it_is_given_and_joins_the_callers_transaction(engine):
    with engine.begin() as conn:
        INSERT.one(conn, values("a00002"))
    later = AT + dt.timedelta(seconds=3)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        row = UPDATE.one(conn, {"b_id": "a00002", "state": "CONFIRMED", "updated_at": later,
                                "reversal_requested": True})
        assert (row.state, row.updated_at, row.reversal_requested, row.amount) == ("CONFIRMED", later, True, 12_500)
        raise RuntimeError("roll back")
    with engine.begin() as conn:
        assert conn.execute(BY_ID, {"b_id": "a00002"}).one().state == "POSTING"  # rolled back with the caller
        assert Prepared(BY_ID).first(conn, {"b_id": "nothing"}) is None
        assert Prepared(update(t).where(t.c.id == bindparam("b_id")).values(detail=bindparam("b_d"))).execute(
            conn, {"b_id": "a00002", "b_d": "x"}) == 1


def test_an_insert_leaving_out_a_column_with_a_computed_default_runs_on_sqlalchemys_path(engine):
    from sqlalchemy import Column, Integer, MetaData, String, Table

    later = Table("later_columns", MetaData(), Column("id", Integer, primary_key=True),
                  Column("name", String(10), nullable=False),
                  Column("stamp", String(10), nullable=False, default=lambda: "computed"))
    later.create(engine)
    prepared = Prepared(insert(later).returning(later.c.id, later.c.stamp), keyed=True)
    with engine.begin() as conn:
        row = prepared.one(conn, {"name": "a"})
        assert row.stamp == "computed" and row.id >= 1
        assert prepared.one(conn, {"name": "b", "stamp": "given"}).stamp == "given"  # prepared: all given
