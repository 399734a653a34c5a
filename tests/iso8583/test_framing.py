"""Length-header framing: TCP delivers bytes in any split, the framer must
return exactly the frames that were sent, and refuse headers it cannot trust."""
import pytest

from billgw.iso8583.framing import Framer, FramingError, encode_frame, header_size

MESSAGE = b"0800822000000000000004000000000000000203140509000001001"


def test_binary2_header_is_two_bytes_big_endian():
    assert encode_frame(MESSAGE, "binary2") == b"\x00\x37" + MESSAGE
    assert encode_frame(b"x" * 0x1234, "binary2")[:2] == b"\x12\x34"


def test_ascii4_header_is_four_decimal_digits():
    assert encode_frame(MESSAGE, "ascii4") == b"0055" + MESSAGE


@pytest.mark.parametrize("kind", ["binary2", "ascii4"])
def test_frame_split_byte_by_byte(kind):
    framer = Framer(kind)
    wire = encode_frame(MESSAGE, kind)
    frames = []
    for i in range(len(wire)):
        frames += framer.feed(wire[i : i + 1])
        if i < len(wire) - 1:
            assert frames == []
    assert frames == [MESSAGE]
    assert framer.buffered == 0


@pytest.mark.parametrize("kind", ["binary2", "ascii4"])
def test_two_frames_and_a_half_in_one_read(kind):
    framer = Framer(kind)
    second = MESSAGE.replace(b"000001001", b"000002301")
    wire = encode_frame(MESSAGE, kind) + encode_frame(second, kind) + encode_frame(MESSAGE, kind)[:5]
    assert framer.feed(wire) == [MESSAGE, second]
    assert framer.buffered == 5
    assert framer.feed(encode_frame(MESSAGE, kind)[5:]) == [MESSAGE]


@pytest.mark.parametrize("kind", ["binary2", "ascii4"])
def test_encode_decode_symmetric(kind):
    payloads = [b"a", MESSAGE, bytes(range(256)) * 3]
    wire = b"".join(encode_frame(p, kind) for p in payloads)
    assert Framer(kind, max_length=4096).feed(wire) == payloads


@pytest.mark.parametrize("kind,header", [("binary2", b"\x10\x01"), ("ascii4", b"4097")])
def test_header_announcing_more_than_max_length(kind, header):
    framer = Framer(kind, max_length=4096)
    with pytest.raises(FramingError, match="4097 bytes exceeds the maximum of 4096"):
        framer.feed(header)


def test_max_length_itself_is_accepted():
    assert Framer("binary2", max_length=4096).feed(b"\x10\x00" + b"z" * 4096) == [b"z" * 4096]


@pytest.mark.parametrize("header", [b"00a5", b" 055", b"-055", b"\x00\x00\x00\x37"])
def test_ascii4_header_with_non_digits(header):
    with pytest.raises(FramingError, match="not digits"):
        Framer("ascii4").feed(header + MESSAGE)


@pytest.mark.parametrize("kind,header", [("binary2", b"\x00\x00"), ("ascii4", b"0000")])
def test_zero_length_frame(kind, header):
    with pytest.raises(FramingError, match="zero-length"):
        Framer(kind).feed(header + MESSAGE)


def test_unknown_kind_and_oversize_encode():
    with pytest.raises(ValueError, match="unknown framing"):
        Framer("ascii2")
    with pytest.raises(FramingError):
        encode_frame(b"x" * 10000, "ascii4")
    with pytest.raises(FramingError):
        encode_frame(b"x" * 0x10000, "binary2")
    assert (header_size("binary2"), header_size("ascii4")) == (2, 4)
