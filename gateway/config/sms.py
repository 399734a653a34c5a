"""``[sms]``: the SMPP account(s), receipt templates, pacing and delivery settings.

One SMSC from the top-level keys, or several from ``[[sms.smsc]]`` tables
routed by destination prefix; :func:`smsc_connections` gives the gateway
the connections to run either way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from billgw.sms.status_table import StatusTable, load_status_table
from billgw.sms.templates import DEFAULT_REVERSAL_TEMPLATES, DEFAULT_TEMPLATES, validate_templates

from .reader import ConfigError, _non_negative, _one_of, _positive, _Section


@dataclass(frozen=True)
class SmsSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = "billgw"
    password: str = ""  # no default: required when enabled (see require_sms_password)
    system_type: str = ""
    source_addr: str = "BILLGW"
    source_addr_ton: int = 5
    source_addr_npi: int = 0
    bind: str = "transceiver"  # a transmitter alone never gets a delivery receipt
    country: str = "JO"
    window: int = 10
    rate: float = 50.0
    throttle_pause: float = 1.0
    throttle_pause_cap: float = 30.0
    part_retries: int = 3
    validity_period: float = 86400.0
    poll_interval: float = 2.0
    batch_size: int = 20
    lease_seconds: float = 60.0
    max_attempts: int = 8
    retry_base: float = 5.0
    retry_cap: float = 600.0
    submit_timeout: float = 10.0
    enquire_link_interval: float = 30.0
    enquire_link_timeout: float = 10.0
    pdu_read_timeout: float = 10.0
    max_pdu_length: int = 4096
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    concatenation: str = "udh8"  # udh8 | udh16 | sar (sms/encoding.py)
    queued_alert_after: float = 900.0  # billgw audit: a receipt QUEUED longer is stuck
    invalid_msisdn: str = "decline"  # or "pay_without_sms" (docs/sms.md, Numbers)
    status_table: StatusTable = field(default_factory=load_status_table)
    receipt_templates: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    reversal_templates: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REVERSAL_TEMPLATES))
    # Delivery (docs/sms.md "Delivery receipts", "Several SMSCs").
    delivery_receipts: bool = True  # registered_delivery on every submit_sm
    expire_after: float = 86400.0  # a receipt not submitted within this is EXPIRED, not sent (0: never)
    dlr_hold_seconds: float = 600.0  # a receipt before its id is known waits this long...
    dlr_max_held: int = 10000  # ...and at most this many wait
    binds: tuple[str, ...] = ()  # one-SMSC case: the binds, overriding ``bind``
    # Every SMSC connection: [[sms.smsc]] tables, or the one made of the
    # top-level keys (see smsc_connections()).
    connections: tuple["SmscConnection", ...] = ()


@dataclass(frozen=True)
class SmscConnection:
    """One SMSC account: its binds and the destination prefixes routed to it."""

    name: str
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    source_addr: str = "BILLGW"
    binds: tuple[str, ...] = ("transceiver",)
    prefixes: tuple[str, ...] = ()  # E.164 digits; () = the default route
    window: int = 10  # per bind
    rate: float = 50.0  # the account's contracted rate, shared by its transmitting binds
    path: str = "sms"  # where it was configured, for error messages


def smsc_connections(sms: SmsSettings) -> tuple[SmscConnection, ...]:
    """The SMSC connections to run: [[sms.smsc]] when configured, else the one
    SMSC of the top-level [sms] keys (the single-SMSC configuration)."""
    if sms.connections:
        return sms.connections
    return (SmscConnection(name="default", host=sms.host, port=sms.port, system_id=sms.system_id,
                           password=sms.password, system_type=sms.system_type, source_addr=sms.source_addr,
                           binds=sms.binds or (sms.bind,), prefixes=(), window=sms.window, rate=sms.rate),)


def require_sms_password(sms: SmsSettings) -> None:
    """No default SMPP password: with SMS enabled, an empty one stops start-up.

    Checked when the gateway is built rather than when the file is parsed,
    so that tools and tests which only read the configuration (and the
    demo, which sets its simulator's password) need no secret.
    """
    if sms.enabled and not sms.connections and not sms.password:
        raise ConfigError("sms.password: required when sms.enabled is true "
                          "(set it, e.g. password = \"${BILLGW_SMPP_PASSWORD}\")")
    for connection in sms.connections if sms.enabled else ():
        if not connection.password:
            raise ConfigError(f"{connection.path}.password: required when sms.enabled is true")


def _templates(s: _Section, defaults: Mapping[str, str]) -> dict[str, str]:
    templates = dict(defaults)
    for lang in s.keys():
        if isinstance(s.data[lang], Mapping):  # [sms.templates.receipt.BILLER]: that biller's own
            biller = s.section(lang)
            for biller_lang in biller.keys():
                templates[f"{lang}/{biller_lang}"] = biller.get(biller_lang, str)
            continue
        templates[lang] = s.get(lang, str)
    try:
        validate_templates(templates)
    except ValueError as exc:
        raise ConfigError(f"{s.path}: {exc}") from None
    return templates


def _country(value: str) -> str | None:
    import phonenumbers

    if value not in phonenumbers.SUPPORTED_REGIONS:
        return "must be an ISO 3166 alpha-2 country code phonenumbers knows, such as \"JO\""
    return None


def _sms(s: _Section) -> SmsSettings:
    d = SmsSettings()
    values = {}
    for name, kind, check in (
        ("enabled", bool, None),
        ("host", str, None),
        ("port", int, lambda v: None if 0 < v < 65536 else "must be a TCP port"),
        ("system_id", str, lambda v: None if 0 < len(v) <= 15 else "must be 1..15 characters"),
        ("password", str, lambda v: None if len(v) <= 8 else "SMPP 3.4 passwords are at most 8 characters"),
        ("system_type", str, None),
        ("source_addr", str, lambda v: None if 0 < len(v) <= 20 else "must be 1..20 characters"),
        ("source_addr_ton", int, _non_negative),
        ("source_addr_npi", int, _non_negative),
        ("bind", str, _one_of("transmitter", "transceiver")),
        ("delivery_receipts", bool, None),
        ("expire_after", float, _non_negative),
        ("dlr_hold_seconds", float, _positive),
        ("dlr_max_held", int, _positive),
        ("country", str, _country),
        ("window", int, lambda v: None if 1 <= v <= 1000 else "must be 1..1000"),
        ("rate", float, _positive),
        ("throttle_pause", float, _positive),
        ("throttle_pause_cap", float, _positive),
        ("part_retries", int, _non_negative),
        ("validity_period", float, lambda v: None if 0 <= v <= 7 * 86400 else "must be 0..604800 s (0: none)"),
        ("poll_interval", float, _positive),
        ("batch_size", int, _positive),
        ("lease_seconds", float, _positive),
        ("max_attempts", int, _positive),
        ("retry_base", float, _positive),
        ("retry_cap", float, _positive),
        ("submit_timeout", float, _positive),
        ("enquire_link_interval", float, _positive),
        ("enquire_link_timeout", float, _positive),
        ("pdu_read_timeout", float, _positive),
        ("max_pdu_length", int, lambda v: None if 64 <= v <= 1 << 20 else "must be 64..1048576"),
        ("reconnect_initial", float, _positive),
        ("reconnect_max", float, _positive),
        ("concatenation", str, _one_of("udh8", "udh16", "sar")),
        ("queued_alert_after", float, _positive),
        ("invalid_msisdn", str, _one_of("decline", "pay_without_sms")),
    ):
        values[name] = s.get(name, kind, getattr(d, name), check=check)
    table_path = s.get("status_table", str, "")
    try:
        values["status_table"] = load_status_table(table_path or None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{s.path}.status_table: {exc}") from None
    templates = s.section("templates")
    values["receipt_templates"] = _templates(templates.section("receipt"), DEFAULT_TEMPLATES)
    values["reversal_templates"] = _templates(templates.section("reversal"), DEFAULT_REVERSAL_TEMPLATES)
    templates.done()
    # A receipt stays claimed while it waits behind a window of others at
    # the paced rate and its part is answered (or times out).  A lease that
    # runs out first is safe -- the row becomes UNCERTAIN, never resent --
    # but turns a good receipt into one a person must look at.
    _sms_binds(s, values)
    in_flight = values["submit_timeout"] + values["window"] / values["rate"]
    for c in values.get("connections", ()):
        # Each transmitting bind is paced to its share of the account's rate.
        transmitting = sum(1 for b in c.binds if b != "receiver")
        in_flight = max(in_flight, values["submit_timeout"] + c.window * transmitting / c.rate)
    if in_flight >= values["lease_seconds"]:
        raise ConfigError(f"{s.path}.lease_seconds: must exceed submit_timeout + window / rate "
                          f"({in_flight:g} s), or a receipt still with the link would be taken for abandoned")
    s.done()
    return SmsSettings(**values)


_BIND_MODES = ("transceiver", "transmitter", "receiver")
_SINGLE_SMSC_KEYS = ("host", "port", "system_id", "password", "system_type", "bind", "binds")


def _bind_list(value, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(v not in _BIND_MODES for v in value):
        raise ConfigError(f"{path}: must be a non-empty list of {', '.join(_BIND_MODES)}")
    if not any(v != "receiver" for v in value):
        raise ConfigError(f"{path}: needs a transmitter or transceiver bind (receivers send nothing)")
    return tuple(value)


def _receipts_possible(binds: tuple[str, ...], path: str, delivery_receipts: bool) -> None:
    if delivery_receipts and not any(b in ("transceiver", "receiver") for b in binds):
        raise ConfigError(f"{path}: a transmitter bind never receives delivery receipts; use transceiver, "
                          f"add a receiver (binds = [\"transmitter\", \"receiver\"]) "
                          f"or set sms.delivery_receipts = false")


def _sms_binds(s: _Section, values: dict) -> None:
    """``binds`` (one SMSC) and ``[[sms.smsc]]`` (several), into values."""
    receipts = values["delivery_receipts"]
    if "binds" in s.data:
        values["binds"] = _bind_list(s.get("binds", list), f"{s.path}.binds")
    if "smsc" not in s.data:
        _receipts_possible(values.get("binds") or (values["bind"],),
                           f"{s.path}.binds" if "binds" in s.data else f"{s.path}.bind", receipts)
        return
    given = [k for k in _SINGLE_SMSC_KEYS if k in s.data]
    if given:
        raise ConfigError(f"{s.path}.{given[0]}: with [[sms.smsc]] connections, set it in each connection")
    tables = s.get("smsc", list)
    if not tables:
        raise ConfigError(f"{s.path}.smsc: at least one SMSC connection")
    connections, names, prefixes, default = [], set(), {}, None
    for i, table in enumerate(tables):
        c = _Section(table, f"{s.path}.smsc[{i}]", s.environ)
        name = c.get("name", str, check=lambda v: None if re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", v)
                     else "must be 1..40 letters, digits, _ . -")
        if name in names:
            raise ConfigError(f"{c.path}.name: {name!r} is used twice")
        names.add(name)
        binds = _bind_list(c.get("binds", list, ["transceiver"]), f"{c.path}.binds")
        _receipts_possible(binds, f"{c.path}.binds", receipts)
        own = tuple(c.get("prefixes", list, []))
        for prefix in own:
            if not isinstance(prefix, str) or not re.fullmatch(r"[0-9]{1,15}", prefix):
                raise ConfigError(f"{c.path}.prefixes: {prefix!r} is not 1..15 E.164 digits (no +)")
            if prefix in prefixes:
                raise ConfigError(f"{c.path}.prefixes: {prefix} is routed to {prefixes[prefix]} already")
            prefixes[prefix] = name
        if not own:
            if default is not None:
                raise ConfigError(f"{c.path}.prefixes: {default} is the default route (no prefixes) already")
            default = name
        connections.append(SmscConnection(
            name=name,
            host=c.get("host", str),
            port=c.get("port", int, check=lambda v: None if 0 < v < 65536 else "must be a TCP port"),
            system_id=c.get("system_id", str, check=lambda v: None if 0 < len(v) <= 15 else "must be 1..15 characters"),
            password=c.get("password", str, "",
                           check=lambda v: None if len(v) <= 8 else "SMPP 3.4 passwords are at most 8 characters"),
            system_type=c.get("system_type", str, ""),
            source_addr=c.get("source_addr", str, values["source_addr"],
                              check=lambda v: None if 0 < len(v) <= 20 else "must be 1..20 characters"),
            binds=binds, prefixes=own,
            window=c.get("window", int, values["window"], check=lambda v: None if 1 <= v <= 1000 else "must be 1..1000"),
            rate=c.get("rate", float, values["rate"], check=_positive),
            path=c.path,
        ))
        c.done()
    values["connections"] = tuple(connections)
