"""The composition of a running gateway: a tree of services.

``GatewayService`` (a MultiService) owns, in start order: the journal's
database pool, the biller adapters (each behind its maintenance windows,
bulkhead and circuit breaker: billing_adapters/guarded.py), the SMPP link and the outbox sender, and
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

from billgw.billing_adapters.guarded import GuardedAdapter
from billgw.billing_adapters.registry import AdapterConfigError, BuildContext, build_adapter
from billgw.sms.sender import OutboxSender
from billgw.sms.smpp_link import SmppLink, SmppLinkConfig

from .config import ConfigError, Settings, require_sms_password
from .biller_worker import BillerWorker
from .db import DatabasePool, make_engine
from .exposure import exposure_warning, listen_endpoint, secure_sqlite_file
from .journal import Journal
from .processor import BillerRoute, TransactionProcessor
from .protocol import Iso8583ServerFactory
from .receipts import ReceiptComposer

# Journal look-ups (a payment's inquiry reference; later the console and
# metrics) run on threads of their own, never behind the writer.
READ_THREADS = 2


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


class BillerAdapters(Service):
    """The billers' adapters as one service: started before anything can
    call them (a persistent link opens, a pool fills), stopped after the
    listener and the workers (reverse start order), so no call is cut off
    by its own adapter closing.  ``health()`` reports each biller."""

    name = "biller-adapters"

    def __init__(self, adapters: dict, log):
        self.adapters = adapters
        self._log = log

    def startService(self):
        super().startService()
        starting = []
        for code, adapter in self.adapters.items():
            d = defer.maybeDeferred(adapter.start)
            d.addErrback(lambda f, c=code: self._log.error("biller adapter failed to start", biller=c,
                                                           exc_info=(f.type, f.value, f.tb)))
            starting.append(d)
        return defer.DeferredList(starting)

    def stopService(self):
        super().stopService()
        stopping = [defer.maybeDeferred(a.stop) for a in self.adapters.values()]
        return defer.DeferredList(stopping)

    def health(self) -> dict:
        return {code: adapter.health() for code, adapter in self.adapters.items()}


class GatewayService(MultiService):
    def __init__(self, settings: Settings, reactor, *, log=None):
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.log = log or structlog.get_logger("billgw")
        # The journal holds masked PANs and payments: owner-only, before
        # SQLite creates it (or its WAL) with the process's umask.
        loosened = secure_sqlite_file(settings.database.url)
        if loosened is not None:
            self.log.warning("journal file was readable by others: mode changed to owner-only",
                             path=loosened[0], old_mode=oct(loosened[1]))
        db = settings.database
        sqlite = db.url.startswith("sqlite")
        # Readers have threads (and connections) of their own: on SQLite a
        # read-only engine of their own, on PostgreSQL room in the pool.
        self.engine = make_engine(db.url, db.pool_size if sqlite else db.pool_size + READ_THREADS)
        self.read_engine = make_engine(db.url, READ_THREADS, read_only=True) if sqlite else self.engine
        self.pool = DatabasePool(self.engine, reactor, db.pool_size, read_engine=self.read_engine,
                                 read_threads=READ_THREADS, max_queued=db.max_queued)
        self.pool.setServiceParent(self)
        self.journal = Journal(self.pool)

        routes = {}
        for code, biller in settings.billers.items():
            try:
                adapter = build_adapter(biller.adapter, reactor, dict(biller.adapter_settings),
                                        self.log.bind(biller=code),
                                        context=BuildContext(biller_code=code, timeout=biller.timeout))
            except AdapterConfigError as exc:
                raise ConfigError(f"billers.{code}.{exc.key}: {exc.problem}") from None
            guarded = GuardedAdapter(adapter, clock=reactor, max_concurrent=biller.max_concurrent,
                                     breaker=biller.breaker, maintenance=biller.maintenance,
                                     log=self.log.bind(biller=code), name=code)
            routes[code] = BillerRoute(biller, guarded)
        self.billers = BillerAdapters({code: r.adapter for code, r in routes.items()},
                                      self.log.bind(component="billers"))
        self.billers.setServiceParent(self)

        owner = f"{socket.gethostname()}:{os.getpid()}"
        self.sender = None
        self.link = None
        wake = lambda: None  # noqa: E731
        sms = settings.sms
        if sms.enabled:
            require_sms_password(sms)
            self.link = SmppLink(reactor, SmppLinkConfig(
                host=sms.host, port=sms.port, system_id=sms.system_id, password=sms.password,
                system_type=sms.system_type, bind_mode=sms.bind, source_addr=sms.source_addr,
                source_addr_ton=sms.source_addr_ton, source_addr_npi=sms.source_addr_npi,
                country=sms.country, window=sms.window, rate=sms.rate, throttle_pause=sms.throttle_pause,
                throttle_pause_cap=sms.throttle_pause_cap, part_retries=sms.part_retries,
                validity_period=sms.validity_period, response_timeout=sms.submit_timeout,
                enquire_link_interval=sms.enquire_link_interval, enquire_link_timeout=sms.enquire_link_timeout,
                pdu_read_timeout=sms.pdu_read_timeout, max_pdu_length=sms.max_pdu_length,
                reconnect_initial=sms.reconnect_initial, reconnect_max=sms.reconnect_max,
                stop_timeout=sms.submit_timeout + 5.0,
            ), status_table=sms.status_table, logger=self.log.bind(component="smpp"))
            self.link.setServiceParent(self)
            self.sender = OutboxSender(
                run_in_db=self.pool.run, link=self.link, clock=reactor,
                owner=owner,
                poll_interval=sms.poll_interval, batch_size=sms.batch_size,
                lease_seconds=sms.lease_seconds, max_attempts=sms.max_attempts,
                retry_base=sms.retry_base, retry_cap=sms.retry_cap,
                logger=self.log.bind(component="sms-sender"),
            )
            self.sender.setServiceParent(self)
            wake = self.sender.wake

        receipts = ReceiptComposer(sms.receipt_templates, sms.reversal_templates)
        recovery = settings.recovery
        self.processor = TransactionProcessor(
            journal=self.journal, billers=routes, codes=settings.response_codes, clock=reactor,
            receipts=receipts, on_sms_queued=wake, log=self.log.bind(component="processor"),
            status_delay=recovery.status_delay, expire_after=recovery.expire_after,
            accepted_poll_delay=recovery.accepted_poll_delay, accepted_expire_after=recovery.accepted_expire_after,
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
            peers=settings.peers, max_connections=listener.max_connections,
            frame_timeout=listener.frame_timeout,
        )
        self.listener = ListenerService(reactor, listen_endpoint(listener.endpoint, listener.backlog),
                                        self.factory)
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
                          framing=self.settings.listener.framing, config=self.settings.source,
                          peers=[p.name for p in self.settings.peers.peers])
            exposed = exposure_warning(self.settings.listener.endpoint)
            if exposed:
                self.log.warning(exposed, endpoint=self.settings.listener.endpoint)
            return port

        return d.addCallback(listening)

    def stop(self) -> defer.Deferred:
        d = defer.maybeDeferred(self.stopService)
        d.addBoth(lambda r: (self.engine.dispose(), self.read_engine.dispose(), r)[2])
        return d
