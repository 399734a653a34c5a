"""Several SMSCs, several binds each: which bind a message goes out on.

An operator often has an account per mobile network (or a main and a
fallback aggregator), and an account may grant several binds, each with its
own window.  :class:`SmppRouter` looks like one link to the sender (``bound``,
``window``, ``submit``) and holds the :class:`~billgw.sms.smpp_link.SmppLink`
of every bind as child services:

* **Routing by destination prefix.** The MSISDN is normalised to E.164
  first (``country``), then the SMSC whose prefix matches it longest takes
  it; an SMSC without prefixes is the default route.  No route: the message
  fails alone (``SmppInvalidMessage``, the row is ABANDONED with the reason).
* **Within an SMSC,** the transmitting bind (transmitter or transceiver)
  that is bound and has the most free window slots.  None bound:
  ``SmppLinkDown`` (nothing written; the row is handed back, no attempt
  spent).  Receiver binds only receive.
* **Receipts** from every bind go to ``on_deliver(pdu, smsc_name)``, the
  name being the SMSC's, so a receipt is matched within its SMSC.
"""
from __future__ import annotations

from dataclasses import dataclass

from twisted.application.service import MultiService
from twisted.internet import defer

from billgw.sms.msisdn import InvalidMsisdn, normalise_msisdn
from billgw.sms.smpp_link import LinkState, SmppInvalidMessage, SmppLink, SmppLinkDown


@dataclass(frozen=True)
class SmscRoute:
    name: str
    prefixes: tuple[str, ...]  # E.164 digits, no "+"; () = the default route
    links: tuple[SmppLink, ...]


def choose_route(routes, address: str):
    """The route whose prefix matches ``address`` longest, else the default
    route (no prefixes), else None.  Pure."""
    best, best_length, default = None, -1, None
    for route in routes:
        if not route.prefixes and default is None:
            default = route
        for prefix in route.prefixes:
            if address.startswith(prefix) and len(prefix) > best_length:
                best, best_length = route, len(prefix)
    return best or default


class SmppRouter(MultiService):
    name = "smpp-router"

    def __init__(self, routes: list[SmscRoute], *, country: str):
        super().__init__()
        if not routes:
            raise ValueError("at least one SMSC route is needed")
        self.routes = list(routes)
        self.country = country
        self._on_deliver = None
        for route in self.routes:
            for link in route.links:
                link.setServiceParent(self)

    @property
    def links(self) -> list[SmppLink]:
        return [link for route in self.routes for link in route.links]

    @property
    def _transmitters(self) -> list[SmppLink]:
        return [link for link in self.links if link.transmits]

    @property
    def bound(self) -> bool:
        """True while some transmitting bind is bound: the sender claims rows."""
        return any(link.bound for link in self._transmitters)

    @property
    def window(self) -> int:
        """Messages the sender may hand over at once: every bound transmitting
        bind's window (all of them while none is bound, so the count is stable)."""
        bound = [link for link in self._transmitters if link.bound]
        return sum(link.window for link in (bound or self._transmitters)) or 1

    @property
    def on_deliver(self):
        return self._on_deliver

    @on_deliver.setter
    def on_deliver(self, handler) -> None:
        self._on_deliver = handler
        for link in self.links:
            link.on_deliver = handler

    def health(self) -> dict:
        return {route.name: [dict(link.health(), bind=link.config.bind_mode) for link in route.links]
                for route in self.routes}

    def wait_for_state(self, *states: LinkState) -> defer.Deferred:
        """Fires once every bind is in one of ``states``.  The caller applies a timeout."""
        d = defer.gatherResults([link.wait_for_state(*states) for link in self.links], consumeErrors=True)
        return d.addCallback(lambda _: None)

    def submit(self, destination: str, text: str) -> defer.Deferred:
        country = self.country
        try:
            address = normalise_msisdn(destination, country).address
        except InvalidMsisdn as e:
            return defer.fail(SmppInvalidMessage(str(e)))
        route = choose_route(self.routes, address)
        if route is None:
            return defer.fail(SmppInvalidMessage("no SMSC route for this destination's prefix "
                                                 "(and no default SMSC without prefixes)"))
        ready = [link for link in route.links if link.transmits and link.bound]
        if not ready:
            return defer.fail(SmppLinkDown(f"SMSC {route.name}: no transmitting bind is bound"))
        link = max(ready, key=lambda each: each.free)
        return link.submit(destination, text)
