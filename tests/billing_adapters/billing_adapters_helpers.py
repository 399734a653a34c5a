"""Helpers shared by the biller adapter tests (a module with a unique name:
the tests folder has no __init__.py, so a plain ``conftest`` import could pick
up another folder's)."""
from __future__ import annotations

from twisted.internet import reactor

LOOPBACK = "tcp:0:interface=127.0.0.1"
WAIT = 10  # seconds: the bound on anything a test waits for over loopback


def within(d, seconds: float = WAIT):
    """Bound a real-time wait so a broken exchange fails the test, not hangs it."""
    return d.addTimeout(seconds, reactor)
