"""Configuration: one TOML file, validated in full before anything starts.

Every key is known: a misspelt or unknown key, a missing required key, or a
value of the wrong type stops start-up with a :class:`ConfigError` that names
the key by its dotted path (``billers.TEL.services.MOBILE.exponent``).
String values may name environment variables, ``${NAME}`` or
``${NAME:-default}``, so secrets (the SMPP password) need not sit in the file.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from billgw.billing_adapters.breaker import BreakerSettings
from billgw.billing_adapters.maintenance import WEEKDAYS, MaintenanceWindow
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.framing import HEADERS
from billgw.iso8583.mac import PADDING_METHODS, MacKey
from billgw.sms.status_table import StatusTable, load_status_table
from billgw.sms.templates import DEFAULT_REVERSAL_TEMPLATES, DEFAULT_TEMPLATES, validate_templates

from .bill_rules import AMOUNT_RULES, ANY, SURCHARGE_KINDS, AmountRule, SurchargeRule
from .business_day import AFTER_CUTOFF, NEXT_DAY, BusinessCalendar, CutOff, parse_time, zone
from .keys import mac_key_from_env, mac_key_from_file
from .peers import DEFAULT_PEERS, PeerTable, make_peer
from .rate_limit import RateLimit

POSTPAID = "postpaid"
PREPAID = "prepaid"
FEE_CUSTOMER = "customer"  # added to the customer's debit
FEE_BILLER = "biller"  # deducted from what the biller is paid at settlement
REFERENCE_IGNORED = "ignored"  # a payment's IR is not looked at
REFERENCE_CHECKED = "checked"  # checked when the payment quotes one
REFERENCE_REQUIRED = "required"  # every payment quotes a fresh one


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _interpolate(value: str, path: str, environ: Mapping[str, str]) -> str:
    def sub(match):
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _ENV.sub(sub, value)


class _Section:
    """Reads one table, tracking which keys were used so leftovers are errors."""

    def __init__(self, data: Mapping[str, Any], path: str, environ: Mapping[str, str]):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path or 'configuration'}: expected a table")
        self.data = dict(data)
        self.path = path
        self.environ = environ
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple, default: Any = ..., *, check=None):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._key(key)}: required key is missing")
            return default
        value = self.data[key]
        if isinstance(value, str):
            value = _interpolate(value, self._key(key), self.environ)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and int not in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self._key(key)}: expected {names}, got {type(value).__name__}")
        if check is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f"{self._key(key)}: {problem}")
        return value

    def section(self, key: str, required: bool = False) -> "_Section":
        self.used.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._key(key)}: required table is missing")
            return _Section({}, self._key(key), self.environ)
        return _Section(self.data[key], self._key(key), self.environ)

    def keys(self):
        return list(self.data)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self._key(unknown[0])}: unknown key")


def _positive(value):
    return None if value > 0 else "must be greater than zero"


def _non_negative(value):
    return None if value >= 0 else "must not be negative"


def _one_of(*choices):
    def check(value):
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"

    return check


def _regex(value):
    try:
        re.compile(value)
    except re.error as exc:
        return f"not a valid regular expression ({exc})"
    return None


@dataclass(frozen=True)
class ListenerSettings:
    endpoint: str = "tcp:8583:interface=127.0.0.1"
    framing: str = "binary2"
    max_frame: int = 4096
    idle_timeout: float = 300.0
    require_sign_on: bool = True
    max_in_flight_per_connection: int = 64
    max_in_flight: int = 512
    # Connections open at once over all peers (each peer has its own cap),
    # the listen backlog, and the seconds a begun frame may take to complete.
    max_connections: int = 256
    backlog: int = 512
    frame_timeout: float = 30.0
    # TLS on the listener ([gateway.tls], gateway/tls.py); None: plain TCP.
    tls: "TlsSettings | None" = None
    # Seconds between log lines of the refusal counters (0: never).
    counters_log_interval: float = 60.0


@dataclass(frozen=True)
class TlsSettings:
    """``[gateway.tls]``: PEM files of the listener's certificate and key,
    and of the CAs whose client certificates it accepts (mutual TLS)."""

    certificate: str
    private_key: str
    client_ca: str | None = None
    require_client_certificate: bool = True


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///var/billgw.sqlite"
    pool_size: int = 4
    auto_upgrade: bool = True
    # Journal operations queued at most before new requests are answered
    # "busy" (back-pressure in front of the writer; see gateway/db.py).
    max_queued: int = 1024


@dataclass(frozen=True)
class LoggingSettings:
    format: str = "json"
    level: str = "info"


@dataclass(frozen=True)
class ServiceSettings:
    code: str
    name_en: str
    name_ar: str
    currency: str
    currency_code: str
    exponent: int
    billing_number_pattern: str
    min_amount: int
    max_amount: int
    fee: int
    # The bill rules (gateway/bill_rules.py, docs/bill-rules.md).
    kind: str = POSTPAID
    amount_rule: AmountRule = AmountRule()
    surcharge: SurchargeRule | None = None
    fee_bearer: str = FEE_CUSTOMER
    topup_amounts: tuple[int, ...] = ()
    topup_step: int = 0
    inquiry_reference: str = REFERENCE_IGNORED
    inquiry_reference_ttl: float = 900.0

    def billing_number_ok(self, number: str) -> bool:
        return re.fullmatch(self.billing_number_pattern, number) is not None

    @property
    def prepaid(self) -> bool:
        return self.kind == PREPAID

    @property
    def needs_bills(self) -> bool:
        """A payment must see the open bills before it is posted: its amount
        is judged against them, or a surcharge is added to them."""
        return not self.prepaid and (self.amount_rule.needs_bills or self.surcharge is not None)

    @property
    def customer_fee(self) -> int:
        """The fee added to the customer's debit (0 when the biller bears it)."""
        return self.fee if self.fee_bearer == FEE_CUSTOMER else 0


