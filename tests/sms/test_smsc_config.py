"""[sms] delivery keys and [[sms.smsc]] connections: what a deployment writes,
what it gets, and a message naming the key for every mistake."""
import tomllib
from importlib import resources

import pytest
from twisted.internet.task import Clock

from billgw.gateway.config import ConfigError, parse_settings, require_sms_password, smsc_connections

TWO_SMSCS = [
    {"name": "zain", "host": "10.0.0.1", "port": 2775, "system_id": "bgw", "password": "pw1",
     "binds": ["transceiver", "transceiver"], "prefixes": ["96279"], "window": 5, "rate": 20.0},
    {"name": "agg", "host": "10.0.0.2", "port": 2776, "system_id": "bgw2", "password": "pw2",
     "binds": ["transmitter", "receiver"]},
]


def doc(**sms):
    text = resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")
    d = tomllib.loads(text)
    d["sms"].update(sms)
    return d


def several(**sms):
    d = doc(**sms)
    for key in ("host", "port", "system_id", "password", "system_type", "bind"):
        d["sms"].pop(key, None)
    d["sms"]["smsc"] = [dict(t) for t in TWO_SMSCS]
    return d


def test_the_packaged_configuration_is_one_transceiver_smsc_with_receipts_and_expiry():
    sms = parse_settings(doc(password="pw"), environ={}).sms
    [c] = smsc_connections(sms)
    assert (c.name, c.binds, c.prefixes, c.password) == ("default", ("transceiver",), (), "pw")
    assert (sms.delivery_receipts, sms.expire_after, sms.validity_period) == (True, 86400.0, 86400.0)


def test_a_transmitter_with_a_receiver_is_one_smsc_with_two_binds():
    sms = parse_settings(doc(password="pw", binds=["transmitter", "receiver"]), environ={}).sms
    assert smsc_connections(sms)[0].binds == ("transmitter", "receiver")


def test_several_smscs_with_binds_and_prefixes():
    sms = parse_settings(several(window=10, rate=50.0), environ={}).sms
    zain, agg = smsc_connections(sms)
    assert (zain.name, zain.binds, zain.prefixes, zain.window, zain.rate) == (
        "zain", ("transceiver", "transceiver"), ("96279",), 5, 20.0)
    assert (agg.binds, agg.prefixes, agg.window, agg.rate, agg.source_addr) == (
        ("transmitter", "receiver"), (), 10, 50.0, "BILLGW")
    require_sms_password(sms)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["sms"].__setitem__("bind", "transmitter"),
     r"^sms\.bind: a transmitter bind never receives delivery receipts"),
    (lambda d: d["sms"].__setitem__("binds", ["receiver"]), r"^sms\.binds: needs a transmitter or transceiver"),
    (lambda d: d["sms"].__setitem__("binds", ["outbound"]), r"^sms\.binds: must be a non-empty list"),
    (lambda d: d["sms"].__setitem__("expire_after", -1), r"^sms\.expire_after: must not be negative"),
    (lambda d: d["sms"].__setitem__("delivery_receipts", "yes"), r"^sms\.delivery_receipts: expected bool"),
])
def test_bad_delivery_keys_are_named(mutate, message):
    d = doc(password="pw")
    mutate(d)
    with pytest.raises(ConfigError, match=message):
        parse_settings(d, environ={})


def test_a_transmitter_alone_is_fine_without_receipts():
    sms = parse_settings(doc(password="pw", bind="transmitter", delivery_receipts=False), environ={}).sms
    assert smsc_connections(sms)[0].binds == ("transmitter",)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["sms"].__setitem__("host", "x"), r"^sms\.host: with \[\[sms\.smsc\]\] connections"),
    (lambda d: d["sms"]["smsc"][1].__setitem__("name", "zain"), r"^sms\.smsc\[1\]\.name: 'zain' is used twice"),
    (lambda d: d["sms"]["smsc"][1].__setitem__("prefixes", ["96279"]),
     r"^sms\.smsc\[1\]\.prefixes: 96279 is routed to zain already"),
    (lambda d: d["sms"]["smsc"][0].__setitem__("prefixes", []),
     r"^sms\.smsc\[1\]\.prefixes: zain is the default route"),
    (lambda d: d["sms"]["smsc"][0].__setitem__("prefixes", ["+962"]), r"^sms\.smsc\[0\]\.prefixes: '\+962'"),
    (lambda d: d["sms"]["smsc"][0].pop("host"), r"^sms\.smsc\[0\]\.host: required key is missing"),
    (lambda d: d["sms"]["smsc"][0].__setitem__("binds", ["transmitter"]),
     r"^sms\.smsc\[0\]\.binds: a transmitter bind never receives"),
    (lambda d: d["sms"]["smsc"][0].__setitem__("pasword", "x"), r"^sms\.smsc\[0\]\.pasword: unknown key"),
    (lambda d: d["sms"]["smsc"][0].__setitem__("rate", 0.2), r"^sms\.lease_seconds: must exceed"),
])
def test_bad_smsc_connections_are_named(mutate, message):
    d = several()
    mutate(d)
    with pytest.raises(ConfigError, match=message):
        parse_settings(d, environ={})


def test_each_smsc_needs_its_password_to_start():
    d = several()
    d["sms"]["smsc"][1]["password"] = ""
    sms = parse_settings(d, environ={}).sms
    with pytest.raises(ConfigError, match=r"^sms\.smsc\[1\]\.password: required"):
        require_sms_password(sms)


def test_the_gateway_builds_a_bind_per_configured_bind_and_routes_by_prefix(tmp_path):
    from billgw.gateway.service import GatewayService

    d = several()
    d["database"]["url"] = f"sqlite:///{tmp_path / 'j.sqlite'}"
    settings = parse_settings(d, environ={})
    gateway = GatewayService(settings, Clock())
    router = gateway.link
    assert [(r.name, r.prefixes, [(link.config.bind_mode, link.config.name, link.config.window, link.config.rate,
                                   link.config.registered_delivery) for link in r.links]) for r in router.routes] == [
        ("zain", ("96279",), [("transceiver", "zain", 5, 10.0, 1), ("transceiver", "zain", 5, 10.0, 1)]),
        ("agg", (), [("transmitter", "agg", 10, 50.0, 1), ("receiver", "agg", 10, 50.0, 1)]),
    ]
    assert all(link.on_deliver == gateway.delivery_receipts.deliver_sm for link in router.links)
    assert gateway.sender.expire_after == 86400.0
    assert {link.config.validity_period for link in router.links} == {86400.0}  # on every submit_sm
    gateway.engine.dispose()
    gateway.read_engine.dispose()
