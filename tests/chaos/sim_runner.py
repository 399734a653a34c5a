"""Run the telecom biller simulator (with faults and load subscribers) and the
SMSC simulator in one process, for the chaos test.

    python sim_runner.py --telecom-db L.sqlite --smsc-record sms.jsonl \\
        --ready-file ready.json --smsc-password PW [--fault-* ...] [--seed N] \\
        [--extra-subscribers N]

Why a process of its own: the gateway is killed and restarted during the
chaos run while the biller and the SMSC must live on, as real ones would; and
until ``billgw telecom-sim`` exposes the ``--fault-*`` options this is the
way to run a faulty biller from the command line.  Both listen on free
loopback ports; once both listen, ``--ready-file`` gets
``{"telecom_port": ..., "smsc_port": ...}`` (written whole, then renamed, so
a reader never sees half of it).  Logs are JSON lines on stdout.  Stop it with
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
    add_fault_arguments(parser)
    return parser.parse_args(argv)


async def serve(reactor, args) -> None:
    from billgw.billing_adapters.telecom_sim import fault_options_from_args, listen_telecom_sim
    from billgw.sms.smsc_sim import listen_smsc

    tel_port, simulator = await listen_telecom_sim(
        reactor, LOOPBACK, db_path=args.telecom_db, faults=fault_options_from_args(args),
        extra_subscribers=args.extra_subscribers)
    reactor.addSystemEventTrigger("after", "shutdown", simulator.close)
    smsc_port, _factory = await listen_smsc(reactor, LOOPBACK, system_id=args.smsc_system_id,
                                            password=args.smsc_password, record_path=args.smsc_record)
    ready = {"telecom_port": tel_port.getHost().port, "smsc_port": smsc_port.getHost().port,
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
