"""structlog, configured once at the composition root.

JSON lines (or a console renderer when asked), with a processor that masks
card data placed after exception formatting and before the renderer, so no
PAN, track data or PIN block reaches a log line -- not in a message, a
bound value or a traceback.  Twisted's own log events are routed through
the same pipeline.

Log volume is bounded per event: a string value longer than
:data:`MAX_VALUE_CHARS` (a biller's 100 KB fault text, a giant frame's dump)
is cut, saying how much was left out, so a peer sending bad frames cannot
fill the disk faster than it sends bytes.  The console renderer also shows
terminal control characters escaped (the JSON renderer escapes them anyway),
so a terminal id carrying ANSI codes cannot drive an operator's terminal.
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogBeginner
from zope.interface import provider

from billgw.iso8583.dump import redact
from billgw.iso8583.masking import escape_control, mask_pan, mask_text

# Keys whose values are card data: never rendered.
_DROP_KEYS = frozenset({"track1", "track_1", "track2", "track_2", "pin_block", "pinblock", "pin", "cvv",
                        "cvv2", "f14", "f35", "f36", "f45", "f52", "f55"})
# Longest string value rendered (tracebacks get more room).
MAX_VALUE_CHARS = 2000
MAX_EXCEPTION_CHARS = 20000
_PAN_KEYS = frozenset({"pan", "card_number", "f2"})
# In raw bytes a PAN can touch other digits (its LL prefix, F3): any long
# digit run keeps only its first 6 and last 4 digits.
_DIGIT_RUN = re.compile(r"(\d{6})(\d{3,})(\d{4})")


def _mask(value: Any, key: str | None = None) -> Any:
    """Mask card data in any value, recursing into containers; key rules
    (drop track/PIN, mask a PAN field) apply at every depth."""
    lowered = key.lower() if isinstance(key, str) else None
    if lowered in _DROP_KEYS:
        return "[removed]"
    if lowered in _PAN_KEYS and isinstance(value, str):
        return mask_pan(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_mask(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        # A raw ISO 8583 frame: redact by its layout (F2 touches its length
        # prefix, so a digit-run pattern alone would miss it), then by pattern.
        text = redact(bytes(value)).decode("latin-1")
        return _DIGIT_RUN.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)
    # Any other object would be rendered with repr() after this processor.
    return mask_text(repr(value))


def mask_card_data(_logger, _method, event_dict: dict) -> dict:
    """structlog processor: mask PANs everywhere, drop track data and PINs."""
    return {key: _bound(_mask(value, key), key) for key, value in event_dict.items()}


def _bound(value: Any, key: str) -> Any:
    """Cut an over-long string (after masking, so a PAN is never cut in two
    and left unmasked)."""
    limit = MAX_EXCEPTION_CHARS if key in ("exception", "stack") else MAX_VALUE_CHARS
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}...[{len(value) - limit} more characters not logged]"
    return value


def escape_controls(_logger, _method, event_dict: dict) -> dict:
    """structlog processor for console output: control characters escaped."""
    return {key: escape_control(value) if isinstance(value, str) else value for key, value in event_dict.items()}


def processors(renderer, *, escape: bool = False) -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        mask_card_data,
        *([escape_controls] if escape else []),
        renderer,
    ]


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(fmt: str = "json", level: str = "info", stream=None) -> None:
    """Configure structlog and route Twisted's log to it.  Call once."""
    stream = stream or sys.stdout
    renderer = (structlog.processors.JSONRenderer(ensure_ascii=False) if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors(renderer, escape=fmt != "json"),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    globalLogBeginner.beginLoggingTo([twisted_to_structlog], redirectStandardIO=False,
                                     discardBuffer=True)


_TWISTED_LEVELS = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "critical",
}


@provider(ILogObserver)
def twisted_to_structlog(event: dict) -> None:
    log = structlog.get_logger(event.get("log_namespace", "twisted"))
    level = _TWISTED_LEVELS.get(event.get("log_level"), "info")
    failure = event.get("log_failure")
    text = formatEvent(event)
    if failure is not None:
        getattr(log, level)(text, exception=failure.getTraceback())
    else:
        getattr(log, level)(text)
