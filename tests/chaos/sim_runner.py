"""Run the telecom biller simulator (with faults and load subscribers), a
JSON biller simulator (with load accounts) and the SMSC simulator in one
process, for the chaos test.

    python sim_runner.py --telecom-db L.sqlite --smsc-record sms.jsonl \\
        --ready-file ready.json --smsc-password PW [--fault-* ...] [--seed N] \\
        [--extra-subscribers N] [--json-accounts N --json-account-base B]

Why a process of its own: the gateway is killed and restarted during the
chaos run while the biller and the SMSC must live on, as real ones would; and
until ``billgw telecom-sim`` exposes the ``--fault-*`` options this is the
way to run a faulty biller from the command line.  The JSON biller's load
accounts are numbered from ``--json-account-base`` (like mobiles, which the
switch texts; ``billgw json-biller-sim --accounts`` numbers them from
2000000000), each with one 1,000,000.000 JOD bill taking part payments; its
ledger lives in this process, read through its reconciliation listing.  All
listen on free loopback ports; once all listen, ``--ready-file`` gets
``{"telecom_port": ..., "json_port": ..., "smsc_port": ...}`` (written
whole, then renamed, so a reader never sees half of it).  Logs are JSON lines on stdout.  Stop it with
SIGTERM.

Run it with the virtual environment's python from a directory other than the
repository root, so that the root's ``iso8583/`` folder does not shadow
pyiso8583.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from twisted.internet import defer, task

LOOPBACK = "tcp:0:interface=127.0.0.1"


def parse_args(argv):
    from billgw.billing_adapters.telecom_sim import add_fault_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--telecom-db", required=True)
    parser.add_argument("--smsc-record", required=True)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--smsc-system-id", default="billgw")
    parser.add_argument("--smsc-password", required=True)
    parser.add_argument("--json-service", default="WATER", help="the JSON biller's name for its service")
    parser.add_argument("--json-accounts", type=int, default=0)
    parser.add_argument("--json-account-base", type=int, default=787_000_000)
    add_fault_arguments(parser)
    return parser.parse_args(argv)


def json_ledger(service: str, accounts: int, account_base: int):
    """The JSON biller's sample accounts and ``accounts`` load accounts."""
    from billgw.billing_adapters.json_biller.ledger import Account, SimBill, seed_ledger

    ledger = seed_ledger(service)
    for i in range(accounts):
        number = f"{account_base + i:010d}"
        ledger.accounts[(service, number)] = Account(number, f"Load Account {number}", service, [
            SimBill(f"JB-L{number}", 1_000_000_000, 1_000_000_000, "400", "20260101", "20991231")])
    return ledger


async def serve(reactor, args) -> None:
    from billgw.billing_adapters.json_biller.sim import listen_json_biller
    from billgw.billing_adapters.telecom_sim import fault_options_from_args, listen_telecom_sim
    from billgw.sms.smsc_sim import listen_smsc

    tel_port, simulator = await listen_telecom_sim(
        reactor, LOOPBACK, db_path=args.telecom_db, faults=fault_options_from_args(args),
        extra_subscribers=args.extra_subscribers)
    reactor.addSystemEventTrigger("after", "shutdown", simulator.close)
    json_port, _resource = await listen_json_biller(
        reactor, LOOPBACK, ledger=json_ledger(args.json_service, args.json_accounts, args.json_account_base))
    smsc_port, _factory = await listen_smsc(reactor, LOOPBACK, system_id=args.smsc_system_id,
                                            password=args.smsc_password, record_path=args.smsc_record)
    ready = {"telecom_port": tel_port.getHost().port, "json_port": json_port.getHost().port,
             "smsc_port": smsc_port.getHost().port,
             "pid": os.getpid()}
    partial = args.ready_file + ".tmp"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(ready, handle)
    os.replace(partial, args.ready_file)
    await defer.Deferred()  # until SIGTERM stops the reactor


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from billgw.gateway.log_setup import configure

    configure("json", "info")
    task.react(lambda reactor: defer.ensureDeferred(serve(reactor, args)))


if __name__ == "__main__":
    main()
