"""The electricity host's codecs, pure: EBCDIC text, zoned and packed
decimal (property tests and the byte values of known examples), and record
layouts derived from the copybook table."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billgw.billing_adapters.electricity import fields as f
from billgw.billing_adapters.electricity.copybook import Layout, N, Occurs, P, RecordError, X
from billgw.billing_adapters.electricity.records import LAYOUTS, LONGEST, RecordCodec, layout_tables

PROPERTY = settings(max_examples=300, deadline=None)


# --- known bytes ----------------------------------------------------------------

def test_zoned_and_packed_bytes_are_ibms():
    assert f.encode_zoned(123, 5, signed=False) == bytes.fromhex("F0F0F1F2F3")
    assert f.encode_zoned(123, 5, signed=True) == bytes.fromhex("F0F0F1F2C3")
    assert f.encode_zoned(-123, 5, signed=True) == bytes.fromhex("F0F0F1F2D3")
    assert f.encode_packed(12345, 5, signed=True) == bytes.fromhex("12345C")
    assert f.encode_packed(-12345, 5, signed=True) == bytes.fromhex("12345D")
    assert f.encode_packed(1234, 4, signed=False) == bytes.fromhex("01234F")  # even digits: a 0 pad nibble
    assert f.decode_packed(bytes.fromhex("12345B"), 5, signed=True) == -12345  # B is minus too
    assert f.decode_zoned(bytes.fromhex("F1F2A3"), signed=True) == 123  # A is plus


def test_ebcdic_text_is_cp037_padded_with_ebcdic_spaces():
    assert f.encode_text("AB1", 5) == bytes.fromhex("C1C2F14040")
    assert f.decode_text(bytes.fromhex("C1C2F14040")) == "AB1"
    assert f.encode_text("Ä", 1, "cp273") == bytes.fromhex("4A")  # the German code page
    assert f.encode_text("[", 1, "cp037") != f.encode_text("[", 1, "cp500")


@pytest.mark.parametrize("data, digits, signed, problem", [
    (bytes.fromhex("1A345C"), 5, True, "not a packed digit"),
    (bytes.fromhex("12345F"), 5, True, None),  # F is accepted as plus on a signed field
    (bytes.fromhex("123457"), 5, True, "sign nibble 7"),
    (bytes.fromhex("12345C"), 5, False, "sign nibble C"),  # unsigned fields carry F
    (bytes.fromhex("11234F"), 4, False, "pad nibble"),
    (bytes.fromhex("12345C"), 7, True, "has 4 bytes, not 3"),
])
def test_bad_packed_fields_are_refused(data, digits, signed, problem):
    if problem is None:
        assert f.decode_packed(data, digits, signed=signed) == 12345
        return
    with pytest.raises(f.FieldError, match=problem):
        f.decode_packed(data, digits, signed=signed)


@pytest.mark.parametrize("data, signed, problem", [
    (bytes.fromhex("F1FAF3"), False, "not a zoned digit"),
    (bytes.fromhex("F1C2F3"), False, "zone C"),  # a sign zone before the last byte
    (bytes.fromhex("F1F2C3"), False, "zone C"),  # a sign on an unsigned field
    (bytes.fromhex("F1F273"), True, "no sign zone"),
    (b"", True, "empty"),
    (b"123", False, "zone 3"),  # ASCII digits, not EBCDIC
])
def test_bad_zoned_fields_are_refused(data, signed, problem):
    with pytest.raises(f.FieldError, match=problem):
        f.decode_zoned(data, signed=signed)


@pytest.mark.parametrize("encode", [f.encode_zoned, lambda v, d, signed: f.encode_packed(v, d, signed=signed)])
def test_values_that_do_not_fit_are_refused_not_cut(encode):
    with pytest.raises(f.FieldError, match="does not fit"):
        encode(100_000, 5, signed=True)
    with pytest.raises(f.FieldError, match="negative"):
        encode(-1, 5, signed=False)
    with pytest.raises(f.FieldError, match="not an integer"):
        encode(True, 5, signed=False)


def test_text_that_does_not_fit_or_is_not_text_is_refused():
    with pytest.raises(f.FieldError, match="longer"):
        f.encode_text("ABCDEF", 5)
    with pytest.raises(f.FieldError, match="lacks"):
        f.encode_text("€", 3, "cp037")
    with pytest.raises(f.FieldError, match="control"):
        f.encode_text("A\tB", 3)
    with pytest.raises(f.FieldError, match="0x05 at 1"):
        f.decode_text(bytes.fromhex("C10540"))


def test_code_pages_must_be_single_byte():
    assert f.check_code_page("CP037") == "cp037"
    with pytest.raises(ValueError, match="unknown"):
        f.check_code_page("cp-nonsense")
    with pytest.raises(ValueError, match="single-byte"):
        f.check_code_page("utf-16")
    with pytest.raises(ValueError, match="single-byte"):
        f.check_code_page("utf-8")


# --- properties --------------------------------------------------------------------

digits_and_values = st.integers(1, 18).flatmap(
    lambda d: st.tuples(st.just(d), st.integers(-(10 ** d) + 1, 10 ** d - 1)))


@PROPERTY
@given(digits_and_values)
def test_zoned_round_trips_every_value_that_fits(case):
    digits, value = case
    data = f.encode_zoned(value, digits, signed=True)
    assert len(data) == digits
    assert f.decode_zoned(data, signed=True) == value
    assert f.decode_zoned(f.encode_zoned(abs(value), digits, signed=False), signed=False) == abs(value)


@PROPERTY
@given(digits_and_values)
def test_packed_round_trips_every_value_that_fits(case):
    digits, value = case
    data = f.encode_packed(value, digits, signed=True)
    assert len(data) == digits // 2 + 1
    assert f.decode_packed(data, digits, signed=True) == value
    assert data[-1] & 0x0F == (0xD if value < 0 else 0xC)
    assert f.decode_packed(f.encode_packed(abs(value), digits, signed=False), digits, signed=False) == abs(value)


@PROPERTY
@given(st.integers(1, 9).flatmap(lambda d: st.tuples(st.just(d), st.binary(min_size=d // 2 + 1, max_size=d // 2 + 1))))
def test_any_packed_bytes_decode_to_a_value_that_re_encodes_or_are_refused(case):
    """No byte string is silently misread: what decodes re-encodes to the
    same bytes (up to the sign nibble's spelling), or it is a FieldError."""
    digits, data = case
    try:
        value = f.decode_packed(data, digits, signed=True)
    except f.FieldError:
        return
    again = f.encode_packed(value, digits, signed=True)
    assert again[:-1] == data[:-1] and again[-1] >> 4 == data[-1] >> 4


@PROPERTY
@given(st.binary(min_size=1, max_size=12))
def test_any_zoned_bytes_decode_consistently_or_are_refused(data):
    try:
        value = f.decode_zoned(data, signed=True)
    except f.FieldError:
        return
    assert abs(value) < 10 ** len(data)
    assert f.encode_zoned(value, len(data), signed=True)[:-1] == data[:-1]


@PROPERTY
@given(st.text(alphabet=st.characters(codec="cp037", exclude_categories=("Cc",)), max_size=20).map(str.rstrip))
def test_text_round_trips_in_cp037(text):
    assert f.decode_text(f.encode_text(text, 20)) == text


# --- layouts as data ----------------------------------------------------------------

DEMO = Layout("DEMO", (
    X("name", 5),
    N("count", 1),
    Occurs("items", 2, (X("code", 2), P("amount", 5, 2)), "count"),
    N("balance", 4, 1, signed=True),
))


def test_offsets_and_lengths_are_derived_from_the_table():
    assert DEMO.offsets == {"name": 0, "count": 5, "items": 6, "balance": 16}
    assert DEMO.size == 20
    data = DEMO.encode({"name": "AB", "items": [{"code": "X1", "amount": Decimal("123.45")}],
                        "balance": Decimal("-12.5")})
    assert data == (bytes.fromhex("C1C2404040") + bytes.fromhex("F1") + bytes.fromhex("E7F1") +
                    bytes.fromhex("12345C") + bytes.fromhex("4040") + bytes.fromhex("00000C") +
                    bytes.fromhex("F0F1F2D5"))
    assert DEMO.decode(data) == {"name": "AB", "count": 1, "items": [{"code": "X1", "amount": Decimal("123.45")}],
                                 "balance": Decimal("-12.5")}


def test_amounts_are_never_rounded_into_a_field():
    with pytest.raises(RecordError, match=r"DEMO.items\[0\].amount: 1.005 has more than 2 decimal places"):
        DEMO.encode({"name": "A", "items": [{"code": "X", "amount": Decimal("1.005")}], "balance": 0})
    with pytest.raises(RecordError, match="at most 2"):
        DEMO.encode({"name": "A", "items": [{"code": "X", "amount": 1}] * 3, "balance": 0})
    with pytest.raises(RecordError, match="DEMO.balance: no value"):
        DEMO.encode({"name": "A", "items": []})


def test_a_count_beyond_the_occurs_is_refused_on_decoding():
    data = bytearray(DEMO.encode({"name": "A", "items": [], "balance": 0}))
    data[5] = 0xF3
    with pytest.raises(RecordError, match="DEMO.count: 3 entries, at most 2"):
        DEMO.decode(bytes(data))


def test_a_layout_table_with_a_mistake_is_refused():
    with pytest.raises(ValueError, match="twice"):
        Layout("BAD", (X("a", 1), X("a", 2)))
    with pytest.raises(ValueError, match="must be an unsigned whole number before it"):
        Layout("BAD", (Occurs("o", 2, (X("c", 1),), "n"), X("n", 1)))


# --- the host's records ------------------------------------------------------------

def test_each_record_type_round_trips_with_its_sequence_number():
    codec = RecordCodec()
    samples = {
        "SGON": {"user": "BILLGW", "password": "s3cret", "terminal": "T1"},
        "INQA": {"account": "2000000002", "customer": "Omar Saleh", "currency": 400, "bills": [
            {"bill_number": "EB-1", "amount_due": Decimal("-1.500"), "issue_date": 20260101, "due_date": 20260131,
             "partial": "N", "min_amount": Decimal("0")}]},
        "PAYR": {"payment_id": "9f1c2ab4e0d34c8d9a6f2b1e7c3d5a40", "service": "ELECTRIC", "account": "2000000001",
                 "amount": Decimal("23.450"), "currency": 400, "paid_at": 20261202080000, "channel": "ATM",
                 "bills": [{"bill_number": "EB-2000000001-1", "amount": Decimal("23.450")}]},
        "REJT": {"refused": "PAYR", "error_code": "E105", "message": "AMOUNT NOT ACCEPTED"},
    }
    for kind, values in samples.items():
        data = codec.encode(kind, 4711, **values)
        assert len(data) == LAYOUTS[kind].size
        assert data[:10] == f.encode_text(kind, 4) + f.encode_zoned(4711, 6, signed=False)
        record = codec.decode(data)
        assert (record.kind, record.sequence) == (kind, 4711)
        expected = {**values, **({"bill_count": len(values["bills"])} if "bills" in values else {})}
        assert record.values == expected


def test_fixed_length_records_are_padded_and_the_padding_checked():
    codec = RecordCodec(fixed_length=LONGEST + 10)
    data = codec.encode("STAR", 1, payment_id="P1")
    assert len(data) == LONGEST + 10 and data.endswith(b"\x40" * 10)
    assert codec.decode(data)["payment_id"] == "P1"
    with pytest.raises(RecordError, match="not spaces"):
        codec.decode(data[:-1] + b"\x00")
    with pytest.raises(ValueError, match="shorter than the longest record"):
        RecordCodec(fixed_length=LONGEST - 1)


def test_the_header_is_read_even_when_the_body_is_garbage():
    codec = RecordCodec()
    data = bytearray(codec.encode("PAYA", 12, payment_id="P", receipt="R", amount=Decimal(1), bills=[]))
    data[LAYOUTS["PAYA"].offsets["amount"]] = 0xB3
    assert codec.header(bytes(data)) == ("PAYA", 12)
    with pytest.raises(RecordError, match=r"PAYA.amount: nibble B at 0 is not a packed digit"):
        codec.decode(bytes(data))
    with pytest.raises(RecordError, match="unknown record type"):
        codec.decode(codec.encode("STAR", 1, payment_id="P").replace(f.encode_text("STAR", 4), f.encode_text("ZZZZ", 4)))
    with pytest.raises(RecordError, match="shorter than its header"):
        codec.header(b"\xc1")


def test_the_documented_tables_come_from_the_layouts():
    tables = layout_tables()
    assert "| `amount` | 58 | 7 | 9(10)V9(3) COMP-3 | what the host recorded |" in tables
    assert tables.count("**") == 2 * len(LAYOUTS)


def test_docs_print_the_layouts_the_code_uses():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "billers.md").read_text("utf-8")
    assert layout_tables() in docs, "docs/billers.md: regenerate the record tables from records.layout_tables()"


