"""Property-based tests (hypothesis) of what a hostile peer controls: the
framing and the codec.  Any byte sequence gives frames or a FramingError;
any frame gives a typed request or a MessageFormatError whose answer (when
there is one) encodes; the MAC check gives None or MacError; nothing else
escapes, and memory stays bounded.

Bounded for CI: a fixed number of examples, derandomized (the same cases on
every run), no example database written into the work tree.
"""
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billgw.iso8583.framing import Framer, FramingError, encode_frame, header_size
from billgw.iso8583.mac import MacError, MacKey, sign, verify
from billgw.iso8583.messages import (
    BillRequest,
    MessageFormatError,
    NetworkRequest,
    ReversalRequest,
    decode_request,
    format_error_response,
)

from security_wire import payment, reversal, sign_on

CASES = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
VALID = [payment(), payment(mti="0220"), reversal(), sign_on(), sign_on(code="301")]
KEY = MacKey(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))


@st.composite
def mutated(draw, sources=tuple(VALID)):
    """A valid request with bytes flipped, replaced, inserted, cut."""
    message = bytearray(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "digit"]))
        at = draw(st.integers(0, max(0, len(message) - 1)))
        if op == "flip" and message:
            message[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and message:
            message[at] = draw(st.integers(0, 255))
        elif op == "insert":
            message[at:at] = draw(st.binary(max_size=8))
        elif op == "delete" and message:
            del message[at:at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del message[at:]
        elif op == "digit" and message:
            message[at] = draw(st.sampled_from(b"0123456789ABCDEF\x00\xff~ "))
    return bytes(message)


def _decode_or_error(payload: bytes):
    try:
        request = decode_request(payload)
    except MessageFormatError as exc:
        response = format_error_response(exc, "30")
        if response is not None:
            response.encode()  # the answer to a bad request fits the wire
            assert response.fields["39"] == "30"
        return exc
    assert isinstance(request, (NetworkRequest, BillRequest, ReversalRequest))
    return request


@CASES
@given(st.binary(max_size=600))
def test_any_bytes_decode_to_a_typed_request_or_a_typed_error(payload):
    _decode_or_error(payload)


@CASES
@given(mutated())
def test_mutated_requests_decode_to_a_typed_request_or_a_typed_error(payload):
    result = _decode_or_error(payload)
    if isinstance(result, MessageFormatError):
        # Error texts never quote card data (the PAN of the test messages).
        assert "4761739001010010" not in str(result)
    # The PAN (and track, PIN block) never reaches a typed request or error.
    assert not {"2", "35", "52"} & set(result.fields)


@CASES
@given(st.lists(st.binary(max_size=300), max_size=12), st.sampled_from(["binary2", "ascii4"]),
       st.integers(1, 64))
def test_framing_of_any_stream(chunks, kind, max_length):
    """Frames or FramingError, never anything else; the buffer never holds
    more than one header and one frame; and TCP's chunking changes nothing."""
    whole = b"".join(chunks)
    bound = header_size(kind) + max_length + max(map(len, chunks), default=0)

    def run(pieces):
        framer = Framer(kind, max_length)
        out = []
        try:
            for piece in pieces:
                out.extend(framer.feed(piece))
                assert framer.buffered <= bound
        except FramingError:
            return out, "error"
        return out, framer.buffered

    chunked, chunked_end = run(chunks)
    at_once, at_once_end = run([whole])
    assert all(1 <= len(f) <= max_length for f in chunked)
    if chunked_end != "error" and at_once_end != "error":
        assert chunked == at_once and chunked_end == at_once_end
    else:
        # The same frames come out before the stream is found broken.
        shorter, longer = sorted([chunked, at_once], key=len)
        assert longer[:len(shorter)] == shorter


@CASES
@given(st.lists(st.binary(min_size=1, max_size=200), max_size=8), st.sampled_from(["binary2", "ascii4"]))
def test_framing_round_trip(payloads, kind):
    stream = b"".join(encode_frame(p, kind) for p in payloads)
    framer = Framer(kind, 256)
    got = []
    for i in range(0, len(stream), 7):  # a few bytes at a time
        got.extend(framer.feed(stream[i:i + 7]))
    assert got == payloads and framer.buffered == 0


@CASES
@given(st.one_of(st.binary(max_size=200), mutated()))
def test_mac_check_of_any_bytes_is_none_or_mac_error(payload):
    try:
        verify(payload, KEY)
    except MacError:
        pass


SIGNED = [sign(m, KEY) for m in VALID]


@CASES
@given(mutated(tuple(SIGNED)))
def test_a_changed_signed_message_never_passes(payload):
    # The MAC's hexadecimal digits are read in either case: the same MAC.
    if payload[:-16] + payload[-16:].upper() not in SIGNED:
        with pytest.raises(MacError):
            verify(payload, KEY)
    else:
        verify(payload, KEY)


def test_memory_of_a_frame_of_the_largest_size_is_bounded():
    """The codec's working memory for the largest frame (max_frame 4096)
    stays well under a megabyte, whatever the bytes."""
    garbage = [bytes(range(256)) * 16, b"0200" + b"F" * 4092, payment() + b"9" * (4096 - len(payment()))]
    tracemalloc.start()
    try:
        for payload in garbage:
            tracemalloc.reset_peak()
            _decode_or_error(payload)
            _, peak = tracemalloc.get_traced_memory()
            assert peak < 1_000_000, (payload[:20], peak)
    finally:
        tracemalloc.stop()
