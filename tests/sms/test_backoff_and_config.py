"""Back-off arithmetic and the link configuration checks made at start-up."""
import pytest

from billgw.sms.backoff import exponential_backoff
from billgw.sms.smpp_link import SmppLinkConfig


def test_backoff_doubles_from_base_and_stops_at_cap():
    assert [exponential_backoff(n, 1.0, 10.0) for n in range(0, 7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert exponential_backoff(10_000, 30.0, 3600.0) == 3600.0  # no overflow after a long outage


def config(**overrides):
    settings = dict(host="127.0.0.1", port=2775, system_id="gw", password="pw")
    settings.update(overrides)
    return SmppLinkConfig(**settings)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"bind_mode": "outbound"}, "bind_mode"),
        ({"socket_timeout": 5.0, "stop_timeout": 10.0}, "stop_timeout"),
        ({"response_timeout": 0}, "response_timeout must be positive"),
    ],
)
def test_bad_link_configuration_fails_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_default_link_configuration_is_valid():
    assert config().bind_mode == "transceiver"