@dataclass(frozen=True)
class BillerSettings:
    code: str
    name_en: str
    name_ar: str
    adapter: str
    timeout: float
    active: bool
    adapter_settings: Mapping[str, Any]
    services: Mapping[str, ServiceSettings]
    reversal_policy: str = "allowed"
    # Resilience (billing_adapters/guarded.py): calls in flight at most,
    # the circuit breaker, and the windows in which the biller is offline.
    max_concurrent: int = 32
    breaker: BreakerSettings = BreakerSettings()
    maintenance: tuple[MaintenanceWindow, ...] = ()
    # The biller's daily cut-off (gateway/business_day.py): None, none.
    cutoff: CutOff | None = None


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


@dataclass(frozen=True)
class RecoverySettings:
    poll_interval: float = 1.0
    batch_size: int = 20
    lease_seconds: float = 60.0
    retry_base: float = 2.0
    retry_cap: float = 300.0
    stale_after: float = 40.0
    status_delay: float = 30.0
    expire_after: float = 86400.0
    # Contract v2: polls of an ACCEPTED payment for its biller's batch.
    accepted_poll_delay: float = 60.0
    accepted_expire_after: float = 3 * 86400.0
    # billgw audit flags a payment ACCEPTED for longer than this.
    accepted_alert_after: float = 26 * 3600.0


@dataclass(frozen=True)
class Settings:
    listener: ListenerSettings
    database: DatabaseSettings
    logging: LoggingSettings
    sms: SmsSettings
    billers: Mapping[str, BillerSettings]
    response_codes: ResponseCodes
    recovery: RecoverySettings = RecoverySettings()
    source: str = "<defaults>"
    # Who may connect and for which acquirers/terminals (gateway/peers.py).
    peers: PeerTable = DEFAULT_PEERS
    # The business day: timezone and daily cut-over (gateway/business_day.py).
    business_day: BusinessCalendar = BusinessCalendar()


def _pem_file(s: _Section, key: str, base: Path, required: bool = True) -> str | None:
    value = s.get(key, str, ... if required else None)
    if value is None:
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(f"{s._key(key)}: no such file {str(path)!r}")
    return str(path)


def _tls(s: _Section, base: Path) -> TlsSettings:
    out = TlsSettings(
        certificate=_pem_file(s, "certificate", base),
        private_key=_pem_file(s, "private_key", base),
        client_ca=_pem_file(s, "client_ca", base, required=False),
        require_client_certificate=s.get("require_client_certificate", bool, True),
    )
    s.done()
    return out


