"""An SMSC simulator: a real SMPP 3.4 server on Twisted, for tests and the demo.

The family's front door.  The well-behaved server -- binds, submit_sm
accepted and recorded, concatenated parts joined, delivery receipts when
asked for -- is :mod:`billgw.sms.smsc_happy` (``SmscFactory``, alias
``HappySMSC``); the misbehaving variants, one subclass per misbehaviour
after Jasmin's simulator family, are :mod:`billgw.sms.smsc_misbehaving`;
every name stays importable from here.  Unlike Jasmin, nothing touches the
global reactor or a fixed port: the caller passes the reactor and an
endpoint string (``tcp:0:interface=...``) to :func:`listen_smsc`.
"""
from __future__ import annotations

import os

from twisted.internet import defer, endpoints

from billgw.sms.smsc_happy import HappySMSC, ReceivedMessage, SmscFactory, SmscProtocol, decode_text
from billgw.sms.smsc_misbehaving import (
    DropMidWindowSMSC,
    DropOnSubmitSMSC,
    ErrorOnSubmitSMSC,
    NoResponseOnSubmitSMSC,
    RefuseBindSMSC,
    SlowSMSC,
    ThrottleEveryNthSMSC,
)

__all__ = [
    "DropMidWindowSMSC", "DropOnSubmitSMSC", "ErrorOnSubmitSMSC", "HappySMSC", "NoResponseOnSubmitSMSC",
    "ReceivedMessage", "RefuseBindSMSC", "SlowSMSC", "SmscFactory", "SmscProtocol", "ThrottleEveryNthSMSC",
    "decode_text", "listen_smsc",
]


def listen_smsc(
    reactor,
    endpoint_description: str,
    *,
    system_id: str,
    password: str,
    record_path: str | None = None,
    factory_class: type[SmscFactory] = SmscFactory,
    **factory_kwargs,
) -> defer.Deferred:
    """Listen on ``endpoint_description``; fires with ``(listening_port, factory)``.

    Used by ``billgw smsc-sim`` and the demo; tests pass ``tcp:0:interface=127.0.0.1``
    and read the port from ``listening_port.getHost().port``.
    """
    if record_path:
        # One mkdir before listening: blocking, but tiny and at start only.
        os.makedirs(os.path.dirname(os.path.abspath(record_path)), exist_ok=True)
    factory = factory_class(
        reactor, system_id=system_id, password=password, record_path=record_path, **factory_kwargs
    )
    d = endpoints.serverFromString(reactor, endpoint_description).listen(factory)
    d.addCallback(lambda port: (port, factory))
    return d
