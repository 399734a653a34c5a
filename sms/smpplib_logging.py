"""smpplib logs through the stdlib ``logging`` module; route it to structlog.

Left alone, its records reach Python's last-resort handler (or the root
logger's) and land as plain text in the middle of the gateway's JSON lines.
One handler on the ``smpplib`` logger, not propagating, turns each record
into a structlog event of the same level; installing it twice is harmless.
"""
from __future__ import annotations

import logging

import structlog

_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
           logging.ERROR: "error", logging.CRITICAL: "critical"}


class StructlogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in a library's log call
            message = str(record.msg)
        level = _LEVELS.get(record.levelno, "info")
        # A library's ERROR is our warning: it is about one PDU, and the
        # link reports what it does about it at its own level.
        if level in ("error", "critical"):
            level = "warning"
        getattr(structlog.get_logger(record.name), level)("smpplib", message=message[:500])


def route_smpplib_logging() -> None:
    logger = logging.getLogger("smpplib")
    if not any(isinstance(h, StructlogHandler) for h in logger.handlers):
        logger.addHandler(StructlogHandler())
    logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)  # its DEBUG hex dumps would carry message texts
