"""The ``billgw`` command: the composition root.

Only here is the global reactor imported, structlog configured and the
configuration file read; everything below takes them as arguments.

Sub-commands::

    billgw [--config FILE] serve [--listen ENDPOINT]
    billgw [--config FILE] check-config
    billgw [--config FILE] db upgrade
    billgw [--config FILE] audit --ledger CODE=PATH [--ledger CODE=PATH ...] [--json]
    billgw telecom-sim [--listen ENDPOINT] [--db PATH] [--reversal-policy allowed|never]
    billgw json-biller-sim [--listen ENDPOINT] [--service NAME ...] [--behaviour KIND] [--reversal-policy P]
    billgw smsc-sim [--listen ENDPOINT] [--system-id ID] [--password PW] [--record PATH]
    billgw water-sim [--db URL] [--init] [--batch-now | --batch-interval S] [--behaviour KIND]
    billgw demo [--workdir DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from twisted.internet import defer, task

from .config import ConfigError, load_settings, validate_adapters


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billgw", description="ATM & SMS bill-payment gateway")
    parser.add_argument("--config", "-c", help="configuration file (default: the packaged conf/billgw.toml)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (ISO 8583 listener, journal, SMS sender)")
    serve.add_argument("--listen", help="override gateway.listen, e.g. tcp:8583:interface=127.0.0.1")

    sub.add_parser("check-config", help="validate the configuration and exit")

    db = sub.add_parser("db", help="journal database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="create or migrate the journal schema (alembic)")

    tel = sub.add_parser("telecom-sim", help="run the telecom biller simulator (SOAP over HTTP)")
    tel.add_argument("--listen", default="tcp:8081:interface=127.0.0.1")
    tel.add_argument("--db", default="var/telecom-sim.sqlite", help="the simulator's ledger (SQLite)")
    tel.add_argument("--reversal-policy", choices=("allowed", "never"), default="allowed")
    from billgw.billing_adapters.telecom_sim import add_fault_arguments

    add_fault_arguments(tel)  # --fault-*-rate, --seed, --extra-subscribers

    jsim = sub.add_parser("json-biller-sim",
                          help="run a JSON biller simulator (the bill-pull interface of docs/billers.md)")
    from billgw.billing_adapters.json_biller.sim import add_arguments as add_json_sim_arguments

    add_json_sim_arguments(jsim)  # --listen, --service, --behaviour, --reversal-policy, ...

    wsim = sub.add_parser("water-sim", help="the water biller's tables and batch (a database biller)")
    from billgw.billing_adapters.water.sim import add_arguments as add_water_sim_arguments

    add_water_sim_arguments(wsim)  # --db, --init, --batch-now, --batch-interval, --behaviour, ...

    smsc = sub.add_parser("smsc-sim", help="run the SMSC simulator (SMPP 3.4 server)")
    smsc.add_argument("--listen", default="tcp:2775:interface=127.0.0.1")
    smsc.add_argument("--system-id", default="billgw")
    smsc.add_argument("--password", default=os.environ.get("BILLGW_SMPP_PASSWORD", "secret"))
    smsc.add_argument("--record", default="var/smsc-received.jsonl",
                      help="JSON lines file of every message received")

    audit = sub.add_parser("audit", help="compare the journal with billers' ledgers and the SMS outbox")
    audit.add_argument("--ledger", action="append", required=True, metavar="CODE=PATH",
                       help="a biller's ledger to compare, e.g. TEL=var/telecom-sim.sqlite (repeatable)")
    audit.add_argument("--json", action="store_true", help="print a machine-readable object")

    demo = sub.add_parser("demo", help="gateway + simulators on loopback, one inquiry and payments")
    demo.add_argument("--workdir", default="var/demo", help="wiped and recreated on each run")
    return parser


def _settings(args):
    settings = load_settings(args.config)
    if getattr(args, "listen", None) and args.command == "serve":
        settings = dataclasses.replace(settings, listener=dataclasses.replace(settings.listener, endpoint=args.listen))
    return settings


def _configure_logging(settings=None, fmt=None, level=None):
    from .log_setup import configure

    configure(fmt or (settings.logging.format if settings else "json"),
              level or (settings.logging.level if settings else "info"))


def _ensure_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def _upgrade(settings) -> None:
    from .db import make_engine
    from .exposure import secure_sqlite_file
    from .migrate import upgrade

    url = settings.database.url
    if url.startswith("sqlite:///"):
        _ensure_parent(url[len("sqlite:///"):])
    secure_sqlite_file(url)  # owner-only before SQLite creates it
    engine = make_engine(url, 1)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def _serve(reactor, settings):
    from .service import GatewayService

    try:
        gateway = GatewayService(settings, reactor)
    except ConfigError as exc:
        print(f"billgw: configuration error: {exc}", file=sys.stderr)
        return defer.fail(SystemExit(2))
    from twisted.internet.threads import deferToThread

    reactor.addSystemEventTrigger("before", "shutdown", gateway.stop)
    # Migrations block: they run in a thread, and before anything listens.
    d = deferToThread(_upgrade, settings) if settings.database.auto_upgrade else defer.succeed(None)
    d.addCallback(lambda _: gateway.start())
    d.addCallback(lambda _: defer.Deferred())  # serve until shutdown
    return d


def _telecom_sim(reactor, args):
    from billgw.billing_adapters.telecom_sim import fault_options_from_args, listen_telecom_sim

    _ensure_parent(args.db)
    d = listen_telecom_sim(reactor, args.listen, db_path=args.db, reversal_policy=args.reversal_policy,
                           faults=fault_options_from_args(args), extra_subscribers=args.extra_subscribers)

    def started(result):
        port, _sim = result
        host = port.getHost()
        print(f"telecom simulator listening on http://{host.host}:{host.port}/BillingService (ledger {args.db})", flush=True)
        return defer.Deferred()

    return d.addCallback(started)


def _json_biller_sim(reactor, args):
    from billgw.billing_adapters.json_biller.sim import (
        describe,
        ledger_from_args,
        listen_json_biller,
        resource_from_args,
    )

    d = listen_json_biller(reactor, args.listen, ledger=ledger_from_args(args), base_path=args.base_path,
                           resource_class=resource_from_args(args))

    def started(result):
        port, _resource = result
        print(describe(port, args), flush=True)
        return defer.Deferred()

    return d.addCallback(started)


def _smsc_sim(reactor, args):
    from billgw.sms.smsc_sim import listen_smsc

    _ensure_parent(args.record)
    d = listen_smsc(reactor, args.listen, system_id=args.system_id, password=args.password,
                    record_path=args.record)

    def started(result):
        port, _factory = result
        host = port.getHost()
        print(f"SMSC simulator listening on {host.host}:{host.port} (recording to {args.record})", flush=True)
        return defer.Deferred()

    return d.addCallback(started)


def _run(reactor, args):
    if args.command == "serve":
        settings = _settings(args)
        _configure_logging(settings)
        return _serve(reactor, settings)
    if args.command == "telecom-sim":
        _configure_logging(fmt="json")
        return _telecom_sim(reactor, args)
    if args.command == "smsc-sim":
        _configure_logging(fmt="json")
        return _smsc_sim(reactor, args)
    if args.command == "json-biller-sim":
        _configure_logging(fmt="json")
        return _json_biller_sim(reactor, args)
    if args.command == "demo":
        from .demo import run_demo

        return defer.ensureDeferred(run_demo(reactor, args.workdir, config_path=args.config))
    raise SystemExit(f"unknown command {args.command}")


def main(argv=None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "telecom-sim":
        from billgw.billing_adapters.telecom_sim import fault_options_from_args

        try:
            fault_options_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        if args.command == "check-config":
            settings = _settings(args)
            validate_adapters(settings)  # adapter kinds and their settings, nothing started
            print(f"{settings.source}: OK ({len(settings.billers)} biller(s))")
            return
        if args.command == "db":
            settings = _settings(args)
            _upgrade(settings)
            print(f"journal schema is up to date ({settings.database.url.split('@')[-1]})")
            return
        if args.command == "water-sim":
            from billgw.billing_adapters.water.sim import run_from_args

            raise SystemExit(run_from_args(args))  # blocking: the biller's own process, no reactor
        if args.command == "audit":
            from .audit import run_command

            raise SystemExit(run_command(_settings(args), args.ledger, as_json=args.json))
        if args.command in ("serve",):
            validate_adapters(_settings(args))  # fail on bad config before the reactor starts
    except ConfigError as exc:
        print(f"billgw: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    task.react(lambda reactor: _run(reactor, args))


if __name__ == "__main__":  # pragma: no cover
    main()
