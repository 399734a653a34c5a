"""The ``billgw`` command: the composition root.

Only here is the global reactor imported, structlog configured and the
configuration file read; everything below takes them as arguments.

Sub-commands::

    billgw [--config FILE] serve [--listen ENDPOINT]
    billgw [--config FILE] check-config
    billgw [--config FILE] db upgrade
    billgw [--config FILE] audit --ledger CODE=PATH [--ledger CODE=PATH ...] [--json]
    billgw [--config FILE] sms show PAYMENT_ID [--json]
    billgw [--config FILE] sms resend PAYMENT_ID --reason WHY [--operator NAME]
    billgw [--config FILE] sms preview [--biller CODE] [--language LANG] [--reversal]
    billgw [--config FILE] sms ref SHORT_REFERENCE
    billgw [--config FILE] journal find --pan [PAN]
    billgw telecom-sim [--listen ENDPOINT] [--db PATH] [--reversal-policy allowed|never]
    billgw json-biller-sim [--listen ENDPOINT] [--service NAME ...] [--behaviour KIND] [--reversal-policy P]
    billgw smsc-sim [--listen ENDPOINT] [--system-id ID] [--password PW] [--record PATH]
                    [--receipts tlv|text|none] [--receipts-early]
    billgw electricity-sim [--listen ENDPOINT] [--db PATH] [--framing F] [--code-page CP] [--behaviour KIND]
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

    esim = sub.add_parser("electricity-sim",
                          help="run the electricity host simulator (fixed-width EBCDIC records over TCP)")
    from billgw.billing_adapters.electricity.sim import add_arguments as add_electricity_sim_arguments

    add_electricity_sim_arguments(esim)  # --listen, --db, --framing, --code-page, --behaviour, ...

    wsim = sub.add_parser("water-sim", help="the water biller's tables and batch (a database biller)")
    from billgw.billing_adapters.water.sim import add_arguments as add_water_sim_arguments

    add_water_sim_arguments(wsim)  # --db, --init, --batch-now, --batch-interval, --behaviour, ...

    smsc = sub.add_parser("smsc-sim", help="run the SMSC simulator (SMPP 3.4 server)")
    smsc.add_argument("--listen", default="tcp:2775:interface=127.0.0.1")
    smsc.add_argument("--system-id", default="billgw")
    # No default password: BILLGW_SMPP_PASSWORD, or one made up and printed.
    smsc.add_argument("--password", default=os.environ.get("BILLGW_SMPP_PASSWORD") or None)
    smsc.add_argument("--record", default="var/smsc-received.jsonl",
                      help="JSON lines file of every message received")
    smsc.add_argument("--receipts", choices=("tlv", "text", "none"), default="tlv",
                      help="delivery receipts sent back: with TLVs and text, text only, or none")
    smsc.add_argument("--receipts-early", action="store_true",
                      help="send each receipt before its submit_sm_resp (as some SMSCs do)")
    smsc.add_argument("--answer-delay", type=float, default=0.0, metavar="SECONDS",
                      help="answer each submit_sm after this long (an SMSC's round trip; 0: at once)")

    audit = sub.add_parser("audit", help="compare the journal with billers' ledgers and the SMS outbox")
    audit.add_argument("--ledger", action="append", required=True, metavar="CODE=PATH",
                       help="a biller's ledger to compare, e.g. TEL=var/telecom-sim.sqlite (repeatable)")
    audit.add_argument("--json", action="store_true", help="print a machine-readable object")

    sms = sub.add_parser("sms", help="SMS receipts: a payment's history, an operator's resend, "
                                     "the templates previewed, a short reference found")
    sms_sub = sms.add_subparsers(dest="sms_command", required=True)
    from .sms_ops import add_sms_commands
    from .sms_preview import add_arguments as add_sms_preview_arguments

    add_sms_commands(sms_sub)  # show, resend
    add_sms_preview_arguments(sms_sub)  # preview, ref
    journal = sub.add_parser("journal", help="look payments up in the journal")
    journal_sub = journal.add_subparsers(dest="journal_command", required=True)
    find = journal_sub.add_parser("find", help="a card's payments, by the keyed hash of its PAN")
    find.add_argument("--pan", nargs="?", const="", required=True, metavar="PAN",
                      help="the card number; without a value it is asked for without echo "
                           "(needs BILLGW_PAN_HMAC_KEY, the gateway's key)")

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
    if not args.password:
        import secrets

        args.password = secrets.token_urlsafe(6)[:8]  # SMPP 3.4: at most 8 characters
        print(f"no --password and no BILLGW_SMPP_PASSWORD: this run's SMPP password is {args.password}",
              flush=True)
    from billgw.sms.smsc_dlr import DlrPolicy

    dlr = None if args.receipts == "none" else DlrPolicy(form=args.receipts, early=args.receipts_early)
    slow = {}
    if args.answer_delay > 0:
        from billgw.sms.smsc_sim import SlowSMSC

        slow = {"factory_class": SlowSMSC, "delay": args.answer_delay}
    d = listen_smsc(reactor, args.listen, system_id=args.system_id, password=args.password,
                    record_path=args.record, dlr=dlr, **slow)

    def started(result):
        port, _factory = result
        host = port.getHost()
        print(f"SMSC simulator listening on {host.host}:{host.port} (recording to {args.record})", flush=True)
        return defer.Deferred()

    return d.addCallback(started)


def _electricity_sim(reactor, args):
    from billgw.billing_adapters.electricity.sim import listen_electricity_sim, options_from_args

    host_class, options = options_from_args(args)
    d = defer.ensureDeferred(listen_electricity_sim(reactor, args.listen, db_path=args.db, host_class=host_class,
                                                    **options))

    def started(result):
        port, _host = result
        address = port.getHost()
        print(f"electricity host simulator ({args.behaviour}) listening on {address.host}:{address.port} "
              f"({args.framing}, {args.code_page}; ledger {args.db})", flush=True)
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
    if args.command == "electricity-sim":
        _configure_logging(fmt="json")
        return _electricity_sim(reactor, args)
    if args.command == "demo":
        from .demo import run_demo

        return defer.ensureDeferred(run_demo(reactor, args.workdir, config_path=args.config))
    raise SystemExit(f"unknown command {args.command}")


def _journal_find(settings, pan: str | None, environ=None, out=None) -> int:
    """``billgw journal find --pan``: 0 found, 1 none, 2 unusable input."""
    from .audit.snapshot import make_audit_engine
    from .journal_find import FindUsageError, find_by_pan, read_pan, render
    from .keys import PAN_HMAC_ENV, pan_hasher_from_env

    out = out or sys.stdout
    try:
        hasher = pan_hasher_from_env(os.environ if environ is None else environ)
        if hasher is None:
            raise FindUsageError(f"{PAN_HMAC_ENV} is not set: the gateway's key is needed to look a card up")
        engine = make_audit_engine(settings.database.url)
        try:
            rows = find_by_pan(engine, hasher, read_pan(pan))
        finally:
            engine.dispose()
    except (FindUsageError, ValueError) as exc:
        print(f"billgw journal find: {exc}", file=sys.stderr)
        return 2
    render(rows, out)
    return 0 if rows else 1


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
            for peer in settings.peers.peers:
                if peer.mac is not None:  # to compare with the switch's key custodians
                    print(f"peer {peer.name}: MAC key check value {peer.mac.check_value()}")
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
        if args.command == "sms" and args.sms_command in ("preview", "ref"):
            from .sms_preview import run as run_sms

            raise SystemExit(run_sms(_settings(args), args))
        if args.command == "sms":
            from .sms_ops import run_command as run_sms_command

            raise SystemExit(run_sms_command(_settings(args), args))
        if args.command == "journal":
            raise SystemExit(_journal_find(_settings(args), args.pan))
        if args.command in ("serve",):
            validate_adapters(_settings(args))  # fail on bad config before the reactor starts
    except ConfigError as exc:
        print(f"billgw: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    task.react(lambda reactor: _run(reactor, args))


if __name__ == "__main__":  # pragma: no cover
    main()
