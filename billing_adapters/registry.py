"""Adapter kinds by name, so the gateway builds billers from configuration.

The gateway's biller table names an adapter kind and a settings table; this
module is the one place that turns them into a :class:`BillerAdapter`.  Every
mistake in the settings raises ValueError naming the kind and the key, so the
gateway refuses to start with a message an operator can act on, rather than
failing on the first payment.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from billgw.billing_adapters.instant import InstantBiller
from billgw.billing_adapters.interface import BillerAdapter
from billgw.billing_adapters.telecom_soap import DEFAULT_SOAP_ACTION_PREFIX, TelecomSoapAdapter


@dataclass(frozen=True)
class SettingSpec:
    """One accepted settings key: its check/conversion and its default."""

    check: Callable[[str, Any], Any]
    required: bool = False
    default: Any = None


@dataclass(frozen=True)
class AdapterKind:
    settings: dict[str, SettingSpec]
    build: Callable[..., BillerAdapter]  # build(reactor, log, **checked_settings)


_KINDS: dict[str, AdapterKind] = {}


def register_adapter_kind(kind: str, settings: dict[str, SettingSpec], build: Callable[..., BillerAdapter]) -> None:
    """Make ``kind`` buildable.  Registering a name twice is a programming error."""
    if kind in _KINDS:
        raise ValueError(f"adapter kind {kind!r} is already registered")
    _KINDS[kind] = AdapterKind(settings=dict(settings), build=build)


def adapter_kinds() -> list[str]:
    return sorted(_KINDS)


def build_adapter(kind: str, reactor, settings: dict, log) -> BillerAdapter:
    """Build the adapter of ``kind`` from its ``settings``.

    Raises ValueError naming the unknown kind, or the kind and the missing,
    unknown or invalid key.
    """
    spec = _KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown biller adapter kind {kind!r} (known: {', '.join(adapter_kinds())})")
    unknown = sorted(set(settings) - set(spec.settings))
    if unknown:
        raise ValueError(
            f"adapter kind {kind!r}: unknown setting(s) {', '.join(map(repr, unknown))}"
            f" (accepted: {', '.join(sorted(spec.settings))})"
        )
    checked = {}
    for key, setting in spec.settings.items():
        if key not in settings:
            if setting.required:
                raise ValueError(f"adapter kind {kind!r}: missing required setting {key!r}")
            checked[key] = setting.default
        else:
            checked[key] = setting.check(f"adapter kind {kind!r}: setting {key!r}", settings[key])
    return spec.build(reactor, log, **checked)


# --- checks --------------------------------------------------------------------

def http_url(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string URL, not {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where} must be an http(s) URL with a host, not {value!r}")
    try:
        value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{where} must be ASCII (IDNA-encode the host), not {value!r}") from None
    return value


def positive_number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{where} must be a positive number of seconds, not {value!r}")
    return float(value)


def positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a positive integer, not {value!r}")
    return value


def non_empty_str(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string, not {value!r}")
    return value


# --- the kinds we have ----------------------------------------------------------

def _build_telecom_soap(reactor, log, *, url, connect_timeout, pool_size, soap_action_prefix) -> BillerAdapter:
    return TelecomSoapAdapter(
        reactor, url, timeout_connect=connect_timeout, pool_size=pool_size,
        soap_action_prefix=soap_action_prefix, log=log,
    )


register_adapter_kind(
    "telecom_soap",
    {
        "url": SettingSpec(http_url, required=True),
        "connect_timeout": SettingSpec(positive_number, default=5.0),
        "pool_size": SettingSpec(positive_int, default=4),
        "soap_action_prefix": SettingSpec(non_empty_str, default=DEFAULT_SOAP_ACTION_PREFIX),
    },
    _build_telecom_soap,
)


def _build_instant(reactor, log, *, customer_name, bill_amount) -> BillerAdapter:
    return InstantBiller(customer_name=customer_name, bill_amount=bill_amount)


register_adapter_kind(
    "instant",
    {
        "customer_name": SettingSpec(non_empty_str, default="Benchmark Subscriber"),
        "bill_amount": SettingSpec(positive_int, default=12_500),
    },
    _build_instant,
)
