"""``[gateway]`` (the ISO 8583 listener, its TLS) and ``[peers.NAME]`` (who may connect).

Both say who talks to the gateway and how: the listener's endpoint,
framing, caps and timers, and per peer its sources, acquirers, terminals,
MAC key and rate limits.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from billgw.iso8583.framing import HEADERS
from billgw.iso8583.mac import PADDING_METHODS, MacKey

from ..keys import mac_key_from_env, mac_key_from_file
from ..peers import DEFAULT_PEERS, PeerTable, make_peer
from ..rate_limit import RateLimit
from .reader import ConfigError, _non_negative, _one_of, _positive, _Section


@dataclass(frozen=True)
class ListenerSettings:
    endpoint: str = "tcp:8583:interface=127.0.0.1"
    framing: str = "binary2"
    max_frame: int = 4096
    idle_timeout: float = 300.0
    require_sign_on: bool = True
    max_in_flight_per_connection: int = 64
    max_in_flight: int = 512
    # Connections open at once over all peers (each peer has its own cap),
    # the listen backlog, and the seconds a begun frame may take to complete.
    max_connections: int = 256
    backlog: int = 512
    frame_timeout: float = 30.0
    # TLS on the listener ([gateway.tls], gateway/tls.py); None: plain TCP.
    tls: "TlsSettings | None" = None
    # Seconds between log lines of the refusal counters (0: never).
    counters_log_interval: float = 60.0


@dataclass(frozen=True)
class TlsSettings:
    """``[gateway.tls]``: PEM files of the listener's certificate and key,
    and of the CAs whose client certificates it accepts (mutual TLS)."""

    certificate: str
    private_key: str
    client_ca: str | None = None
    require_client_certificate: bool = True


def _pem_file(s: _Section, key: str, base: Path, required: bool = True) -> str | None:
    value = s.get(key, str, ... if required else None)
    if value is None:
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(f"{s._key(key)}: no such file {str(path)!r}")
    return str(path)


def _tls(s: _Section, base: Path) -> TlsSettings:
    out = TlsSettings(
        certificate=_pem_file(s, "certificate", base),
        private_key=_pem_file(s, "private_key", base),
        client_ca=_pem_file(s, "client_ca", base, required=False),
        require_client_certificate=s.get("require_client_certificate", bool, True),
    )
    s.done()
    return out


def _listener(s: _Section, base: Path | None = None) -> ListenerSettings:
    base = base or Path.cwd()
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
        max_connections=s.get("max_connections", int, d.max_connections,
                              check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000"),
        backlog=s.get("backlog", int, d.backlog, check=lambda v: None if 1 <= v <= 65535 else "must be 1..65535"),
        frame_timeout=s.get("frame_timeout", float, d.frame_timeout, check=_positive),
        tls=_tls(s.section("tls"), base) if "tls" in s.keys() else None,
        counters_log_interval=s.get("counters_log_interval", float, d.counters_log_interval, check=_non_negative),
    )
    if out.tls is not None and not out.endpoint.lower().startswith(("tcp:", "tcp6:")):
        raise ConfigError(f"{s._key('listen')}: with [gateway.tls] the listener is a tcp: or tcp6: endpoint "
                          "(the gateway adds TLS itself)")
    if out.frame_timeout > out.idle_timeout:
        raise ConfigError(f"{s._key('frame_timeout')}: must not exceed idle_timeout")
    s.done()
    return out


def _in_flight_cap(value: int) -> str | None:
    return None if 1 <= value <= 100_000 else "must be 1..100000"


def _strings(value: list) -> str | None:
    return None if all(isinstance(x, str) for x in value) else "expected a list of strings"


def _peer_mac(t: _Section, config_dir: Path | None) -> MacKey | None:
    """A peer's MAC key: from ``mac_key_env`` or ``mac_key_file`` (never
    the configuration itself, never a default); None: no MAC."""
    env = t.get("mac_key_env", str, None)
    file = t.get("mac_key_file", str, None)
    padding = t.get("mac_padding", int, 1, check=_one_of(*PADDING_METHODS))
    if env and file:
        raise ConfigError(f"{t._key('mac_key_file')}: give mac_key_env or mac_key_file, not both")
    try:
        if env:
            return mac_key_from_env(env, t.environ, padding)
        if file:
            return mac_key_from_file(file, config_dir, padding)
    except ValueError as exc:
        raise ConfigError(f"{t._key('mac_key_env' if env else 'mac_key_file')}: {exc}") from None
    return None


def _peer_rate(t: _Section, rate_key: str = "rate_limit", burst_key: str = "rate_burst") -> RateLimit | None:
    rate = t.get(rate_key, float, None, check=_positive)
    burst = t.get(burst_key, int, None, check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000")
    if rate is None:
        if burst is not None:
            raise ConfigError(f"{t._key(burst_key)}: set {rate_key} too")
        return None
    return RateLimit(rate, burst if burst is not None else max(1, int(rate * 2)))


def _peers(s: _Section, default_sign_on: bool, config_dir: Path | None = None) -> PeerTable:
    """``[peers.NAME]`` tables; none at all: the built-in loopback peer."""
    names = s.keys()
    if not names:
        return PeerTable(dataclasses.replace(p, require_sign_on=default_sign_on) for p in DEFAULT_PEERS.peers)
    peers = []
    for name in names:
        t = s.section(name)
        values = dict(
            sources=t.get("sources", list, [], check=_strings),
            acquirers=t.get("acquirers", list, check=_strings),
            terminals=t.get("terminals", list, check=_strings),
            require_sign_on=t.get("require_sign_on", bool, default_sign_on),
            max_connections=t.get("max_connections", int, 64,
                                  check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000"),
            max_in_flight=t.get("max_in_flight", int, None, check=_in_flight_cap),
            f48_encoding=t.get("f48_encoding", str, "utf-8", check=_one_of("utf-8", "ascii")),
            f48_names=t.get("f48_names", str, "transliterate", check=_one_of("transliterate", "omit")),
            cut_over=t.get("cut_over", bool, True),
            certificate_subject=t.get("certificate_subject", str, None),
            mac=_peer_mac(t, config_dir),
            rate_limit=_peer_rate(t),
            advice_reversal_rate=_peer_rate(t, "advice_reversal_rate_limit", "advice_reversal_burst"),
        )
        if values["f48_encoding"] != "ascii" and "f48_names" in t.data:
            raise ConfigError(f"{t.path}.f48_names: only with f48_encoding = \"ascii\"")
        try:
            peer = make_peer(name, **values)
        except ValueError as exc:
            raise ConfigError(f"{t.path}.{exc}") from None
        t.done()
        peers.append(peer)
    return PeerTable(peers)
