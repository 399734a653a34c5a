"""build_adapter turns configuration into adapters, or says exactly which
key is wrong; check_adapter does the same without building anything; the
settings schema takes nested tables, code maps and lists."""
from __future__ import annotations

import pytest
import structlog
from twisted.internet.testing import MemoryReactorClock

from billgw.billing_adapters.registry import (
    AdapterConfigError,
    adapter_kinds,
    build_adapter,
    check_adapter,
    register_adapter_kind,
)
from billgw.billing_adapters.settings_schema import (
    Setting,
    SettingsError,
    Table,
    list_of,
    mapping_of,
    non_empty_str,
    one_of,
    positive_int,
)
from billgw.billing_adapters.telecom_soap import DEFAULT_SOAP_ACTION_PREFIX, TelecomSoapAdapter

URL = "http://127.0.0.1:8081/BillingService"


def build(settings, kind="telecom_soap"):
    return build_adapter(kind, MemoryReactorClock(), settings, structlog.get_logger())


def test_telecom_soap_with_defaults():
    adapter = build({"url": URL})
    assert isinstance(adapter, TelecomSoapAdapter)
    assert adapter.transport.pool_size == 4
    assert adapter.transport._pool.maxPersistentPerHost == 4
    assert adapter.transport.connect_timeout == 5.0
    assert adapter.transport._timeout is None  # the caller's timeout governs
    assert adapter._soap_action_prefix == DEFAULT_SOAP_ACTION_PREFIX
    assert adapter.capabilities.can_reverse and adapter.capabilities.can_query_status


def test_telecom_soap_with_settings():
    adapter = build({"url": URL, "connect_timeout": 2, "pool_size": 8, "request_timeout": 7, "idle_timeout": 20})
    assert adapter.transport.pool_size == 8
    assert adapter.transport.connect_timeout == 2.0
    assert adapter.transport._timeout == 7.0
    assert adapter.transport._pool.cachedConnectionTimeout == 20.0


def test_unknown_kind_is_named_on_the_adapter_key():
    with pytest.raises(AdapterConfigError, match="'ftp_batch'") as info:
        build({"url": URL}, kind="ftp_batch")
    assert info.value.key == "adapter"


def test_missing_url_is_named():
    with pytest.raises(AdapterConfigError, match=r"^settings\.url: required setting is missing") as info:
        build({"pool_size": 2})
    assert info.value.key == "settings.url"


def test_unknown_key_is_named():
    with pytest.raises(AdapterConfigError, match=r"^settings\.timeout: unknown setting"):
        build({"url": URL, "timeout": 3})


@pytest.mark.parametrize("settings,key", [
    ({"url": "127.0.0.1:8081"}, "url"),
    ({"url": 8081}, "url"),
    ({"url": URL, "pool_size": 0}, "pool_size"),
    ({"url": URL, "pool_size": "4"}, "pool_size"),
    ({"url": URL, "connect_timeout": -1}, "connect_timeout"),
    ({"url": URL, "connect_timeout": True}, "connect_timeout"),
    ({"url": URL, "request_timeout": 0}, "request_timeout"),
])
def test_invalid_values_are_named(settings, key):
    with pytest.raises(AdapterConfigError) as info:
        check_adapter("telecom_soap", settings)
    assert info.value.key == f"settings.{key}"
    assert "telecom_soap" in str(info.value)


def test_check_builds_nothing_and_fills_defaults():
    checked = check_adapter("telecom_soap", {"url": URL})
    assert checked == {"url": URL, "connect_timeout": 5.0, "pool_size": 4,
                       "soap_action_prefix": DEFAULT_SOAP_ACTION_PREFIX, "request_timeout": None,
                       "idle_timeout": 60.0, "ledger": None}


def test_kinds_register_once():
    assert {"telecom_soap", "instant"} <= set(adapter_kinds())
    with pytest.raises(ValueError, match="already registered"):
        register_adapter_kind("telecom_soap", {}, lambda reactor, log, **_: None)


# --- the schema's nesting -------------------------------------------------------

NESTED = Table({
    "table": Setting(non_empty_str, required=True),
    "columns": Setting(Table({"amount": Setting(non_empty_str, default="amount"),
                              "number": Setting(non_empty_str, required=True)}), default=None),
    "codes": Setting(mapping_of(one_of("paid", "rejected"), key_pattern=r"[A-Z0-9]{1,4}"), default={}),
    "hosts": Setting(list_of(non_empty_str, min_items=1), default=("a",)),
    "retries": Setting(positive_int, default=1),
})


def test_nested_settings_are_checked_and_filled():
    checked = NESTED.check({"table": "intake", "columns": {"number": "acct"}, "codes": {"P": "paid", "R9": "rejected"},
                            "hosts": ["h1", "h2"]})
    assert checked == {"table": "intake", "columns": {"amount": "amount", "number": "acct"},
                       "codes": {"P": "paid", "R9": "rejected"}, "hosts": ("h1", "h2"), "retries": 1}


@pytest.mark.parametrize("value,key", [
    ({"table": "t", "columns": {"numbr": "x"}}, "columns.numbr"),
    ({"table": "t", "columns": {}}, "columns.number"),
    ({"table": "t", "columns": "acct"}, "columns"),
    ({"table": "t", "codes": {"P": "posted"}}, "codes.P"),
    ({"table": "t", "codes": {"toolong": "paid"}}, "codes.toolong"),
    ({"table": "t", "hosts": []}, "hosts"),
    ({"table": "t", "hosts": ["ok", ""]}, "hosts[1]"),
    ({"tabel": "t"}, "tabel"),
    ({}, "table"),
])
def test_nested_mistakes_name_the_dotted_key(value, key):
    with pytest.raises(SettingsError) as info:
        NESTED.check(value)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_a_kind_with_nested_settings_reports_them_relative_to_the_biller():
    register_adapter_kind("test_nested_kind", NESTED, lambda reactor, log, *, context, **kw: kw)
    with pytest.raises(AdapterConfigError) as info:
        check_adapter("test_nested_kind", {"table": "t", "columns": {"numbr": "x"}})
    assert info.value.key == "settings.columns.numbr"