def _listener(s: _Section, base: Path | None = None) -> ListenerSettings:
    base = base or Path.cwd()
    d = ListenerSettings()
    out = ListenerSettings(
        endpoint=s.get("listen", str, d.endpoint),
        framing=s.get("framing", str, d.framing, check=_one_of(*HEADERS)),
        max_frame=s.get("max_frame", int, d.max_frame, check=lambda v: None if 64 <= v <= 65535 else "must be 64..65535"),
        idle_timeout=s.get("idle_timeout", float, d.idle_timeout, check=_positive),
        require_sign_on=s.get("require_sign_on", bool, d.require_sign_on),
        max_in_flight_per_connection=s.get("max_in_flight_per_connection", int,
                                           d.max_in_flight_per_connection, check=_in_flight_cap),
        max_in_flight=s.get("max_in_flight", int, d.max_in_flight, check=_in_flight_cap),
        max_connections=s.get("max_connections", int, d.max_connections,
                              check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000"),
        backlog=s.get("backlog", int, d.backlog, check=lambda v: None if 1 <= v <= 65535 else "must be 1..65535"),
        frame_timeout=s.get("frame_timeout", float, d.frame_timeout, check=_positive),
        tls=_tls(s.section("tls"), base) if "tls" in s.keys() else None,
        counters_log_interval=s.get("counters_log_interval", float, d.counters_log_interval, check=_non_negative),
    )
    if out.tls is not None and not out.endpoint.lower().startswith(("tcp:", "tcp6:")):
        raise ConfigError(f"{s._key('listen')}: with [gateway.tls] the listener is a tcp: or tcp6: endpoint "
                          "(the gateway adds TLS itself)")
    if out.frame_timeout > out.idle_timeout:
        raise ConfigError(f"{s._key('frame_timeout')}: must not exceed idle_timeout")
    s.done()
    return out


def _strings(value: list) -> str | None:
    return None if all(isinstance(x, str) for x in value) else "expected a list of strings"


def _peer_mac(t: _Section, config_dir: Path | None) -> MacKey | None:
    """A peer's MAC key: from ``mac_key_env`` or ``mac_key_file`` (never
    the configuration itself, never a default); None: no MAC."""
    env = t.get("mac_key_env", str, None)
    file = t.get("mac_key_file", str, None)
    padding = t.get("mac_padding", int, 1, check=_one_of(*PADDING_METHODS))
    if env and file:
        raise ConfigError(f"{t._key('mac_key_file')}: give mac_key_env or mac_key_file, not both")
    try:
        if env:
            return mac_key_from_env(env, t.environ, padding)
        if file:
            return mac_key_from_file(file, config_dir, padding)
    except ValueError as exc:
        raise ConfigError(f"{t._key('mac_key_env' if env else 'mac_key_file')}: {exc}") from None
    return None


def _peer_rate(t: _Section, rate_key: str = "rate_limit", burst_key: str = "rate_burst") -> RateLimit | None:
    rate = t.get(rate_key, float, None, check=_positive)
    burst = t.get(burst_key, int, None, check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000")
    if rate is None:
        if burst is not None:
            raise ConfigError(f"{t._key(burst_key)}: set {rate_key} too")
        return None
    return RateLimit(rate, burst if burst is not None else max(1, int(rate * 2)))


def _peers(s: _Section, default_sign_on: bool, config_dir: Path | None = None) -> PeerTable:
    """``[peers.NAME]`` tables; none at all: the built-in loopback peer."""
    names = s.keys()
    if not names:
        return PeerTable(dataclasses.replace(p, require_sign_on=default_sign_on) for p in DEFAULT_PEERS.peers)
    peers = []
    for name in names:
        t = s.section(name)
        values = dict(
            sources=t.get("sources", list, [], check=_strings),
            acquirers=t.get("acquirers", list, check=_strings),
            terminals=t.get("terminals", list, check=_strings),
            require_sign_on=t.get("require_sign_on", bool, default_sign_on),
            max_connections=t.get("max_connections", int, 64,
                                  check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000"),
            max_in_flight=t.get("max_in_flight", int, None, check=_in_flight_cap),
            f48_encoding=t.get("f48_encoding", str, "utf-8", check=_one_of("utf-8", "ascii")),
            f48_names=t.get("f48_names", str, "transliterate", check=_one_of("transliterate", "omit")),
            cut_over=t.get("cut_over", bool, True),
            certificate_subject=t.get("certificate_subject", str, None),
            mac=_peer_mac(t, config_dir),
            rate_limit=_peer_rate(t),
            advice_reversal_rate=_peer_rate(t, "advice_reversal_rate_limit", "advice_reversal_burst"),
        )
        if values["f48_encoding"] != "ascii" and "f48_names" in t.data:
            raise ConfigError(f"{t.path}.f48_names: only with f48_encoding = \"ascii\"")
        try:
            peer = make_peer(name, **values)
        except ValueError as exc:
            raise ConfigError(f"{t.path}.{exc}") from None
        t.done()
        peers.append(peer)
    return PeerTable(peers)


def _in_flight_cap(value: int) -> str | None:
    return None if 1 <= value <= 100_000 else "must be 1..100000"


def _database(s: _Section, base: Path) -> DatabaseSettings:
    d = DatabaseSettings()
    url = s.get("url", str, d.url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        url = "sqlite:///" + str((base / url[len("sqlite:///"):]).resolve())
    out = DatabaseSettings(
        url=url,
        pool_size=s.get("pool_size", int, d.pool_size, check=lambda v: None if 1 <= v <= 64 else "must be 1..64"),
        auto_upgrade=s.get("auto_upgrade", bool, d.auto_upgrade),
        max_queued=s.get("max_queued", int, d.max_queued,
                         check=lambda v: None if 1 <= v <= 1_000_000 else "must be 1..1000000"),
    )
    s.done()
    return out


def _logging(s: _Section) -> LoggingSettings:
    out = LoggingSettings(
        format=s.get("format", str, "json", check=_one_of("json", "console")),
        level=s.get("level", str, "info", check=_one_of("debug", "info", "warning", "error")),
    )
    s.done()
    return out


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


def _recovery(s: _Section, billers: Mapping[str, "BillerSettings"]) -> RecoverySettings:
    d = RecoverySettings()
    values = {name: s.get(name, type(getattr(d, name)), getattr(d, name), check=_positive)
              for name in ("poll_interval", "batch_size", "lease_seconds", "retry_base", "retry_cap",
                           "stale_after", "status_delay", "expire_after", "accepted_poll_delay",
                           "accepted_expire_after", "accepted_alert_after")}
    slowest = max((b.timeout for b in billers.values()), default=0.0)
    if values["stale_after"] <= slowest + 5:
        raise ConfigError(f"{s.path}.stale_after: must exceed the slowest biller timeout ({slowest} s) by "
                          "more than 5 s, or payments still in flight would be taken for abandoned")
    if values["lease_seconds"] <= slowest:
        raise ConfigError(f"{s.path}.lease_seconds: must exceed the slowest biller timeout ({slowest} s)")
    s.done()
    return RecoverySettings(**values)


def _service(code: str, s: _Section, biller_names: tuple[str, str]) -> ServiceSettings:
    exponent = s.get("exponent", int, check=lambda v: None if 0 <= v <= 3 else "must be 0..3")
    out = ServiceSettings(
        code=code,
        name_en=s.get("name_en", str, biller_names[0]),
        name_ar=s.get("name_ar", str, biller_names[1]),
        currency=s.get("currency", str, check=lambda v: None if len(v) == 3 and v.isdigit() else "must be an ISO 4217 numeric code such as \"400\""),
        currency_code=s.get("currency_code", str, check=lambda v: None if len(v) == 3 and v.isalpha() else "must be an ISO 4217 alphabetic code such as \"JOD\""),
        exponent=exponent,
        billing_number_pattern=s.get("billing_number_pattern", str, r".{1,30}", check=_regex),
        min_amount=s.get("min_amount", int, 1, check=_positive),
        max_amount=s.get("max_amount", int, 999_999_999_999, check=_positive),
        fee=s.get("fee", int, 0, check=_non_negative),
        **_bill_rules(s),
    )
    if out.min_amount > out.max_amount:
        raise ConfigError(f"{s.path}.min_amount: greater than max_amount")
    if out.prepaid:
        outside = [a for a in out.topup_amounts if not out.min_amount <= a <= out.max_amount]
        if outside:
            raise ConfigError(f"{s.path}.topup_amounts: {outside[0]} is outside min_amount..max_amount")
    s.done()
    return out


def _amount_list(value):
    if not value or not all(isinstance(a, int) and not isinstance(a, bool) and a > 0 for a in value):
        return "must be a non-empty list of positive integers (minor units)"
    return None


def _bill_rules(s: _Section) -> dict[str, Any]:
    """The service's bill rules: amount rule, top-ups, surcharge, fee bearer."""
    kind = s.get("kind", str, POSTPAID, check=_one_of(POSTPAID, PREPAID))
    rule_kind = s.get("amount_rule", str, ANY, check=_one_of(*AMOUNT_RULES))
    partial_min = s.get("partial_min", int, 0, check=_non_negative)
    over_max = s.get("over_max", int, 0, check=_non_negative)
    if partial_min and rule_kind not in ("partial", "partial_or_over"):
        raise ConfigError(f"{s.path}.partial_min: only with amount_rule \"partial\" or \"partial_or_over\"")
    if over_max and rule_kind not in ("over", "partial_or_over"):
        raise ConfigError(f"{s.path}.over_max: only with amount_rule \"over\" or \"partial_or_over\"")
    if rule_kind in ("over", "partial_or_over") and not over_max:
        raise ConfigError(f"{s.path}.over_max: required with amount_rule \"{rule_kind}\" (minor units above the due)")
    topup_amounts = tuple(s.get("topup_amounts", list, [], check=_amount_list) if "topup_amounts" in s.data else ())
    topup_step = s.get("topup_step", int, 0, check=_non_negative)
    if kind == PREPAID:
        if rule_kind != ANY:
            raise ConfigError(f"{s.path}.amount_rule: a prepaid service has no bill to judge the amount by")
        if topup_amounts and topup_step:
            raise ConfigError(f"{s.path}.topup_step: give topup_amounts or topup_step, not both")
    elif topup_amounts or topup_step:
        key = "topup_amounts" if topup_amounts else "topup_step"
        raise ConfigError(f"{s.path}.{key}: only for kind = \"prepaid\"")
    surcharge = None
    if "late_surcharge" in s.data:
        if kind == PREPAID:
            raise ConfigError(f"{s.path}.late_surcharge: a prepaid service has no due date")
        surcharge = _surcharge(s.section("late_surcharge"))
    return dict(
        kind=kind, amount_rule=AmountRule(rule_kind, partial_min=partial_min, over_max=over_max),
        surcharge=surcharge,
        fee_bearer=s.get("fee_bearer", str, FEE_CUSTOMER, check=_one_of(FEE_CUSTOMER, FEE_BILLER)),
        topup_amounts=topup_amounts, topup_step=topup_step,
        inquiry_reference=s.get("inquiry_reference", str, REFERENCE_IGNORED,
                                check=_one_of(REFERENCE_IGNORED, REFERENCE_CHECKED, REFERENCE_REQUIRED)),
        inquiry_reference_ttl=s.get("inquiry_reference_ttl", float, 900.0,
                                    check=lambda v: None if 0 < v <= 86400 else "must be 0..86400 s"),
    )


def _surcharge(s: _Section) -> SurchargeRule:
    kind = s.get("kind", str, check=_one_of(*SURCHARGE_KINDS))
    needs = "amount" if kind == "fixed" else "rate_bp"
    rate_bp = s.get("rate_bp", int, 0, check=lambda v: None if 0 <= v <= 100_000 else "must be 0..100000 (basis points)")
    amount = s.get("amount", int, 0, check=_non_negative)
    grace_days = s.get("grace_days", int, 0, check=_non_negative)
    other = "rate_bp" if needs == "amount" else "amount"
    if other in s.data:
        raise ConfigError(f"{s.path}.{other}: not used by kind = \"{kind}\" (give {needs})")
    if not (amount if needs == "amount" else rate_bp):
        raise ConfigError(f"{s.path}.{needs}: required and greater than zero for kind = \"{kind}\"")
    s.done()
    return SurchargeRule(kind, rate_bp=rate_bp, amount=amount, grace_days=grace_days)


def _biller(code: str, s: _Section) -> BillerSettings:
    name_en = s.get("name_en", str)
    name_ar = s.get("name_ar", str, name_en)
    adapter = s.get("adapter", str)
    # The adapter's own settings may nest (column maps, code tables); they
    # are checked against the adapter kind's schema by validate_adapters.
    settings_section = s.section("settings")
    adapter_settings = _plain(settings_section.data, settings_section.path, s.environ)
    services_section = s.section("services", required=True)
    services = {
        svc: _service(svc, services_section.section(svc), (name_en, name_ar))
        for svc in services_section.keys()
    }
    if not services:
        raise ConfigError(f"{services_section.path}: a biller needs at least one service")
    out = BillerSettings(
        code=code,
        name_en=name_en,
        name_ar=name_ar,
        adapter=adapter,
        timeout=s.get("timeout", float, 10.0, check=lambda v: None if 0 < v <= 25 else "must be 0..25 s, under the switch's 30 s"),
        active=s.get("active", bool, True),
        reversal_policy=s.get("reversal_policy", str, "allowed", check=_one_of("allowed", "never")),
        adapter_settings=adapter_settings,
        services=services,
        max_concurrent=s.get("max_concurrent", int, BillerSettings.max_concurrent,
                             check=lambda v: None if 1 <= v <= 10_000 else "must be 1..10000"),
        breaker=_breaker(s.section("breaker")),
        maintenance=_maintenance(s),
        cutoff=_cutoff(s),
    )
    _bill_lookup_fits(out, s.path)
    s.done()
    return out


def _time_of_day(value: str) -> str | None:
    try:
        parse_time(value)
    except ValueError as exc:
        return str(exc)
    return None


def _cutoff(s: _Section) -> CutOff | None:
    """``cutoff = "HH:MM[:SS]"`` (local, the business day's timezone) and
    ``after_cutoff`` (next_day | decline) of a biller."""
    text = s.get("cutoff", str, "", check=lambda v: None if v == "" else _time_of_day(v))
    after = s.get("after_cutoff", str, NEXT_DAY, check=_one_of(*AFTER_CUTOFF))
    if not text:
        if "after_cutoff" in s.data:
            raise ConfigError(f"{s._key('after_cutoff')}: only with cutoff")
        return None
    return CutOff(parse_time(text), after)


def _business_day(s: _Section) -> BusinessCalendar:
    """``[business_day]``: timezone (IANA) and the daily cut-over time."""
    def known_zone(value):
        try:
            zone(value)
        except ValueError as exc:
            return str(exc)
        return None

    out = BusinessCalendar(timezone=s.get("timezone", str, "UTC", check=known_zone),
                           cutover=parse_time(s.get("cutover", str, "00:00", check=_time_of_day)))
    s.done()
    return out


def _bill_lookup_fits(biller: "BillerSettings", path: str) -> None:
    """A service judged against its bills calls the biller twice per payment
    (list the bills, then post): both calls must fit the switch's 30 s."""
    looked_up = [svc for svc in biller.services.values() if svc.needs_bills]
    if looked_up and 2 * biller.timeout > 25:
        raise ConfigError(f"{path}.timeout: service {looked_up[0].code} lists the bills before it posts, "
                          "two biller calls per payment: at most 12.5 s so both fit under the switch's 30 s")


def _breaker(s: _Section) -> BreakerSettings:
    d = BreakerSettings()
    values = dict(
        enabled=s.get("enabled", bool, d.enabled),
        failure_threshold=s.get("failure_threshold", int, d.failure_threshold, check=_positive),
        open_seconds=s.get("open_seconds", float, d.open_seconds, check=_positive),
        max_open_seconds=s.get("max_open_seconds", float, d.max_open_seconds, check=_positive),
    )
    if values["open_seconds"] > values["max_open_seconds"]:
        raise ConfigError(f"{s.path}.open_seconds: greater than max_open_seconds")
    s.done()
    return BreakerSettings(**values)


def _maintenance(biller: _Section) -> tuple[MaintenanceWindow, ...]:
    """``[[billers.X.maintenance]]``: start, end (HH:MM UTC), days, reason."""
    entries = biller.get("maintenance", list, [])
    windows = []
    for i, entry in enumerate(entries):
        s = _Section(entry, f"{biller.path}.maintenance[{i}]", biller.environ)
        start = s.get("start", str)
        end = s.get("end", str)
        days = s.get("days", list, [])
        reason = s.get("reason", str, "")
        for day in days:
            if day not in WEEKDAYS:
                raise ConfigError(f"{s.path}.days: {day!r} is not one of {', '.join(WEEKDAYS)}")
        try:
            windows.append(MaintenanceWindow.parse(start, end, days=days, reason=reason))
        except ValueError as exc:
            raise ConfigError(f"{s.path}: {exc}") from None
        s.done()
    return tuple(windows)


def _plain(value: Any, path: str, environ: Mapping[str, str]) -> Any:
    """A settings value as plain dicts, tuples and scalars, with ``${NAME}``
    interpolated in every string at any depth."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{path}.{k}", environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{path}[{i}]", environ) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _interpolate(value, path, environ)
    return value


def validate_adapters(settings: Settings) -> None:
    """Check each biller's adapter kind and its settings against the kind's
    schema, without building anything; ConfigError naming the key
    (``billers.TEL.settings.pool_size``) otherwise.  ``check-config`` and
    ``serve`` call it; parsing alone does not, so tools that only read the
    file (the audit) work with kinds this process cannot build."""
    from billgw.billing_adapters.registry import AdapterConfigError, check_adapter

    for code, biller in settings.billers.items():
        try:
            check_adapter(biller.adapter, dict(biller.adapter_settings))
        except AdapterConfigError as exc:
            raise ConfigError(f"billers.{code}.{exc.key}: {exc.problem}") from None


def parse_settings(data: Mapping[str, Any], *, base: Path | None = None,
                   environ: Mapping[str, str] | None = None, source: str = "<string>") -> Settings:
    """Validate a decoded TOML document into :class:`Settings`."""
    root = _Section(data, "", os.environ if environ is None else environ)
    base = base or Path.cwd()
    billers_section = root.section("billers")
    billers = {code: _biller(code, billers_section.section(code)) for code in billers_section.keys()}
    codes_section = root.section("response_codes")
    try:
        codes = ResponseCodes.from_mapping(
            {k: codes_section.get(k, dict) for k in codes_section.keys()}
        )
    except ValueError as exc:
        raise ConfigError(f"response_codes: {exc}") from None
    listener = _listener(root.section("gateway"), base)
    settings = Settings(
        listener=listener,
        database=_database(root.section("database"), base),
        logging=_logging(root.section("logging")),
        sms=_sms(root.section("sms")),
        billers=billers,
        response_codes=codes,
        recovery=_recovery(root.section("recovery"), billers),
        source=source,
        peers=_peers(root.section("peers"), listener.require_sign_on, _config_dir(source)),
        business_day=_business_day(root.section("business_day")),
    )
    if settings.peers.by_certificate and (listener.tls is None or listener.tls.client_ca is None):
        name = next(p.name for p in settings.peers.peers if p.certificate_subject)
        raise ConfigError(f"peers.{name}.certificate_subject: needs [gateway.tls] with client_ca (mutual TLS)")
    root.done()
    return settings


def _config_dir(source: str) -> Path | None:
    """The directory of the configuration file (a MAC key file must not be
    kept there), None when the configuration is not a file."""
    path = Path(source)
    return path.resolve().parent if path.is_file() else None


def load_settings(path: str | os.PathLike | None = None, *, environ=None) -> Settings:
    """Load ``path``, or the packaged default ``billgw.conf/billgw.toml``.

    Relative SQLite paths are taken relative to the current directory, so
    ``var/billgw.sqlite`` lands beside where the gateway was started.
    """
    if path is None:
        text = resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")
        source = "billgw.conf/billgw.toml"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_settings(data, base=Path.cwd(), environ=environ, source=source)
