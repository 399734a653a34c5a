"""The telecom biller simulator: its SOAP service and its own ledger --
the entry point (:func:`listen_telecom_sim`, the ``billgw telecom-sim``
options) over the parts in :mod:`billgw.billing_adapters.telecom`.

The gateway's demo, the CLI (``billgw telecom-sim``) and the tests talk to it
over real HTTP, exactly as they would to the biller, and then read its ledger
to check what the biller actually recorded -- which is the only thing that
counts when a payment is IN_DOUBT.

Layers, as in Twisted Names, one module each:

- :mod:`~billgw.billing_adapters.telecom.ledger`: the biller's business rules
  (``ledger_*``) on a DB-API cursor, with ``now`` passed in; each runs inside
  one transaction; and the read-only extract (``read_ledger``) for the audit;
- :mod:`~billgw.billing_adapters.telecom.back_office`: :class:`TelecomSimulator`
  runs them on its own single-thread ``adbapi.ConnectionPool`` (SQLite),
  never on the reactor thread, and hands dataclasses back;
- :mod:`~billgw.billing_adapters.telecom.site`: :class:`TelecomResource`, the
  thin twisted.web front end decoding SOAP, dispatching, encoding;
- :mod:`~billgw.billing_adapters.telecom.faults`: misbehaving billers, one
  thing changed each (Jasmin's simulator family): :class:`SlowTelecomResource`,
  :class:`FailingTelecomResource`, :class:`GarbageTelecomResource`,
  :class:`PostThenDropResource`; and for chaos tests
  :class:`FaultyTelecomResource`, a mix of those misbehaviours drawn per
  request from a seeded RNG (:class:`FaultOptions`,
  ``listen_telecom_sim(..., faults=...)``, ``billgw telecom-sim --fault-*``).
  Refusing reversals is a simulator option (``reversal_policy="never"``),
  because it is biller policy, not a fault.

Every name of those modules that callers use is importable from here, as it
was when this was one module.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.web import resource

from billgw.billing_adapters.telecom.back_office import TelecomSimulator
from billgw.billing_adapters.telecom.faults import (
    _DROP,
    FAULT_DROP_AFTER_POST,
    FAULT_DROP_BEFORE,
    FAULT_ERROR,
    FAULT_KINDS,
    FAULT_SLOW,
    FAULTABLE_OPERATIONS,
    HTML_500,
    SETTLING_OPERATIONS,
    FailingTelecomResource,
    FaultOptions,
    FaultyTelecomResource,
    GarbageTelecomResource,
    PostThenDropResource,
    SlowTelecomResource,
)
from billgw.billing_adapters.telecom.ledger import (
    EXTRA_BILL_AMOUNT,
    EXTRA_BILL_DUE_DATE,
    EXTRA_SUBSCRIBER_BASE,
    EXTRA_SUBSCRIBERS_MAX,
    REVERSAL_POLICIES,
    SCHEMA,
    SEED_CURRENCY,
    SEED_SUBSCRIBERS,
    LedgerBill,
    PaymentStatusRecord,
    Posting,
    PostPaymentRequest,
    SubscriberBills,
    TelecomFault,
    extra_subscriber_number,
    ledger_create,
    ledger_get_bills,
    ledger_payment_status,
    ledger_post_payment,
    ledger_postings,
    ledger_reverse_payment,
    ledger_subscriber_bills,
    read_ledger,
    read_ledger_file,
)
from billgw.billing_adapters.telecom.site import OPERATIONS, TelecomResource, build_site, handle_operation

__all__ = [
    "EXTRA_BILL_AMOUNT", "EXTRA_BILL_DUE_DATE", "EXTRA_SUBSCRIBER_BASE", "EXTRA_SUBSCRIBERS_MAX",
    "FAULT_DROP_AFTER_POST", "FAULT_DROP_BEFORE", "FAULT_ERROR", "FAULT_KINDS", "FAULT_SLOW",
    "FAULTABLE_OPERATIONS", "HTML_500", "OPERATIONS", "REVERSAL_POLICIES", "SCHEMA", "SEED_CURRENCY",
    "SEED_SUBSCRIBERS", "SETTLING_OPERATIONS", "FailingTelecomResource", "FaultOptions", "FaultyTelecomResource",
    "GarbageTelecomResource", "LedgerBill", "PaymentStatusRecord", "Posting", "PostPaymentRequest",
    "PostThenDropResource", "SlowTelecomResource", "SubscriberBills", "TelecomFault", "TelecomResource",
    "TelecomSimulator", "add_fault_arguments", "build_site", "extra_subscriber_number",
    "fault_options_from_args", "handle_operation", "ledger_create", "ledger_get_bills",
    "ledger_payment_status", "ledger_post_payment", "ledger_postings", "ledger_reverse_payment",
    "ledger_subscriber_bills", "listen_telecom_sim", "read_ledger", "read_ledger_file", "_DROP",
]


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's chaos options, for ``billgw telecom-sim`` and runners:
    ``--fault-*`` rates, ``--seed`` and ``--extra-subscribers``."""
    group = parser.add_argument_group("fault injection and load seeding (telecom simulator)")
    group.add_argument("--fault-slow-rate", type=float, default=0.0,
                       help="share of PostPayments answered only after --fault-slow-seconds")
    group.add_argument("--fault-slow-seconds", type=float, default=12.0,
                       help="delay of a slow answer; make it longer than the gateway's biller timeout")
    group.add_argument("--fault-error-rate", type=float, default=0.0,
                       help="share of PostPayments answered HTTP 500 without processing")
    group.add_argument("--fault-drop-after-post-rate", type=float, default=0.0,
                       help="share of PostPayments recorded, then the connection dropped unanswered")
    group.add_argument("--fault-drop-before-rate", type=float, default=0.0,
                       help="share of PostPayments whose connection is dropped before processing")
    group.add_argument("--fault-settle-error-rate", type=float, default=0.0,
                       help="share of GetPaymentStatus/ReversePayment answered HTTP 500 (default 0)")
    group.add_argument("--fault-get-bills", action="store_true",
                       help="apply the --fault-* rates to GetBills (inquiries) too")
    group.add_argument("--seed", type=int, default=0, help="seed of the fault RNG (repeatable runs)")
    group.add_argument("--extra-subscribers", type=int, default=0,
                       help=f"seed N subscribers 0790000000+i, each with one bill of "
                            f"{EXTRA_BILL_AMOUNT // 1000:,}.000 JOD (load tests)")


