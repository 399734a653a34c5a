"""Who may connect, and for which acquirers and terminals (docs/security.md).

A *peer* is a bank switch or an ATM network the gateway has an agreement
with.  It is known by the addresses it connects from and/or, over mutual
TLS, by the subject of its client certificate; it may speak only for
its own acquirers (F32) and terminals (F41).  The listener identifies the
peer of each connection when it is accepted -- a connection from no
configured peer is refused then, before a byte is read; with client
certificates the peer is settled once the TLS handshake is done -- and
checks every financial message against its peer before the processor sees
it.  A peer may also MAC its messages (iso8583/mac.py) and have its
terminals' 0200s rate-limited (gateway/rate_limit.py).  Because
the journal's keys begin with the acquirer id, a peer that may use only its
own acquirers can find, advise or reverse only its own acquirers' payments.

Pure: no Twisted, no I/O.  The configuration builds a :class:`PeerTable`
(gateway/config/listener.py, ``[peers.NAME]``); with no ``[peers]`` at all the
built-in :data:`DEFAULT_PEERS` apply, the same single loopback peer as the
packaged configuration, so no configuration lets every acquirer in.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable

from cryptography import x509

from billgw.iso8583.bill_data import F48_ENCODINGS, F48_NAMES
from billgw.iso8583.mac import MacKey
from billgw.iso8583.messages import normalise_institution_id

from .rate_limit import RateLimit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Peer:
    """One peer: where it connects from, what it may speak for, its caps."""

    name: str
    sources: tuple[IPNetwork, ...]
    acquirers: frozenset[str]  # normalised (leading zeros stripped)
    terminals: tuple[re.Pattern, ...]  # full match on F41 as sent
    require_sign_on: bool = True
    max_connections: int = 64
    max_in_flight: int | None = None  # None: only the connection and gateway caps
    # F48's text as this peer's decoder takes it: "utf-8", or "ascii" with
    # names transliterated ("transliterate") or left out ("omit").
    f48_encoding: str = "utf-8"
    f48_names: str = "transliterate"
    # May close the gateway's business day (0800, F70 = 201): the switch
    # that settles with the billers; another peer's 201 is refused.
    cut_over: bool = True
    # RFC 4514 subject its TLS client certificate must carry (normalised by
    # normalise_subject); None: any certificate, or none, will do.
    certificate_subject: str | None = None
    mac: MacKey | None = None  # None: its messages carry no MAC
    rate_limit: RateLimit | None = None  # per terminal, on 0200s
    # Over the whole peer, on advices and reversals: each may leave a row
    # for a person (an EXCEPTION, a reversal of an unknown original), so
    # one peer must not be able to make them without bound.
    advice_reversal_rate: RateLimit | None = None

    def connects_from(self, host: str) -> bool:
        """Whether a connection from ``host`` may be this peer's (no
        sources: only the certificate says, so from anywhere)."""
        if not self.sources:
            return True
        address = _address(host)
        return address is not None and any(address in network for network in self.sources)

    def presents(self, subject: str | None) -> bool:
        return self.certificate_subject is None or self.certificate_subject == subject

    def may_use_acquirer(self, acquirer_id: str | None) -> bool:
        return acquirer_id is not None and normalise_institution_id(acquirer_id) in self.acquirers

    def may_use_terminal(self, terminal_id: str | None) -> bool:
        return terminal_id is not None and any(p.fullmatch(terminal_id) for p in self.terminals)

    def refuses(self, acquirer_ids: Iterable[str | None], terminal_id: str | None) -> str | None:
        """Why this peer may not send a message for these acquirers and this
        terminal (for the log), or None when it may."""
        for acquirer_id in acquirer_ids:
            if not self.may_use_acquirer(acquirer_id):
                return "acquirer"
        if not self.may_use_terminal(terminal_id):
            return "terminal"
        return None


def _address(host: str):
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


class PeerTable:
    """The configured peers, looked up by source address in file order."""

    def __init__(self, peers: Iterable[Peer]):
        self.peers = tuple(peers)
        if not self.peers:
            raise ValueError("at least one peer is needed")

    @property
    def by_certificate(self) -> bool:
        """Whether some peer is known by its certificate: then a connection's
        peer is settled only after the TLS handshake."""
        return any(p.certificate_subject is not None for p in self.peers)

    def candidates(self, host: str) -> tuple[Peer, ...]:
        """The peers a connection from ``host`` may turn out to be."""
        return tuple(p for p in self.peers if p.connects_from(host))

    def identify(self, host: str, subject: str | None = None) -> Peer | None:
        """The first peer whose ranges hold ``host`` and whose certificate
        subject (if it names one) is ``subject`` (None: nobody's)."""
        for peer in self.peers:
            if peer.connects_from(host) and peer.presents(subject):
                return peer
        return None


def subject_of(name: x509.Name) -> str:
    """A certificate subject as peers compare it: its attributes in RFC 4514
    form, sorted, so the order a tool prints them in does not matter."""
    return ",".join(sorted(attribute.rfc4514_string() for attribute in name))


def normalise_subject(text: str) -> str:
    """An RFC 4514 distinguished name (``CN=switch-a,O=Bank A,C=JO``; spaces
    around commas and equal signs allowed, as ``openssl x509 -subject``
    prints them) in the form :func:`subject_of` gives; ValueError if it is
    not a name."""
    parts = []
    for part in re.split(r"(?<!\\),", text):
        key, eq, value = part.partition("=")
        parts.append(f"{key.strip()}{eq}{value.strip()}")
    try:
        name = x509.Name.from_rfc4514_string(",".join(parts))
    except ValueError:
        raise ValueError(f"certificate_subject: {text!r} is not an RFC 4514 name (e.g. \"CN=switch-a,O=Bank A\")") \
            from None
    if not len(name):
        raise ValueError("certificate_subject: empty name")
    return subject_of(name)


def make_peer(name: str, *, sources: Iterable[str], acquirers: Iterable[str], terminals: Iterable[str],
              require_sign_on: bool = True, max_connections: int = 64,
              max_in_flight: int | None = None, f48_encoding: str = "utf-8",
              f48_names: str = "transliterate", cut_over: bool = True,
              certificate_subject: str | None = None, mac: MacKey | None = None,
              rate_limit: RateLimit | None = None, advice_reversal_rate: RateLimit | None = None) -> Peer:
    """A peer from configuration values; ValueError names what is wrong."""
    networks = []
    for source in sources:
        try:
            networks.append(ipaddress.ip_network(source, strict=False))
        except ValueError:
            raise ValueError(f"sources: {source!r} is not an address or CIDR range") from None
    patterns = []
    for terminal in terminals:
        try:
            patterns.append(re.compile(terminal))
        except re.error as exc:
            raise ValueError(f"terminals: {terminal!r} is not a valid regular expression ({exc})") from None
    ids = []
    for acquirer in acquirers:
        if not (acquirer.isascii() and acquirer.isdigit() and 1 <= len(acquirer) <= 11):
            raise ValueError(f"acquirers: {acquirer!r} is not an institution id (1 to 11 digits)")
        ids.append(normalise_institution_id(acquirer))
    if f48_encoding not in F48_ENCODINGS:
        raise ValueError(f"f48_encoding: must be one of {', '.join(F48_ENCODINGS)}")
    if f48_names not in F48_NAMES:
        raise ValueError(f"f48_names: must be one of {', '.join(F48_NAMES)}")
    subject = normalise_subject(certificate_subject) if certificate_subject else None
    if not networks and subject is None:
        raise ValueError("sources: a peer needs at least one address range or a certificate_subject")
    if not ids:
        raise ValueError("acquirers: a peer needs at least one acquirer id")
    if not patterns:
        raise ValueError("terminals: a peer needs at least one terminal pattern")
    return Peer(name, tuple(networks), frozenset(ids), tuple(patterns), require_sign_on=require_sign_on,
                max_connections=max_connections, max_in_flight=max_in_flight, f48_encoding=f48_encoding,
                f48_names=f48_names, cut_over=cut_over, certificate_subject=subject,
                mac=mac, rate_limit=rate_limit, advice_reversal_rate=advice_reversal_rate)


# The demo's and atm-sim's switch: loopback, acquirer 123456, ATM00001...
DEFAULT_PEERS = PeerTable([make_peer("local", sources=["127.0.0.0/8", "::1/128"], acquirers=["123456"],
                                     terminals=[r"ATM[0-9]{5}"])])
