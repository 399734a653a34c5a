"""Adapter kinds by name, so the gateway builds billers from configuration.

The gateway's biller table names an adapter kind and a settings table; this
module is the one place that turns them into a :class:`BillerAdapter`.  Each
kind declares its settings as a schema (:mod:`.settings_schema`): nested
tables, code maps and lists are allowed, every key is checked and unknown
keys are refused.  :func:`check_adapter` validates without building anything
(``billgw check-config``); :func:`build_adapter` validates, then builds.
Mistakes raise :class:`AdapterConfigError` whose ``key`` is relative to the
biller's table (``adapter``, ``settings.pool_size``, ``settings.columns.amount``),
so the operator is told which line is wrong before the gateway starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from billgw.billing_adapters.instant import InstantBiller
from billgw.billing_adapters.interface import BillerAdapter, DeclineReason, LedgerEntry
from billgw.billing_adapters.json_biller.adapter import JsonBillerAdapter, read_json_ledger
from billgw.billing_adapters.settings_schema import (
    Setting,
    SettingsError,
    Table,
    boolean,
    http_url,
    mapping_of,
    non_empty_str,
    one_of,
    positive_int,
    positive_number,
)
from billgw.billing_adapters.telecom_soap import DEFAULT_SOAP_ACTION_PREFIX, TelecomSoapAdapter
from billgw.billing_adapters.water import adapter as _water

# Kept for callers of the first registry (one flat table of SettingSpec).
SettingSpec = Setting


class AdapterConfigError(ValueError):
    """The adapter kind or one of its settings is wrong; ``key`` is relative
    to the biller's table (``adapter`` or ``settings.<dotted path>``)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class AdapterKind:
    schema: Table
    build: Callable[..., BillerAdapter]  # build(reactor, log, *, context, **checked_settings)
    doc: str = ""
    # read_ledger(checked_settings, source) -> [LedgerEntry]: the same read
    # as the adapter's read_ledger method, without building an adapter (the
    # audit runs with no reactor).  None: the kind cannot read its ledger.
    read_ledger: Callable[[dict, str | None], list[LedgerEntry]] | None = None


@dataclass(frozen=True)
class BuildContext:
    """What the gateway knows about the biller beyond its settings table."""

    biller_code: str = ""
    timeout: float | None = None  # the biller's call timeout (billers.<CODE>.timeout)
    clock: Any = None  # IReactorTime for budgets and retries (the reactor by default)


_KINDS: dict[str, AdapterKind] = {}


def register_adapter_kind(kind: str, settings: dict[str, Setting] | Table, build: Callable[..., BillerAdapter],
                          *, doc: str = "", read_ledger=None) -> None:
    """Make ``kind`` buildable.  Registering a name twice is a programming error."""
    if kind in _KINDS:
        raise ValueError(f"adapter kind {kind!r} is already registered")
    schema = settings if isinstance(settings, Table) else Table(dict(settings))
    _KINDS[kind] = AdapterKind(schema=schema, build=build, doc=doc, read_ledger=read_ledger)


def ledger_kinds() -> list[str]:
    """The adapter kinds that can read their biller's ledger."""
    return sorted(kind for kind, spec in _KINDS.items() if spec.read_ledger is not None)


def ledger_reader(kind: str, settings: dict) -> Callable[[str | None], list[LedgerEntry]] | None:
    """``read(source)`` for a biller of ``kind`` with ``settings``, or None
    when the kind cannot read its ledger.  ``read`` blocks and raises
    LedgerUnavailable.

    The settings are checked when they are complete; an audit names its
    source (a file, a URL), so a biller table holding only what the audit
    needs (no ``url``, say) is read with the schema's defaults for the rest
    rather than refused -- ``check-config`` is where the table is judged."""
    spec = _kind(kind)
    if spec.read_ledger is None:
        return None
    try:
        checked = check_adapter(kind, settings)
    except AdapterConfigError as exc:
        if not exc.problem.startswith("required setting is missing"):
            raise
        checked = {key: setting.default for key, setting in spec.schema.settings.items()}
        checked.update(settings)
    return lambda source=None: spec.read_ledger(checked, source)


