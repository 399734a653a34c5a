"""docs/iso8583-interface.md is what banks implement against: its examples,
field tables, F48 tags and response codes must agree with the codec."""
import re
from pathlib import Path

import pytest

from billgw.iso8583.bill_data import TAG_DESCRIPTIONS
from billgw.iso8583.codes import DEFAULT_CODES
from billgw.iso8583.dump import parse_hex_dump
from billgw.iso8583.examples import BEGIN_MARKER, END_MARKER, render_examples_markdown
from billgw.iso8583.messages import decode_request, decode_response
from billgw.iso8583.messages import OriginalData
from billgw.iso8583.spec import FIELD_TYPES, FIELD_USAGE, REQUEST_MTIS, RESPONSE_MTIS, SPEC

DOC = Path(__file__).resolve().parents[2] / "docs" / "iso8583-interface.md"
REGENERATE = "make docs  (from the repository root)"


@pytest.fixture(scope="module")
def doc():
    return DOC.read_text(encoding="utf-8")


def generated_region(text):
    start = text.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = text.index(END_MARKER, start)
    return text[start:end].strip("\n")


def test_generated_examples_match_the_codec(doc):
    assert generated_region(doc) == render_examples_markdown().strip("\n"), (
        "docs/iso8583-interface.md examples are stale; regenerate with:\n" + REGENERATE)


def test_every_dump_in_the_doc_decodes_with_our_codec(doc):
    dumps = re.findall(r"```hexdump\n(.*?)```", doc, flags=re.S)
    assert len(dumps) == 17
    mtis = []
    for dump in dumps:
        payload = parse_hex_dump(dump)
        mti = payload[:4].decode("ascii")
        mtis.append(mti)
        if mti[2] == "0":  # x0xx: a request
            request = decode_request(payload)
            assert request.mti == mti
        else:
            response = decode_response(payload)
            assert response.mti == mti and response.response_code
    assert sorted(set(mtis)) == ["0200", "0210", "0220", "0230", "0420", "0430", "0800", "0810"]


def test_dump_headers_announce_the_right_lengths(doc):
    """The sentence above each dump gives both length headers; check them."""
    region = generated_region(doc)
    sections = re.findall(r"(\d+) bytes; with the `binary2` header the frame starts `([0-9a-f ]+)`, "
                          r"with `ascii4` it starts `(\d{4})`.\n\n```hexdump\n(.*?)```", region, flags=re.S)
    assert len(sections) == 17
    for length, binary2, ascii4, dump in sections:
        size = len(parse_hex_dump(dump))
        assert int(length) == size
        assert bytes.fromhex(binary2) == size.to_bytes(2, "big")
        assert int(ascii4) == size


def table_after(doc, marker):
    """Rows (lists of cells) of the markdown table following ``<!-- marker -->``."""
    start = doc.index(f"<!-- {marker} -->")
    rows = []
    for line in doc[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if set("".join(cells)) <= set("-"):
            continue
        rows.append(cells)
    return rows[1:]  # without the header row


@pytest.mark.parametrize("mti", REQUEST_MTIS + RESPONSE_MTIS)
def test_field_tables_agree_with_field_usage_and_spec(doc, mti):
    rows = table_after(doc, f"fields {mti}")
    documented = {row[0]: row for row in rows}
    expected = {f: usage[mti] for f, usage in FIELD_USAGE.items() if mti in usage}
    assert {f: row[4] for f, row in documented.items()} == expected
    for field, row in documented.items():
        assert row[2].split()[0] == FIELD_TYPES[field], field
        spec = SPEC[field]
        prefix = {0: "", 2: "LL..", 3: "LLL.."}[spec["len_type"]]
        assert row[3] == f"{prefix}{spec['max_len']}", field


def test_every_f48_tag_is_documented(doc):
    rows = {row[0]: row for row in table_after(doc, "tags")}
    assert set(rows) == set(TAG_DESCRIPTIONS)
    for tag, (direction, meaning, fmt) in TAG_DESCRIPTIONS.items():
        assert rows[tag][1] == direction and rows[tag][2] == fmt, tag
        assert rows[tag][3].replace("\\|", "|").startswith(meaning.rstrip(".")), tag


def test_every_response_code_is_documented(doc):
    rows = table_after(doc, "codes")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (entry.code, outcome.value, entry.text) for outcome, entry in DEFAULT_CODES.items()]
    assert all(r[3] for r in rows)  # each says when it is used


def test_every_message_type_has_a_field_table(doc):
    """The parametrised table test covers REQUEST_MTIS + RESPONSE_MTIS; this
    guards against a table in the doc for an MTI the dialect does not know."""
    assert set(re.findall(r"<!-- fields (\d{4}) -->", doc)) == set(REQUEST_MTIS + RESPONSE_MTIS)


def test_f90_layout_table_matches_original_data(doc):
    """Section 5.9's positions are what OriginalData.parse slices, and its
    worked example parses to what the text says."""
    section = doc[doc.index("### 5.9") : doc.index("## 6.")]
    parts = re.findall(r"^\| (\d+)-(\d+) \| (\d+) \|", section, flags=re.M)
    assert [(int(a), int(b), int(n)) for a, b, n in parts] == [
        (1, 4, 4), (5, 10, 6), (11, 20, 10), (21, 31, 11), (32, 42, 11)]
    example = re.search(r"Example: `(\d{4})` `(\d{6})` `(\d{10})` `(\d{11})` `(\d{11})`", section)
    original = OriginalData.parse("".join(example.groups()))
    assert (original.mti, original.stan, original.transmission_datetime, original.acquirer_id,
            original.forwarder_id) == ("0200", "000125", "0203140509", "123456", None)
