"""GSM-7 / UCS-2 selection, part sizes and the concatenation UDH bytes."""
import pytest

from billgw.sms.encoding import (
    DATA_CODING_GSM7,
    DATA_CODING_UCS2,
    MessageTooLong,
    decode_gsm7,
    split_message,
)

ARABIC_LETTER = "ب"  # U+0628


def test_160_gsm_characters_fit_one_message_without_udh():
    m = split_message("a" * 160)
    assert (m.data_coding, m.esm_class) == (DATA_CODING_GSM7, 0x00)
    assert m.parts == [b"a" * 160]


def test_161_gsm_characters_make_two_parts_of_153_and_8():
    m = split_message("a" * 161, reference=0x2A)
    assert (m.data_coding, m.esm_class) == (DATA_CODING_GSM7, 0x40)
    assert m.parts == [
        bytes([0x05, 0x00, 0x03, 0x2A, 0x02, 0x01]) + b"a" * 153,
        bytes([0x05, 0x00, 0x03, 0x2A, 0x02, 0x02]) + b"a" * 8,
    ]


def test_gsm_default_alphabet_codes_not_ascii():
    m = split_message("@£$_§¿é")
    assert m.parts == [bytes([0x00, 0x01, 0x02, 0x11, 0x5F, 0x60, 0x05])]


def test_backtick_is_not_gsm_so_the_text_goes_as_ucs2():
    # smpplib's table would send it as § (0x5F); we refuse to alter the text.
    assert split_message("a`b").data_coding == DATA_CODING_UCS2


def test_extension_characters_take_two_septets_and_are_never_split():
    m = split_message("€" * 80)
    assert m.parts == [b"\x1b\x65" * 80]  # 160 septets: still one message
    m = split_message("a" + "€" * 80, reference=1)
    # 153 septets per part: 'a' + 76 euros = 153; the 77th euro moves on whole.
    assert m.parts[0][6:] == b"a" + b"\x1b\x65" * 76
    assert m.parts[1][6:] == b"\x1b\x65" * 4
    assert decode_gsm7(b"".join(p[6:] for p in m.parts)) == "a" + "€" * 80


def test_70_arabic_characters_fit_one_ucs2_message():
    m = split_message(ARABIC_LETTER * 70)
    assert (m.data_coding, m.esm_class) == (DATA_CODING_UCS2, 0x00)
    assert m.parts == [b"\x06\x28" * 70]


def test_71_arabic_characters_make_two_parts_of_67_and_4():
    m = split_message(ARABIC_LETTER * 71, reference=7)
    assert (m.data_coding, m.esm_class) == (DATA_CODING_UCS2, 0x40)
    assert m.parts == [
        bytes([5, 0, 3, 7, 2, 1]) + b"\x06\x28" * 67,
        bytes([5, 0, 3, 7, 2, 2]) + b"\x06\x28" * 4,
    ]
    assert all(len(p) <= 140 for p in m.parts)


def test_one_arabic_letter_makes_the_whole_text_ucs2():
    m = split_message("Paid 12.500 JOD " + ARABIC_LETTER)
    assert m.data_coding == DATA_CODING_UCS2
    assert m.parts[0].decode("utf-16-be") == "Paid 12.500 JOD " + ARABIC_LETTER


def test_three_parts_carry_sequence_numbers_and_reassemble():
    text = "".join(chr(0x0620 + i % 26) for i in range(150))
    m = split_message(text, reference=300)  # 8-bit reference: 300 & 0xFF
    assert [p[:6] for p in m.parts] == [bytes([5, 0, 3, 44, 3, n]) for n in (1, 2, 3)]
    assert b"".join(p[6:] for p in m.parts).decode("utf-16-be") == text


def test_surrogate_pairs_are_not_split():
    # 66 + 2 (pair) + 3 = 71 units: two parts; the pair would straddle 67.
    text = ARABIC_LETTER * 66 + "😀" + ARABIC_LETTER * 3
    m = split_message(text)
    assert m.parts[0][6:].decode("utf-16-be") == ARABIC_LETTER * 66
    assert m.parts[1][6:].decode("utf-16-be") == "😀" + ARABIC_LETTER * 3


def test_more_than_255_parts_is_refused():
    with pytest.raises(MessageTooLong):
        split_message("a" * (153 * 255 + 1))


def test_gsm_round_trip_of_the_whole_alphabet():
    text = "Pay {x} [y] ~ | ^ \\ € ÄÖÑÜäöñüà ΔΦΓΛΩΠΨΣΘΞ\n\r"
    m = split_message(text)
    assert m.data_coding == DATA_CODING_GSM7
    assert decode_gsm7(m.parts[0]) == text
