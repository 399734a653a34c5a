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
from twisted.internet.task import LoopingCall

from billgw.billing_adapters.guarded import GuardedAdapter
from billgw.billing_adapters.registry import AdapterConfigError, BuildContext, build_adapter
from billgw.sms.dlr_recorder import DeliveryRecorder
from billgw.sms.sender import OutboxSender
from billgw.sms.health import LinkHealthRecorder, link_name
from billgw.sms.smpp_link import SmppLink, SmppLinkConfig
from billgw.sms.smpp_router import SmppRouter, SmscRoute

from .config import ConfigError, Settings, require_sms_password, smsc_connections
from .biller_worker import BillerWorker
from .db import DatabasePool, make_engine
from .exposure import exposure_warning, listen_endpoint, secure_sqlite_file
from .journal import Journal
from .keys import PAN_HMAC_ENV, pan_hasher_from_env
from .processor import BillerRoute, TransactionProcessor
from .protocol import Iso8583ServerFactory
from .receipts import ReceiptComposer
from .tls import TLSServerEndpoint, server_options

# Journal look-ups (a payment's inquiry reference; later the console and
# metrics) run on threads of their own, never behind the writer.
READ_THREADS = 2


class ListenerService(Service):
    """Listens on an endpoint string (with TLS around it when ``tls`` holds
    the options); ``port`` is set once listening.  Every
    ``counters_interval`` seconds it logs the factory's refusal counters
    when they changed (docs/security.md, "Reading the counters")."""

    name = "iso8583-listener"

    def __init__(self, reactor, endpoint: str, factory, *, tls=None, counters_interval: float = 0.0,
                 log=None):
        self._endpoint = serverFromString(reactor, endpoint)
        if tls is not None:
            self._endpoint = TLSServerEndpoint(self._endpoint, tls)
        self.description = endpoint
        self.factory = factory
        self.port = None
        self._log = log or structlog.get_logger("billgw.iso8583")
        self._counters_interval = counters_interval
        self._counters_loop = None
        self._counters_logged = None
        self._clock = reactor

    def startService(self):
        super().startService()
        if self._counters_interval > 0:
            self._counters_loop = LoopingCall(self.log_counters)
            self._counters_loop.clock = self._clock
            self._counters_loop.start(self._counters_interval, now=False)

    def log_counters(self) -> None:
        """One log line with the refusal counters, when they changed."""
        status = self.factory.status()
        if status["refusals"] != self._counters_logged:
            self._counters_logged = status["refusals"]
            self._log.info("refusal counters", **status)

    def health(self) -> dict:
        return self.factory.status()

    def listen(self) -> defer.Deferred:
        d = self._endpoint.listen(self.factory)

        def listening(port):
            self.port = port
            return port

        return d.addCallback(listening)

    def stopService(self):
        super().stopService()
        if self._counters_loop is not None and self._counters_loop.running:
            self._counters_loop.stop()
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
        self._started = defer.DeferredList(starting)
        return self._started

    def when_started(self) -> defer.Deferred:
        """Fires once every adapter's start() has (a persistent link signed
        on, or its adapter's own bounded wait ran out), so the listener
        opens only when the billers can be called."""
        started = getattr(self, "_started", None)
        if started is None:
            return defer.succeed(None)
        d = defer.Deferred()
        started.addBoth(lambda result: (d.callback(None), result)[1])
        return d

    def stopService(self):
        super().stopService()
        stopping = [defer.maybeDeferred(a.stop) for a in self.adapters.values()]
        return defer.DeferredList(stopping)

    def health(self) -> dict:
        return {code: adapter.health() for code, adapter in self.adapters.items()}


