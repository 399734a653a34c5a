"""The ``electricity`` adapter kind's settings schema, and its builder.

Cross-field rules (fixed framing needs a record length that holds the
longest record; the credentials must fit their fields in the code page) are
checked with the rest, so ``billgw check-config`` names the key."""
from __future__ import annotations

from typing import Any

from billgw.billing_adapters.interface import DeclineReason
from billgw.billing_adapters.settings_schema import (
    Setting,
    SettingsError,
    Table,
    boolean,
    mapping_of,
    non_empty_str,
    one_of,
    positive_int,
    positive_number,
)
from billgw.billing_adapters.transports.tcp_records import FRAMINGS

from . import fields
from .answers import OUTCOME_UNKNOWN
from .records import LONGEST


def _port(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise SettingsError(path, f"must be a TCP port 1-65535, not {value!r}")
    return value


def _code_page(path: str, value: Any) -> str:
    text = non_empty_str(path, value)
    try:
        return fields.check_code_page(text)
    except ValueError as exc:
        raise SettingsError(path, str(exc)) from None


def _text(length: int):
    def check(path: str, value: Any) -> str:
        text = non_empty_str(path, value)
        if len(text) > length:
            raise SettingsError(path, f"at most {length} characters (a PIC X({length}) field), not {len(text)}")
        return text

    return check


def _exponent(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise SettingsError(path, f"must be 0-3 (the host's amounts carry 3 decimals), not {value!r}")
    return value


_MEANINGS = tuple(r.value for r in DeclineReason) + (OUTCOME_UNKNOWN,)


class ElectricitySettings(Table):
    def check(self, value: Any, path: str = "") -> dict[str, Any]:
        out = super().check(value, path)
        join = (lambda key: f"{path}.{key}" if path else key)
        if out["framing"] == "fixed":
            if out["record_length"] is None:
                raise SettingsError(join("record_length"), "required with framing = \"fixed\"")
            if out["record_length"] < LONGEST:
                raise SettingsError(join("record_length"),
                                    f"must hold the longest record ({LONGEST} bytes), not {out['record_length']}")
        if out["max_record"] < LONGEST:
            raise SettingsError(join("max_record"), f"must hold the longest record ({LONGEST} bytes)")
        if out["framing"] == "length2" and out["max_record"] > 0xFFFF:
            raise SettingsError(join("max_record"), "a 2-byte length prefix carries at most 65535 bytes")
        for key in ("user", "password", "terminal"):
            try:
                fields.encode_text(out[key], 8, out["code_page"])
            except fields.FieldError as exc:
                raise SettingsError(join(key), str(exc)) from None
        if out["heartbeat_timeout"] >= out["heartbeat_interval"]:
            raise SettingsError(join("heartbeat_timeout"), "must be shorter than heartbeat_interval")
        return out


SCHEMA = ElectricitySettings({
    "host": Setting(non_empty_str, required=True, doc="the host (or its front-end processor)"),
    "port": Setting(_port, required=True),
    "user": Setting(_text(8), required=True, doc="sign-on user id"),
    "password": Setting(_text(8), required=True, doc="sign-on password: use ${ENV}"),
    "terminal": Setting(_text(8), default="BILLGW01", doc="our terminal id in the sign-on"),
    "code_page": Setting(_code_page, default="cp037", doc="EBCDIC code page of the text fields"),
    "framing": Setting(one_of(*FRAMINGS), default="length2",
                       doc="length2 / length4 (binary big-endian length prefix) or fixed"),
    "record_length": Setting(positive_int, default=None, doc="bytes per record with framing = fixed"),
    "max_record": Setting(positive_int, default=4096, doc="largest record accepted either way"),
    "connect_timeout": Setting(positive_number, default=5.0, doc="seconds to open the link"),
    "request_timeout": Setting(positive_number, default=15.0,
                               doc="seconds a request waits for its answer on the link (then outcome unknown)"),
    "heartbeat_interval": Setting(positive_number, default=30.0, doc="seconds between heartbeats"),
    "heartbeat_timeout": Setting(positive_number, default=10.0,
                                 doc="an unanswered heartbeat declares the link dead after this long"),
    "reconnect_initial": Setting(positive_number, default=1.0, doc="first reconnect delay, doubling"),
    "reconnect_max": Setting(positive_number, default=60.0, doc="longest reconnect delay"),
    "service_codes": Setting(mapping_of(_text(8), key_pattern=r"[A-Za-z0-9_]{1,16}"), default={},
                             doc="our service code -> the host's (default: the same)"),
    "error_codes": Setting(mapping_of(one_of(*_MEANINGS), key_pattern=r"[A-Z0-9]{4}"), default={},
                           doc="the host's error codes -> a decline reason, or outcome_unknown"),
    "currency_exponent": Setting(_exponent, default=3, doc="decimals of the currency's minor unit"),
    "supports_status": Setting(boolean, default=True),
    "supports_reversal": Setting(boolean, default=True),
    "ledger": Setting(non_empty_str, default=None, doc="the host's payment extract (SQLite), for billgw audit"),
})


def build(reactor, log, *, context, **settings):
    from .adapter import ElectricityAdapter

    return ElectricityAdapter(reactor, clock=context.clock, log=log, **settings)


def read_ledger(settings: dict, source: str | None):
    from .ledger import read_host_ledger

    return read_host_ledger(source or settings.get("ledger"))
