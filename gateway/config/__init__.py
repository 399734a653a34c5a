"""Configuration: one TOML file, validated in full before anything starts.

Every key is known: a misspelt or unknown key, a missing required key, or a
value of the wrong type stops start-up with a :class:`ConfigError` that names
the key by its dotted path (``billers.TEL.services.MOBILE.exponent``).
String values may name environment variables, ``${NAME}`` or
``${NAME:-default}``, so secrets (the SMPP password) need not sit in the file.

One module per part of the file; this one puts them together
(:func:`parse_settings`, :func:`load_settings`) and exports every name:

- :mod:`.reader`: :class:`ConfigError` and the table reader that tracks
  keys, interpolates the environment and checks values;
- :mod:`.listener`: ``[gateway]`` (with ``[gateway.tls]``) and ``[peers.NAME]``;
- :mod:`.process`: ``[database]`` and ``[logging]``;
- :mod:`.sms`: ``[sms]``, its templates and ``[[sms.smsc]]`` connections;
- :mod:`.billers`: ``[billers.CODE]``, their services and bill rules, and
  :func:`validate_adapters`;
- :mod:`.business_calendar`: ``[business_day]`` and a biller's cut-off;
- :mod:`.recovery`: ``[recovery]``.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from billgw.iso8583.codes import ResponseCodes

from ..business_day import BusinessCalendar
from ..peers import DEFAULT_PEERS, PeerTable
from .billers import (
    FEE_BILLER,
    FEE_CUSTOMER,
    POSTPAID,
    PREPAID,
    REFERENCE_CHECKED,
    REFERENCE_IGNORED,
    REFERENCE_REQUIRED,
    BillerSettings,
    ServiceSettings,
    _biller,
    validate_adapters,
)
from .business_calendar import _business_day
from .listener import ListenerSettings, TlsSettings, _listener, _peers
from .process import DatabaseSettings, LoggingSettings, _database, _logging
from .reader import ConfigError, _Section
from .recovery import RecoverySettings, _recovery
from .sms import SmscConnection, SmsSettings, _sms, require_sms_password, smsc_connections

__all__ = [
    "FEE_BILLER", "FEE_CUSTOMER", "POSTPAID", "PREPAID", "REFERENCE_CHECKED", "REFERENCE_IGNORED",
    "REFERENCE_REQUIRED", "BillerSettings", "ConfigError", "DatabaseSettings", "ListenerSettings",
    "LoggingSettings", "RecoverySettings", "ServiceSettings", "Settings", "SmscConnection", "SmsSettings",
    "TlsSettings", "load_settings", "parse_settings", "require_sms_password", "smsc_connections",
    "validate_adapters",
]


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