class GatewayService(MultiService):
    def __init__(self, settings: Settings, reactor, *, log=None, environ=None):
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
        self.delivery_receipts = None
        if sms.enabled:
            require_sms_password(sms)
            # Started before the binds and stopped after them: no receipt
            # arrives with nobody to record it.
            self.delivery_receipts = DeliveryRecorder(
                run_in_db=self.pool.run, clock=reactor, hold_seconds=sms.dlr_hold_seconds,
                max_held=sms.dlr_max_held, logger=self.log.bind(component="sms-receipts"))
            self.delivery_receipts.setServiceParent(self)
            self.link = SmppRouter([self._smsc_route(reactor, sms, c) for c in smsc_connections(sms)],
                                   country=sms.country)
            self.link.on_deliver = self.delivery_receipts.deliver_sm
            self.link.setServiceParent(self)
            self.sender = OutboxSender(
                run_in_db=self.pool.run, link=self.link, clock=reactor,
                owner=owner,
                poll_interval=sms.poll_interval, batch_size=sms.batch_size,
                lease_seconds=sms.lease_seconds, max_attempts=sms.max_attempts,
                retry_base=sms.retry_base, retry_cap=sms.retry_cap,
                expire_after=sms.expire_after or None,
                on_parts_recorded=self.delivery_receipts.parts_recorded,
                logger=self.log.bind(component="sms-sender"),
            )
            self.sender.setServiceParent(self)
            # The bind's state where billgw audit (another process) reads it.
            # One row per bind (several SMSCs, several binds each).
            self.link_health = []
            for route in self.link.routes:
                for number, bind in enumerate(route.links, start=1):
                    cfg = bind.config
                    name = link_name(cfg.system_id, cfg.host, cfg.port)
                    if len(route.links) > 1:
                        name = f"{name}/{number}"
                    recorder = LinkHealthRecorder(
                        run_in_db=self.pool.run, link=bind, clock=reactor, owner=owner, name=name,
                        logger=self.log.bind(component="sms-health"))
                    recorder.setServiceParent(self)
                    self.link_health.append(recorder)
            wake = self.sender.wake

        receipts = ReceiptComposer(sms.receipt_templates, sms.reversal_templates, timezone=settings.business_day.timezone)
        recovery = settings.recovery
        self.processor = TransactionProcessor(
            journal=self.journal, billers=routes, codes=settings.response_codes, clock=reactor,
            receipts=receipts, on_sms_queued=wake, log=self.log.bind(component="processor"),
            status_delay=recovery.status_delay, expire_after=recovery.expire_after,
            calendar=settings.business_day,
            sms_country=sms.country, invalid_msisdn=sms.invalid_msisdn,
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
        try:
            pan_hasher = pan_hasher_from_env(os.environ if environ is None else environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if pan_hasher is None:
            self.log.warning("no PAN hash is kept: look-ups by card (billgw journal find --pan) will find "
                             f"nothing new; set {PAN_HMAC_ENV} (docs/security.md)")
        tls = server_options(listener.tls) if listener.tls is not None else None
        self.factory = Iso8583ServerFactory(
            processor=self.processor, codes=settings.response_codes, clock=reactor,
            framing=listener.framing, max_frame=listener.max_frame,
            idle_timeout=listener.idle_timeout, require_sign_on=listener.require_sign_on,
            max_in_flight_per_connection=listener.max_in_flight_per_connection,
            max_in_flight=listener.max_in_flight,
            log=self.log.bind(component="iso8583"),
            peers=settings.peers, max_connections=listener.max_connections,
            frame_timeout=listener.frame_timeout,
            tls_client_certificates=tls is not None and settings.peers.by_certificate,
            pan_hasher=pan_hasher,
        )
        self.listener = ListenerService(reactor, listen_endpoint(listener.endpoint, listener.backlog),
                                        self.factory, tls=tls, counters_interval=listener.counters_log_interval,
                                        log=self.log.bind(component="iso8583"))
        self.listener.setServiceParent(self)

    def _smsc_route(self, reactor, sms, connection) -> SmscRoute:
        """One SMSC's binds; its contracted rate is shared by its transmitting binds."""
        transmitting = sum(1 for b in connection.binds if b != "receiver") or 1
        links = tuple(SmppLink(reactor, SmppLinkConfig(
            host=connection.host, port=connection.port, system_id=connection.system_id,
            password=connection.password, system_type=connection.system_type, bind_mode=mode,
            name=connection.name, source_addr=connection.source_addr,
            source_addr_ton=sms.source_addr_ton, source_addr_npi=sms.source_addr_npi,
            registered_delivery=1 if sms.delivery_receipts else 0,
            country=sms.country, window=connection.window, rate=connection.rate / transmitting,
            throttle_pause=sms.throttle_pause,
            throttle_pause_cap=sms.throttle_pause_cap, part_retries=sms.part_retries,
            validity_period=sms.validity_period, response_timeout=sms.submit_timeout,
            enquire_link_interval=sms.enquire_link_interval, enquire_link_timeout=sms.enquire_link_timeout,
            pdu_read_timeout=sms.pdu_read_timeout, max_pdu_length=sms.max_pdu_length,
            reconnect_initial=sms.reconnect_initial, reconnect_max=sms.reconnect_max,
            stop_timeout=sms.submit_timeout + 5.0, concatenation=sms.concatenation,
        ), status_table=sms.status_table, logger=self.log.bind(component="smpp"))
            for mode in connection.binds)
        return SmscRoute(connection.name, connection.prefixes, links)

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
        d = self.billers.when_started()
        d.addCallback(lambda _: self.listener.listen())

        def listening(port):
            host = port.getHost()
            self.log.info("gateway listening", host=host.host, port=host.port,
                          framing=self.settings.listener.framing, config=self.settings.source,
                          tls=self.settings.listener.tls is not None,
                          peers=[p.name for p in self.settings.peers.peers])
            exposed = exposure_warning(self.settings.listener.endpoint, tls=self.settings.listener.tls is not None)
            if exposed:
                self.log.warning(exposed, endpoint=self.settings.listener.endpoint)
            return port

        return d.addCallback(listening)

    def stop(self) -> defer.Deferred:
        d = defer.maybeDeferred(self.stopService)
        d.addBoth(lambda r: (self.engine.dispose(), self.read_engine.dispose(), r)[2])
        return d
