"""Card data never reaches a log line: the production processor chain
(``billgw.gateway.log_setup.processors``) renders JSON with PANs masked to
first 6 + last 4 and track data / PIN blocks removed -- wherever the card
data sits in the event -- and Twisted's own log events go through the same
chain.

These tests render through the real chain on purpose: tests/conftest.py
wraps every test in ``structlog.testing.capture_logs``, which replaces the
global processors, so a test relying on the global configuration would
silently assert on unmasked capture output.  The bound-logger tests wrap a
PrintLogger with the chain explicitly; the Twisted test configures structlog
globally inside the test (restored afterwards) and checks the rendered text.
"""
import io
import json

import pytest
import structlog
from structlog.processors import JSONRenderer
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from billgw.gateway.log_setup import processors, twisted_to_structlog

PAN = "4761739001010010"
MASKED = "476173******0010"
TRACK2 = f"{PAN}=25121011234567890"
PIN_BLOCK = "0123456789ABCDEF"


@pytest.fixture
def rendered():
    """A logger rendering through the production chain into a buffer;
    ``lines()`` parses what was written, one JSON object per line."""
    buf = io.StringIO()
    log = structlog.wrap_logger(structlog.PrintLogger(buf), processors=processors(JSONRenderer()))

    def lines():
        text = buf.getvalue()
        assert text.endswith("\n")
        return text, [json.loads(line) for line in text.splitlines()]

    return log, lines


def test_pan_in_the_event_text_is_masked(rendered):
    log, lines = rendered
    log.info(f"payment with card {PAN} approved")
    text, [event] = lines()
    assert event["event"] == f"payment with card {MASKED} approved"
    assert PAN not in text


def test_pan_in_bound_values_is_masked(rendered):
    log, lines = rendered
    log.bind(pan=PAN).info("bound", card_number=PAN, note=f"card={PAN};")
    text, [event] = lines()
    assert (event["pan"], event["card_number"], event["note"]) == (MASKED, MASKED, f"card={MASKED};")
    assert PAN not in text


def test_pan_in_nested_dicts_and_lists_is_masked(rendered):
    log, lines = rendered
    log.info("request", request={"fields": {"2": PAN, "4": "000000012500"}, "history": [f"F2 {PAN}", (PAN,)]},
             raw=f"F2={PAN};".encode("ascii"))
    text, [event] = lines()
    assert event["request"] == {"fields": {"2": MASKED, "4": "000000012500"},
                                "history": [f"F2 {MASKED}", [MASKED]]}
    assert event["raw"] == f"F2={MASKED};"
    assert PAN not in text


def test_pan_in_an_exception_message_and_traceback_is_masked(rendered):
    log, lines = rendered
    try:
        raise ValueError(f"card {PAN} refused")  # the PAN is in the message and in this source line
    except ValueError:
        log.exception("payment failed")
    text, [event] = lines()
    assert "Traceback (most recent call last)" in event["exception"]
    assert f"ValueError: card {MASKED} refused" in event["exception"]
    assert PAN not in text


def test_track2_and_pin_block_are_removed(rendered):
    log, lines = rendered
    log.info(f"swiped ;{TRACK2}?", track2=TRACK2, pin_block=PIN_BLOCK, f52=PIN_BLOCK, f35=TRACK2,
             detail=f"track {TRACK2} read")
    text, [event] = lines()
    for key in ("track2", "pin_block", "f52", "f35"):
        assert event[key] == "[removed]", key
    assert "=2512" not in text and PIN_BLOCK not in text and PAN not in text
    assert "[TRACK2 REMOVED]" in event["event"] and "[TRACK2 REMOVED]" in event["detail"]


def test_every_line_is_one_json_object_with_level_and_utc_time(rendered):
    log, lines = rendered
    log.info("first", n=1)
    log.warning("عربي", text="تم دفع")  # non-ASCII survives as valid JSON
    log.error("third")
    _, events = lines()
    assert [(e["event"], e["level"]) for e in events] == [("first", "info"), ("عربي", "warning"),
                                                          ("third", "error")]
    assert all(e["timestamp"].endswith("Z") for e in events)


def test_pin_block_in_a_nested_dict_is_removed(rendered):
    """A dict of request fields is a natural thing to log; its PIN block
    must not survive because it is one level down."""
    log, lines = rendered
    log.info("request", request={"pin_block": PIN_BLOCK, "track2": "not-a-track"})
    text, _ = lines()
    assert PIN_BLOCK not in text and "not-a-track" not in text


def test_pan_in_a_non_string_bound_value_is_masked(rendered):
    """An exception object (or any object) bound as a value is rendered by
    JSONRenderer's repr fallback -- after the masking processor ran."""
    log, lines = rendered
    log.warning("biller call failed", error=ValueError(f"card {PAN}"))
    text, _ = lines()
    assert PAN not in text


def test_pan_in_a_raw_frame_logged_as_bytes_is_masked(rendered):
    """``_mask`` has a branch for bytes, so raw frames are expected in log
    values; in one, the PAN is glued to the LL prefix and F3's digits."""
    log, lines = rendered
    frame = b"0200723800010881800016" + PAN.encode() + b"500000000000012500"
    log.info("frame", raw=frame)
    text, _ = lines()
    assert PAN not in text


@pytest.fixture
def global_json_log():
    """structlog configured globally (as the composition root does) into a
    buffer, for code that calls ``structlog.get_logger()``; restored after."""
    buf = io.StringIO()
    structlog.configure(
        processors=processors(JSONRenderer()),
        logger_factory=structlog.WriteLoggerFactory(file=buf),
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    yield buf
    structlog.reset_defaults()


def test_twisted_log_events_are_masked(global_json_log):
    twisted_to_structlog({"log_format": "peer sent card {card}", "card": PAN,
                          "log_level": LogLevel.warn, "log_namespace": "twisted.test"})
    try:
        raise RuntimeError(f"bad card {PAN}")
    except RuntimeError:
        failure = Failure()
    twisted_to_structlog({"log_format": "Unhandled error", "log_failure": failure,
                          "log_level": LogLevel.critical, "log_namespace": "twisted.test"})
    text = global_json_log.getvalue()
    first, second = [json.loads(line) for line in text.splitlines()]
    assert (first["event"], first["level"]) == (f"peer sent card {MASKED}", "warning")
    assert second["level"] == "critical" and f"bad card {MASKED}" in second["exception"]
    assert PAN not in text
