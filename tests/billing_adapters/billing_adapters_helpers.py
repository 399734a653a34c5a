"""Helpers shared by the biller adapter tests (a module with a unique name:
the tests folder has no __init__.py, so a plain ``conftest`` import could pick
up another folder's)."""
from __future__ import annotations

from twisted.internet import reactor

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
               xmlns:tb="http://billing.telecom.example/ws/v1">
  <soap:Body><tb:GetBills><tb:SubscriberNumber>&lol9;</tb:SubscriberNumber></tb:GetBills></soap:Body>
</soap:Envelope>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body><x>&xxe;</x></soap:Body>
</soap:Envelope>"""

TELECOM_NS = "http://billing.telecom.example/ws/v1"


def envelope(inner: str) -> bytes:
    return (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        f'xmlns:tb="{TELECOM_NS}"><soap:Body>{inner}</soap:Body></soap:Envelope>'
    ).encode()


LOOPBACK = "tcp:0:interface=127.0.0.1"
WAIT = 10  # seconds: the bound on anything a test waits for over loopback


def within(d, seconds: float = WAIT):
    """Bound a real-time wait so a broken exchange fails the test, not hangs it."""
    return d.addTimeout(seconds, reactor)