def adapter_kinds() -> list[str]:
    return sorted(_KINDS)


def adapter_schema(kind: str) -> Table:
    return _kind(kind).schema


def _kind(kind: str) -> AdapterKind:
    spec = _KINDS.get(kind)
    if spec is None:
        raise AdapterConfigError("adapter", f"unknown biller adapter kind {kind!r} (known: {', '.join(adapter_kinds())})")
    return spec


def check_adapter(kind: str, settings: dict) -> dict[str, Any]:
    """The checked settings of ``kind`` (defaults filled in), or
    AdapterConfigError naming the key.  Builds and opens nothing."""
    spec = _kind(kind)
    try:
        return spec.schema.check(settings)
    except SettingsError as exc:
        key = f"settings.{exc.key}" if exc.key else "settings"
        raise AdapterConfigError(key, f"{exc.problem} (adapter kind {kind!r})") from None


def build_adapter(kind: str, reactor, settings: dict, log, *, context: BuildContext | None = None) -> BillerAdapter:
    """Build the adapter of ``kind`` from its ``settings``; AdapterConfigError
    (a ValueError) naming the key when they are wrong."""
    checked = check_adapter(kind, settings)
    return _KINDS[kind].build(reactor, log, context=context or BuildContext(), **checked)


# --- the kinds we have ----------------------------------------------------------

def _build_telecom_soap(reactor, log, *, context, url, connect_timeout, pool_size, soap_action_prefix,
                        request_timeout, idle_timeout, ledger) -> BillerAdapter:
    return TelecomSoapAdapter(
        reactor, url, timeout_connect=connect_timeout, pool_size=pool_size,
        soap_action_prefix=soap_action_prefix, log=log, clock=context.clock,
        timeout=request_timeout, idle_timeout=idle_timeout, ledger_path=ledger,
    )


def _telecom_ledger(settings: dict, source: str | None) -> list[LedgerEntry]:
    from billgw.billing_adapters.telecom_sim import read_ledger_file

    return read_ledger_file(source or settings["ledger"])


register_adapter_kind(
    "telecom_soap",
    {
        "url": Setting(http_url, required=True, doc="the BillingService endpoint"),
        "connect_timeout": Setting(positive_number, default=5.0, doc="seconds to open a connection"),
        "pool_size": Setting(positive_int, default=4, doc="connections to the biller at most"),
        "soap_action_prefix": Setting(non_empty_str, default=DEFAULT_SOAP_ACTION_PREFIX),
        "request_timeout": Setting(positive_number, default=None,
                                   doc="budget of one call in seconds, below the biller's timeout: a call that "
                                       "could not even be sent in it is 'unavailable' (91, nothing "
                                       "recorded) rather than in doubt (default: none of its own)"),
        "idle_timeout": Setting(positive_number, default=60.0, doc="seconds an idle connection is kept"),
        "ledger": Setting(non_empty_str, default=None,
                          doc="the back office's SQLite ledger file, for billgw audit (the simulator's)"),
    },
    _build_telecom_soap,
    doc="SOAP 1.1 over HTTP (billing_adapters/telecom_soap.md)",
    read_ledger=_telecom_ledger,
)


def _build_instant(reactor, log, *, context, customer_name, bill_amount) -> BillerAdapter:
    return InstantBiller(customer_name=customer_name, bill_amount=bill_amount)


register_adapter_kind(
    "instant",
    {
        "customer_name": Setting(non_empty_str, default="Benchmark Subscriber"),
        "bill_amount": Setting(positive_int, default=12_500),
    },
    _build_instant,
    doc="answers at once from memory (benchmarks only)",
)


