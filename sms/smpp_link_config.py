"""One bind's settings (:class:`SmppLinkConfig`), checked when built, and
the SMPP relative validity period they put on every submit_sm.

The gateway builds one per bind from the ``[sms]`` section
(gateway/service.py); the tests build them directly.
"""
from __future__ import annotations

from dataclasses import dataclass

from billgw.sms.encoding import CONCATENATION_SCHEMES

BIND_MODES = ("transceiver", "transmitter", "receiver")


@dataclass(frozen=True)
class SmppLinkConfig:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    # transceiver: submits and receives delivery receipts on one bind;
    # transmitter: submits only (receipts need a receiver bind beside it);
    # receiver: receipts only.
    bind_mode: str = "transceiver"
    name: str = "default"  # the SMSC connection this bind belongs to (receipts are matched within it)
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    source_addr: str = "BillGW"
    source_addr_ton: int = 5
    source_addr_npi: int = 0
    registered_delivery: int = 1  # 1: a final delivery receipt for every part
    validity_period: float = 0.0  # seconds; 0: the SMSC's default
    country: str = "JO"  # for national MSISDNs
    window: int = 10
    rate: float = 50.0  # submit_sm per second
    throttle_pause: float = 1.0  # first pause of the bind after a temporary refusal
    throttle_pause_cap: float = 30.0
    part_retries: int = 3  # in-place retries of a refused later part
    socket_timeout: float = 5.0  # TCP connect
    response_timeout: float = 10.0  # per PDU
    enquire_link_interval: float = 30.0
    enquire_link_timeout: float = 10.0
    pdu_read_timeout: float = 10.0
    max_pdu_length: int = 4096
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    reconnect_jitter: float = 0.25  # up to +25% of the delay
    stop_timeout: float = 15.0
    concatenation: str = "udh8"  # or "udh16", "sar" (sms/encoding.py)

    def __post_init__(self):
        if self.concatenation not in CONCATENATION_SCHEMES:
            raise ValueError(f"concatenation must be one of {', '.join(CONCATENATION_SCHEMES)}")
        if self.bind_mode not in BIND_MODES:
            raise ValueError(f"bind_mode must be transceiver, transmitter or receiver, not {self.bind_mode!r}")
        if self.stop_timeout <= self.response_timeout:
            raise ValueError(
                f"stop_timeout ({self.stop_timeout}s) must exceed response_timeout ({self.response_timeout}s)"
            )
        for name in ("socket_timeout", "response_timeout", "enquire_link_interval", "enquire_link_timeout",
                     "pdu_read_timeout", "reconnect_initial", "rate", "throttle_pause"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 1 <= self.window <= 1000:
            raise ValueError("window must be 1..1000")
        if self.max_pdu_length < 64:
            raise ValueError("max_pdu_length must be at least 64")


def relative_validity(seconds: float) -> str:
    """SMPP 3.4 relative time format (§7.1.1): ``YYMMDDhhmmss000R``."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    years, days = divmod(days, 365)
    months, days = divmod(days, 30)
    return f"{min(years, 99):02d}{months:02d}{days:02d}{hours:02d}{minutes:02d}{secs:02d}000R"
