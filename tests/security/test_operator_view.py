"""What the operator reads and sets: the refusal counters on an interval,
the PAN hash key, the journal look-up's output and input."""
import io

import pytest
from structlog.testing import capture_logs

from billgw.gateway.journal_find import FindUsageError, FoundPayment, card_digits, read_pan, render
from billgw.gateway.keys import pan_hasher_from_env
from billgw.gateway.service import ListenerService
from billgw.iso8583.masking import PanHasher

from security_wire import connect, gateway


def test_refusal_counters_are_logged_on_an_interval_when_they_change():
    factory, _, clock = gateway()
    service = ListenerService(clock, "tcp:0:interface=127.0.0.1", factory, counters_interval=60)
    with capture_logs() as logs:
        service.startService()
        assert connect(factory, host="192.0.2.9") == (None, None)  # no peer there
        clock.advance(60)
        clock.advance(60)  # nothing changed: no second line
        factory.count("rate_limited")
        clock.advance(60)
        service.stopService()
    lines = [e for e in logs if e["event"] == "refusal counters"]
    assert [e["refusals"] for e in lines] == [{"unknown_peer": 1}, {"rate_limited": 1, "unknown_peer": 1}]
    assert service.health()["refusals"] == {"rate_limited": 1, "unknown_peer": 1}


def test_pan_hash_key_from_the_environment_only_and_long_enough():
    assert pan_hasher_from_env({}) is None
    with pytest.raises(ValueError, match="BILLGW_PAN_HMAC_KEY: at least 32 characters"):
        pan_hasher_from_env({"BILLGW_PAN_HMAC_KEY": "short"})
    hasher = pan_hasher_from_env({"BILLGW_PAN_HMAC_KEY": "k" * 32})
    assert hasher("4761 7390 0101 0010") == hasher("4761739001010010") == PanHasher(b"k" * 32)("4761-7390-0101-0010")
    assert hasher("4761739001010010") != PanHasher(b"j" * 32)("4761739001010010")
    assert "k" * 32 not in repr(hasher) and len(hasher("4761739001010010")) == 64


def test_look_up_input_and_output():
    assert card_digits("4761 7390-0101 0010") == "4761739001010010"
    with pytest.raises(FindUsageError):
        card_digits("47617390")
    assert read_pan(None, prompt=lambda _: "4761739001010010") == "4761739001010010"
    row = FoundPayment("ab" * 16, "2026-12-06 04:00:00", "payment", "0200", "CONFIRMED", "476173******0010",
                       12500, "400", "TEL", "123456", "ATM\x1b[2J1", "000101", "634010000101", "00")
    out = io.StringIO()
    render([row], out)
    assert "\x1b" not in out.getvalue() and "ATM\\x1b[2J1" in out.getvalue()


def test_a_listener_off_loopback_warns_unless_the_gateway_adds_tls():
    from billgw.gateway.exposure import exposure_warning

    assert "without TLS" in exposure_warning("tcp:8583:interface=0.0.0.0")
    assert exposure_warning("tcp:8583:interface=0.0.0.0", tls=True) is None