def test_the_adapter_answers_the_hosts_heartbeat_and_nothing_else_unasked():
    from billgw.billing_adapters.electricity.adapter import HostDialect

    codec = RecordCodec("cp500")
    dialect = HostDialect(codec, user="U", password="P", terminal="T")
    answer = codec.decode(dialect.unsolicited(codec.encode("HBRQ", 31, sent_at=20261206044500)))
    assert (answer.kind, answer.sequence, answer["sent_at"]) == ("HBRA", 31, 20261206044500)
    assert dialect.unsolicited(codec.encode("STAR", 32, payment_id="P")) is None
    assert dialect.sign_on_refusal(codec.encode("SGOA", 1, result="00", message="")) is None
    assert dialect.sign_on_refusal(codec.encode("REJT", 1, refused="SGON", error_code="E109",
                                                message="NO")) == "host E109: NO"


def test_an_audit_without_a_ledger_file_says_which_setting_to_give(tmp_path):
    from billgw.billing_adapters.electricity.ledger import read_host_ledger
    from billgw.billing_adapters.interface import LedgerUnavailable

    with pytest.raises(LedgerUnavailable, match="set the 'ledger' setting"):
        read_host_ledger(None)
    with pytest.raises(LedgerUnavailable, match="no ledger file"):
        read_host_ledger(str(tmp_path / "missing.sqlite"))