def fault_options_from_args(args: argparse.Namespace) -> FaultOptions | None:
    """The :class:`FaultOptions` the parsed arguments ask for, or None when
    every rate is zero (the well-behaved biller).  Raises ValueError on
    rates out of range."""
    options = FaultOptions(
        seed=args.seed,
        slow_rate=args.fault_slow_rate,
        slow_seconds=args.fault_slow_seconds,
        error_rate=args.fault_error_rate,
        drop_after_post_rate=args.fault_drop_after_post_rate,
        drop_before_rate=args.fault_drop_before_rate,
        settle_error_rate=args.fault_settle_error_rate,
        operations=("PostPayment", "GetBills") if args.fault_get_bills else ("PostPayment",),
    )
    return options if options.active else None


async def _listen(reactor, endpoint_description, db_path, reversal_policy, resource_class, clock, log,
                  extra_subscribers=0):
    simulator = TelecomSimulator(reactor, db_path, reversal_policy=reversal_policy, clock=clock, log=log,
                                 extra_subscribers=extra_subscribers)
    try:
        await simulator.start()
        service = resource_class(simulator)
        simulator.resource = service
        endpoint = serverFromString(reactor, endpoint_description)
        port = await endpoint.listen(build_site(reactor, service))
    except BaseException:
        simulator.close()
        raise
    simulator.log.info("telecom_sim_listening", address=str(port.getHost()), db_path=str(db_path),
                       reversal_policy=reversal_policy, resource=resource_class.__name__
                       if isinstance(resource_class, type) else repr(resource_class))
    return port, simulator


def listen_telecom_sim(
    reactor,
    endpoint_description: str,
    *,
    db_path: str | Path,
    reversal_policy: str = "allowed",
    resource_class: Callable[[TelecomSimulator], resource.Resource] = TelecomResource,
    clock=None,
    log=None,
    faults: FaultOptions | None = None,
    extra_subscribers: int = 0,
) -> Deferred[tuple[Any, TelecomSimulator]]:
    """Start the simulator and serve it on ``endpoint_description``
    (e.g. ``tcp:0:interface=127.0.0.1``).

    ``resource_class`` picks the behaviour; for the ones that take options
    pass a factory, e.g. ``functools.partial(SlowTelecomResource,
    clock=clock, delay=None)``.  The resource is kept on
    ``simulator.resource``.  Fires with ``(listening_port, simulator)``; stop
    with ``port.stopListening()`` then ``simulator.close()``.  Fails at once
    (with the database closed) if the ledger or the port cannot be opened.

    ``faults`` (with the default ``resource_class``) serves a
    :class:`FaultyTelecomResource` whose delays run on ``clock``;
    ``extra_subscribers`` seeds that many load-test subscribers.
    """
    if faults is not None:
        if resource_class is not TelecomResource:
            raise ValueError("faults= replaces resource_class=; pass one or the other")
        resource_class = functools.partial(FaultyTelecomResource, clock=clock if clock is not None else reactor,
                                           faults=faults)
    return Deferred.fromCoroutine(
        _listen(reactor, endpoint_description, db_path, reversal_policy, resource_class, clock, log,
                extra_subscribers)
    )