# Shared by the HTTP kinds: the transport's settings.
def _http_settings(pool_size: int = 4) -> dict[str, Setting]:
    return {
        "connect_timeout": Setting(positive_number, default=5.0, doc="seconds to open a connection"),
        "pool_size": Setting(positive_int, default=pool_size, doc="connections to the biller at most"),
        "request_timeout": Setting(positive_number, default=None, doc="budget of one call, seconds"),
        "idle_timeout": Setting(positive_number, default=60.0, doc="seconds an idle connection is kept"),
    }


def _decline_reason(path: str, value: Any) -> DeclineReason:
    return DeclineReason(one_of(*(r.value for r in DeclineReason))(path, value))


def _header_value(path: str, value: Any) -> str:
    text = non_empty_str(path, value)
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise SettingsError(path, "an HTTP header value must be Latin-1 text") from None
    if "\r" in text or "\n" in text:
        raise SettingsError(path, "an HTTP header value cannot hold a line break")
    return text


def _build_json(reactor, log, *, context, url, service_names, headers, error_codes, supports_status,
                supports_reversal, connect_timeout, pool_size, request_timeout, idle_timeout,
                ledger_page_size) -> BillerAdapter:
    return JsonBillerAdapter(
        reactor, url, service_names=service_names, headers=headers, error_codes=error_codes,
        supports_status=supports_status, supports_reversal=supports_reversal, connect_timeout=connect_timeout,
        pool_size=pool_size, timeout=request_timeout, idle_timeout=idle_timeout,
        ledger_page_size=ledger_page_size, clock=context.clock, log=log)


register_adapter_kind(
    "json",
    {
        "url": Setting(http_url, required=True, doc="the biller's base URL, e.g. http://host/api/v1"),
        "service_names": Setting(mapping_of(non_empty_str, key_pattern=r"[A-Za-z0-9_]{1,16}"), default={},
                                 doc="our service code -> the biller's service name (default: the same)"),
        "headers": Setting(mapping_of(_header_value, key_pattern=r"[A-Za-z0-9-]{1,64}"), default={},
                           doc="extra HTTP headers, e.g. Authorization = \"Bearer ${TOKEN}\""),
        "error_codes": Setting(mapping_of(_decline_reason, key_pattern=r"[A-Z0-9_]{1,40}"), default={},
                               doc="the biller's own error codes -> a decline reason"),
        "supports_status": Setting(boolean, default=True, doc="the biller answers GET /payments/{id}"),
        "supports_reversal": Setting(boolean, default=True, doc="the biller takes reversals"),
        "ledger_page_size": Setting(positive_int, default=500, doc="payments per reconciliation page"),
        **_http_settings(),
    },
    _build_json,
    doc="the generic JSON bill-pull / payment-notification interface (docs/billers.md)",
    read_ledger=lambda settings, source: read_json_ledger(
        source or settings["url"], page_size=settings["ledger_page_size"], headers=settings["headers"]),
)


# The electricity host: fixed-width EBCDIC records over one persistent TCP
# link (billing_adapters/electricity/, docs/billers.md).
from billgw.billing_adapters.electricity import settings as _electricity  # noqa: E402

register_adapter_kind(
    "electricity",
    _electricity.SCHEMA,
    _electricity.build,
    doc="a mainframe-style host: fixed-width EBCDIC records over a persistent TCP link",
    read_ledger=_electricity.read_ledger,
)


def _water_ledger(settings: dict, source: str | None) -> list[LedgerEntry]:
    from billgw.billing_adapters.water.adapter import read_water_ledger
    from billgw.billing_adapters.water.mapping import WaterTables

    return read_water_ledger(WaterTables.from_settings(settings, schema=settings["schema"]),
                             source or settings["url"])


register_adapter_kind(
    "water",
    _water.SETTINGS,
    _water.build_from_settings,
    doc="the biller's own database tables: bills read, payments inserted into its intake, "
        "booked by its batch (docs/billers.md)",
    read_ledger=_water_ledger,
)
