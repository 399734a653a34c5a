"""The composition of a running gateway: a tree of services.

``GatewayService`` (a MultiService) owns, in start order: the journal's
database pool, the biller adapters, the SMPP link and the outbox sender, and
last the ISO 8583 listener -- so nothing accepts a request before what it
needs is running.  A listener that cannot bind fails ``start()`` at once.
"""
from __future__ import annotations

import os
import socket

import structlog
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString

from billgw.billing_adapters.registry import build_adapter
from billgw.sms.sender import OutboxSender
from billgw.sms.smpp_link import SmppLink, SmppLinkConfig

from .config import ConfigError, Settings
from .biller_worker import BillerWorker
from .db import DatabasePool, make_engine
from .journal import Journal
from .processor import BillerRoute, TransactionProcessor
from .protocol import Iso8583ServerFactory
from .receipts import ReceiptComposer


class ListenerService(Service):
    """Listens on an endpoint string; ``port`` is set once listening."""

    name = "iso8583-listener"

    def __init__(self, reactor, endpoint: str, factory):
        self._endpoint = serverFromString(reactor, endpoint)
        self.description = endpoint
        self.factory = factory
        self.port = None

    def listen(self) -> defer.Deferred:
        d = self._endpoint.listen(self.factory)

        def listening(port):
            self.port = port
            return port

        return d.addCallback(listening)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()


class _AdapterCloser(Service):
    """Closes the adapters' connection pools when the gateway stops."""

    def __init__(self, adapters):
        self._adapters = adapters

    def stopService(self):
        super().stopService()
        closing = [a.close() for a in self._adapters if hasattr(a, "close")]
        return defer.DeferredList([d for d in closing if isinstance(d, defer.Deferred)])


class GatewayService(MultiService):
    def __init__(self, settings: Settings, reactor, *, log=None):
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.log = log or structlog.get_logger("billgw")
        self.engine = make_engine(settings.database.url, settings.database.pool_size)
        self.pool = DatabasePool(self.engine, reactor, settings.database.pool_size)
        self.pool.setServiceParent(self)
        self.journal = Journal(self.pool)

        routes = {}
        for code, biller in settings.billers.items():
            try:
                adapter = build_adapter(biller.adapter, reactor, dict(biller.adapter_settings),
                                        self.log.bind(biller=code))
            except ValueError as exc:
                raise ConfigError(f"billers.{code}: {exc}") from None
            routes[code] = BillerRoute(biller, adapter)
        _AdapterCloser([r.adapter for r in routes.values()]).setServiceParent(self)

        owner = f"{socket.gethostname()}:{os.getpid()}"
        self.sender = None
        self.link = None
        wake = lambda: None  # noqa: E731
        sms = settings.sms
        if sms.enabled:
            self.link = SmppLink(reactor, SmppLinkConfig(
                host=sms.host, port=sms.port, system_id=sms.system_id, password=sms.password,
                system_type=sms.system_type, bind_mode=sms.bind, source_addr=sms.source_addr,
                source_addr_ton=sms.source_addr_ton, source_addr_npi=sms.source_addr_npi,
                enquire_link_interval=sms.enquire_link_interval,
            ), logger=self.log.bind(component="smpp"))
            self.link.setServiceParent(self)
            self.sender = OutboxSender(
                run_in_db=self.pool.run, link=self.link, clock=reactor,
                owner=owner,
                poll_interval=sms.poll_interval, batch_size=sms.batch_size,
                lease_seconds=sms.lease_seconds, max_attempts=sms.max_attempts,
                retry_base=sms.retry_base, retry_cap=sms.retry_cap,
                submit_timeout=sms.submit_timeout, logger=self.log.bind(component="sms-sender"),
            )
            self.sender.setServiceParent(self)
            wake = self.sender.wake

        receipts = ReceiptComposer(sms.receipt_templates, sms.reversal_templates)
        recovery = settings.recovery
        self.processor = TransactionProcessor(
            journal=self.journal, billers=routes, codes=settings.response_codes, clock=reactor,
            receipts=receipts, on_sms_queued=wake, log=self.log.bind(component="processor"),
            status_delay=recovery.status_delay, expire_after=recovery.expire_after,
        )
        self.worker = BillerWorker(
            run_in_db=self.pool.run, processor=self.processor, clock=reactor, owner=owner,
            poll_interval=recovery.poll_interval, batch_size=recovery.batch_size,
            lease_seconds=recovery.lease_seconds, retry_base=recovery.retry_base,
            retry_cap=recovery.retry_cap, stale_after=recovery.stale_after, on_sms_queued=wake,
            log=self.log.bind(component="biller-worker"),
        )
        self.worker.setServiceParent(self)
        self.processor.on_biller_work = self.worker.wake
        listener = settings.listener
        self.factory = Iso8583ServerFactory(
            processor=self.processor, codes=settings.response_codes, clock=reactor,
            framing=listener.framing, max_frame=listener.max_frame,
            idle_timeout=listener.idle_timeout, require_sign_on=listener.require_sign_on,
            max_in_flight_per_connection=listener.max_in_flight_per_connection,
            max_in_flight=listener.max_in_flight,
            log=self.log.bind(component="iso8583"),
        )
        self.listener = ListenerService(reactor, listener.endpoint, self.factory)
        self.listener.setServiceParent(self)

    def stopService(self):
        """Stop children one at a time, last started first: the listener
        stops taking requests before the workers drain, and the database
        pool stops only when nothing can still be waiting on it."""
        Service.stopService(self)
        d = defer.succeed(None)
        for child in reversed(list(self)):
            d.addBoth(lambda _, c=child: defer.maybeDeferred(c.stopService))
        d.addBoth(lambda _: None)
        return d

    def start(self) -> defer.Deferred:
        """Start every child, then listen; fires with the listening port."""
        self.startService()
        d = self.listener.listen()

        def listening(port):
            host = port.getHost()
            self.log.info("gateway listening", host=host.host, port=host.port,
                          framing=self.settings.listener.framing, config=self.settings.source)
            return port

        return d.addCallback(listening)

    def stop(self) -> defer.Deferred:
        d = defer.maybeDeferred(self.stopService)
        d.addBoth(lambda r: (self.engine.dispose(), r)[1])
        return d
