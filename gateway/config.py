"""Configuration: one TOML file, validated in full before anything starts.

Every key is known: a misspelt or unknown key, a missing required key, or a
value of the wrong type stops start-up with a :class:`ConfigError` that names
the key by its dotted path (``billers.TEL.services.MOBILE.exponent``).
String values may name environment variables, ``${NAME}`` or
``${NAME:-default}``, so secrets (the SMPP password) need not sit in the file.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.framing import HEADERS
from billgw.sms.templates import DEFAULT_REVERSAL_TEMPLATES, DEFAULT_TEMPLATES, validate_templates


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


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///var/billgw.sqlite"
    pool_size: int = 4
    auto_upgrade: bool = True


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

    def billing_number_ok(self, number: str) -> bool:
        return re.fullmatch(self.billing_number_pattern, number) is not None


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


@dataclass(frozen=True)
class SmsSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = "billgw"
    password: str = "secret"
    system_type: str = ""
    source_addr: str = "BILLGW"
    source_addr_ton: int = 5
    source_addr_npi: int = 0
    bind: str = "transmitter"
    poll_interval: float = 2.0
    batch_size: int = 20
    lease_seconds: float = 60.0
    max_attempts: int = 8
    retry_base: float = 5.0
    retry_cap: float = 600.0
    submit_timeout: float = 10.0
    enquire_link_interval: float = 30.0
    receipt_templates: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    reversal_templates: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REVERSAL_TEMPLATES))


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


def _listener(s: _Section) -> ListenerSettings:
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
    )
    s.done()
    return out


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
        templates[lang] = s.get(lang, str)
    try:
        validate_templates(templates)
    except ValueError as exc:
        raise ConfigError(f"{s.path}: {exc}") from None
    return templates


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
        ("poll_interval", float, _positive),
        ("batch_size", int, _positive),
        ("lease_seconds", float, _positive),
        ("max_attempts", int, _positive),
        ("retry_base", float, _positive),
        ("retry_cap", float, _positive),
        ("submit_timeout", float, _positive),
        ("enquire_link_interval", float, _positive),
    ):
        values[name] = s.get(name, kind, getattr(d, name), check=check)
    templates = s.section("templates")
    values["receipt_templates"] = _templates(templates.section("receipt"), DEFAULT_TEMPLATES)
    values["reversal_templates"] = _templates(templates.section("reversal"), DEFAULT_REVERSAL_TEMPLATES)
    templates.done()
    if values["submit_timeout"] >= values["lease_seconds"]:
        raise ConfigError(f"{s.path}.submit_timeout: must be shorter than lease_seconds, "
                          "or a receipt could be claimed twice while in flight")
    s.done()
    return SmsSettings(**values)


def _recovery(s: _Section, billers: Mapping[str, "BillerSettings"]) -> RecoverySettings:
    d = RecoverySettings()
    values = {name: s.get(name, type(getattr(d, name)), getattr(d, name), check=_positive)
              for name in ("poll_interval", "batch_size", "lease_seconds", "retry_base", "retry_cap",
                           "stale_after", "status_delay", "expire_after")}
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
    )
    if out.min_amount > out.max_amount:
        raise ConfigError(f"{s.path}.min_amount: greater than max_amount")
    s.done()
    return out


def _biller(code: str, s: _Section) -> BillerSettings:
    name_en = s.get("name_en", str)
    name_ar = s.get("name_ar", str, name_en)
    adapter = s.get("adapter", str)
    settings_section = s.section("settings")
    adapter_settings = {}
    for key in settings_section.keys():
        adapter_settings[key] = settings_section.get(key, (str, int, float, bool))
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
    )
    s.done()
    return out


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
    settings = Settings(
        listener=_listener(root.section("gateway")),
        database=_database(root.section("database"), base),
        logging=_logging(root.section("logging")),
        sms=_sms(root.section("sms")),
        billers=billers,
        response_codes=codes,
        recovery=_recovery(root.section("recovery"), billers),
        source=source,
    )
    root.done()
    return settings


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
