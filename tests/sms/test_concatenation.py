"""Concatenation schemes (8-bit UDH, 16-bit UDH, SAR TLVs), the per-destination
reference, and properties of the splitter: whatever the text, the parts
join back to it, fit their size, and never cut a GSM-7 escape pair or a
UTF-16 surrogate pair."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billgw.sms.encoding import (
    CONCAT_SAR,
    CONCAT_UDH8,
    CONCAT_UDH16,
    DATA_CODING_GSM7,
    DATA_CODING_UCS2,
    GSM7_BASIC,
    GSM7_EXTENSION,
    ReferenceCounter,
    decode_gsm7,
    split_message,
)

ARABIC = "ب"
UDH_LENGTH = {CONCAT_UDH8: 6, CONCAT_UDH16: 7, CONCAT_SAR: 0}
# Part sizes in code units (septets / UTF-16 units) per scheme.
PART_UNITS = {CONCAT_UDH8: (153, 67), CONCAT_UDH16: (152, 66), CONCAT_SAR: (152, 66)}

GSM_CHARS = [c for c in GSM7_BASIC if c != "\x1b"] + list(GSM7_EXTENSION)
gsm_text = st.text(alphabet=st.sampled_from(GSM_CHARS), min_size=1, max_size=700)
# Arabic, Greek, an emoji (surrogate pair) and GSM characters mixed: UCS-2.
ucs2_text = st.text(alphabet=st.sampled_from(GSM_CHARS + [ARABIC, "ة", "Ω", "λ", "😀", "𝄞", "€"]),
                    min_size=1, max_size=400)
schemes = st.sampled_from([CONCAT_UDH8, CONCAT_UDH16, CONCAT_SAR])
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _payloads(message):
    return [p.short_message[UDH_LENGTH[message.scheme]:] if p.esm_class & 0x40 else p.short_message
            for p in (message.part(i) for i in range(len(message.parts)))]


def _decode(message, payloads):
    joined = b"".join(payloads)
    return decode_gsm7(joined) if message.data_coding == DATA_CODING_GSM7 else joined.decode("utf-16-be")


@PROPERTY
@given(text=st.one_of(gsm_text, ucs2_text), scheme=schemes, reference=st.integers(0, 65535))
def test_parts_join_back_to_the_text_and_each_part_decodes_alone(text, scheme, reference):
    message = split_message(text, reference=reference, scheme=scheme)
    payloads = _payloads(message)
    assert _decode(message, payloads) == text
    gsm_limit, ucs2_limit = PART_UNITS[scheme]
    for payload in payloads:
        # Each part alone is whole characters: no dangling escape, no lone surrogate.
        if message.data_coding == DATA_CODING_GSM7:
            assert _escape_pairs_whole(payload)
            if len(payloads) > 1:
                assert len(payload) <= gsm_limit
        else:
            payload.decode("utf-16-be")  # raises on a lone surrogate half
            if len(payloads) > 1:
                assert len(payload) // 2 <= ucs2_limit


def _escape_pairs_whole(payload: bytes) -> bool:
    i = 0
    while i < len(payload):
        if payload[i] == 0x1B:
            if i + 1 >= len(payload):
                return False
            i += 2
        else:
            i += 1
    return True


@PROPERTY
@given(text=st.one_of(gsm_text, ucs2_text), scheme=schemes, reference=st.integers(0, 65535))
def test_every_part_carries_the_same_reference_total_and_its_sequence(text, scheme, reference):
    message = split_message(text, reference=reference, scheme=scheme)
    total = len(message.parts)
    if total == 1:
        assert message.part(0).esm_class == 0 and message.part(0).tlvs == ()
        return
    for seq in range(1, total + 1):
        part = message.part(seq - 1)
        if scheme == CONCAT_UDH8:
            assert part.esm_class == 0x40
            assert part.short_message[:6] == bytes([5, 0, 3, reference & 0xFF, total, seq])
        elif scheme == CONCAT_UDH16:
            assert part.esm_class == 0x40
            assert part.short_message[:7] == bytes([6, 8, 4, reference >> 8, reference & 0xFF, total, seq])
        else:
            assert part.esm_class == 0
            assert dict(part.tlvs) == {"sar_msg_ref_num": reference, "sar_total_segments": total,
                                       "sar_segment_seqnum": seq}


def test_udh16_parts_hold_152_septets_and_66_ucs2_units():
    m = split_message("a" * 161, reference=0x1234, scheme=CONCAT_UDH16)
    assert m.parts == [bytes([6, 8, 4, 0x12, 0x34, 2, 1]) + b"a" * 152,
                       bytes([6, 8, 4, 0x12, 0x34, 2, 2]) + b"a" * 9]
    m = split_message(ARABIC * 71, reference=1, scheme=CONCAT_UDH16)
    assert [len(p) for p in m.parts] == [7 + 132, 7 + 10]
    assert m.data_coding == DATA_CODING_UCS2


def test_sar_parts_have_no_udh_and_carry_the_three_tlvs():
    m = split_message("b" * 200, reference=513, scheme=CONCAT_SAR)
    assert m.parts == [b"b" * 152, b"b" * 48]
    assert m.esm_class == 0
    fields = m.part(1).submit_fields()
    assert fields == {"short_message": b"b" * 48, "esm_class": 0, "sar_msg_ref_num": 513,
                      "sar_total_segments": 2, "sar_segment_seqnum": 2}


def test_a_single_part_message_has_no_concatenation_in_any_scheme():
    for scheme in (CONCAT_UDH8, CONCAT_UDH16, CONCAT_SAR):
        m = split_message("a" * 160, reference=9, scheme=scheme)
        assert m.part(0).submit_fields() == {"short_message": b"a" * 160, "esm_class": 0}
        assert m.units == 160


def test_an_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="udh8, udh16, sar"):
        split_message("x", scheme="udh32")


# -- the reference counter ---------------------------------------------------

def test_references_to_one_destination_advance_and_others_are_independent():
    refs = ReferenceCounter(256)
    assert [refs.next("962791234567", 1000.2) for _ in range(3)] == [1000 % 256, 1001 % 256, 1002 % 256]
    assert refs.next("306912345678", 1000.9) == 1000 % 256


def test_a_restart_does_not_reuse_the_last_runs_reference_to_a_handset():
    # Run 1 sends a burst of 5 to one handset at t=5000; the gateway
    # restarts 3 s later with a fresh counter (nothing persisted).
    first = ReferenceCounter(65536)
    sent = [first.next("962791234567", 5000.0) for _ in range(5)]
    second = ReferenceCounter(65536)
    after_restart = second.next("962791234567", 5008.0)
    assert after_restart not in sent
    # 8-bit too, for the usual one receipt per payment.
    first8, second8 = ReferenceCounter(256), ReferenceCounter(256)
    before = first8.next("962791234567", 7000.0)
    assert second8.next("962791234567", 7002.0) != before


def test_the_table_stays_bounded_and_drops_only_entries_the_clock_supersedes():
    refs = ReferenceCounter(65536, max_entries=100)
    for i in range(100):
        refs.next(f"9627900{i:05d}", 10.0)
    refs.next("962790099999", 11.0)  # the table is full: entries behind t=11 are dropped
    assert len(refs._last) <= 100
    # A dropped destination gets the clock's value, not an old one again.
    assert refs.next("962790000000", 11.0) == 11
