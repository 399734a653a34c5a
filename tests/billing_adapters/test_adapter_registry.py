"""build_adapter turns configuration into adapters, or says exactly what is wrong."""
from __future__ import annotations

import pytest
import structlog
from twisted.internet.testing import MemoryReactorClock

from billgw.billing_adapters.registry import adapter_kinds, build_adapter, register_adapter_kind
from billgw.billing_adapters.telecom_soap import DEFAULT_SOAP_ACTION_PREFIX, TelecomSoapAdapter

URL = "http://127.0.0.1:8081/BillingService"


def build(settings, kind="telecom_soap"):
    return build_adapter(kind, MemoryReactorClock(), settings, structlog.get_logger())


def test_telecom_soap_with_defaults():
    adapter = build({"url": URL})
    assert isinstance(adapter, TelecomSoapAdapter)
    assert adapter._pool.maxPersistentPerHost == 4
    assert adapter._agent._endpointFactory._connectTimeout == 5.0
    assert adapter._soap_action_prefix == DEFAULT_SOAP_ACTION_PREFIX
    assert adapter.capabilities.can_reverse and adapter.capabilities.can_query_status


def test_telecom_soap_with_settings():
    adapter = build({"url": URL, "connect_timeout": 2, "pool_size": 8})
    assert adapter._pool.maxPersistentPerHost == 8
    assert adapter._agent._endpointFactory._connectTimeout == 2.0


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="'ftp_batch'"):
        build({"url": URL}, kind="ftp_batch")


def test_missing_url_is_named():
    with pytest.raises(ValueError, match="telecom_soap.*missing.*'url'"):
        build({"pool_size": 2})


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="unknown setting.*'timeout'"):
        build({"url": URL, "timeout": 3})


@pytest.mark.parametrize("settings,key", [
    ({"url": "127.0.0.1:8081"}, "url"),
    ({"url": 8081}, "url"),
    ({"url": URL, "pool_size": 0}, "pool_size"),
    ({"url": URL, "pool_size": "4"}, "pool_size"),
    ({"url": URL, "connect_timeout": -1}, "connect_timeout"),
    ({"url": URL, "connect_timeout": True}, "connect_timeout"),
])
def test_invalid_values_are_named(settings, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        build(settings)


def test_kinds_register_once():
    assert "telecom_soap" in adapter_kinds()
    with pytest.raises(ValueError, match="already registered"):
        register_adapter_kind("telecom_soap", {}, lambda reactor, log: None)
