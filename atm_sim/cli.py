"""``atm-sim``: send a bill inquiry or payment to the gateway, as an ATM would.

    atm-sim inquire --biller TEL --service MOBILE --billing-number 0791234567
    atm-sim pay --biller TEL --service MOBILE --billing-number 0791234567 \\
        --amount 12.500 --currency 400 --msisdn 962791234567 --language ar
    atm-sim load --count 200 --subscribers 0790000000-0790000049 \\
        --duplicate-rate 0.1 --advice-rate 0.05 --cancel-rate 0.05 --report var/load.json

For a person it prints the answer with the meaning of the response code; with
``--json`` one machine-readable object.  Exit status: 0 approved (F39 = 00),
1 declined (any other F39), 2 no answer, connection error, or sign-on
refused (the request was then never sent).  Passing
``--stan`` and ``--transmission-datetime`` (and the same amount and bill data)
sends an exact repeat, to watch the gateway's duplicate handling.

``load`` plays a whole bank switch (:mod:`billgw.atm_sim.switch`): many
payments over a few signed-on connections, with reversals after its own
timeout, advices, cancels and duplicates, and a JSON report of what it
believes happened to each payment.  Exit status: 0 when every reversal and
advice was acknowledged, 1 when some were not (or a payment met an error),
2 when the gateway could never be reached.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from typing import Sequence, TextIO

import structlog

from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.examples import TEST_PAN
from billgw.iso8583.framing import HEADERS
from billgw.iso8583.messages import DecodedResponse

from .client import (
    DEFAULT_TIMEOUT,
    INQUIRY_PROCESSING_CODE,
    PAYMENT_PROCESSING_CODE,
    Client,
    NoAnswer,
    Terminal,
    currency_exponent,
    format_minor_units,
    to_minor_units,
)

EXIT_APPROVED = 0
EXIT_DECLINED = 1
EXIT_NO_ANSWER = 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8583)
    parser.add_argument("--framing", choices=HEADERS, default="binary2")
    parser.add_argument("--biller", required=True, help="biller code (F48 BC)")
    parser.add_argument("--service", required=True, help="service code (F48 SC)")
    parser.add_argument("--billing-number", required=True, help="subscriber / account number (F48 BN)")
    parser.add_argument("--bill-number", help="bill to pay (F48 BL)")
    parser.add_argument("--pan", default=TEST_PAN, help="card number (default: a public Visa test PAN)")
    parser.add_argument("--terminal", default="ATM00001", help="F41, 8 characters")
    parser.add_argument("--acquirer", default="123456", help="F32 acquiring institution id")
    parser.add_argument("--currency", default="400", help="F49, ISO 4217 numeric (400 = JOD)")
    parser.add_argument("--exponent", type=int, help="decimals of the currency (default from ISO 4217)")
    parser.add_argument("--sign-on", action=argparse.BooleanOptionalAction, default=True,
                        help="send 0800/001 first (default: yes)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds for connect and for the answer")
    parser.add_argument("--stan", help="F11 (default: random)")
    parser.add_argument("--transmission-datetime", help="F7 MMDDhhmmss UTC (default: now)")
    parser.add_argument("--rrn", help="F37 (default: F7's hhmmss + STAN)")
    parser.add_argument("--codes", help="TOML file with [response_codes.<outcome>] code/text tables")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atm-sim", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    inquire = commands.add_parser("inquire", help="bill inquiry (0200, F3 370000)")
    _common(inquire)
    pay = commands.add_parser("pay", help="bill payment (0200, F3 500000)")
    _common(pay)
    pay.add_argument("--amount", required=True, help="decimal amount, e.g. 12.500")
    pay.add_argument("--msisdn", help="subscriber mobile for the SMS receipt (F48 MS)")
    pay.add_argument("--language", choices=("en", "ar"), default="en", help="receipt language (F48 LG)")
    pay.add_argument("--inquiry-reference", help="reference from the inquiry (F48 IR)")
    _load_arguments(commands.add_parser(
        "load", help="play a bank switch: many payments, reversals, advices, duplicates; JSON report"))
    commands.add_parser("bench", help="the gateway's throughput as a ratio of a minimal server's (atm-sim bench -h)",
                        add_help=False)
    baseline = commands.add_parser("baseline-server",
                                   help="the benchmark's baseline: frames, decodes, approves; remembers nothing")
    baseline.add_argument("--listen", default="tcp:9583:interface=127.0.0.1", help="Twisted endpoint (loopback)")
    return parser


def _load_arguments(load: argparse.ArgumentParser) -> None:
    from .switch import SwitchPlan

    d = SwitchPlan()
    load.add_argument("--host", default="127.0.0.1", help="gateway address (loopback only)")
    load.add_argument("--port", type=int, default=8583)
    load.add_argument("--framing", choices=HEADERS, default=d.framing)
    load.add_argument("--count", type=int, default=d.count, help="payments to make")
    load.add_argument("--rate", type=float, default=d.rate, help="payments started per second, at most")
    load.add_argument("--concurrency", type=int, default=d.concurrency, help="payments in flight, at most")
    load.add_argument("--connections", type=int, default=d.connections, help="persistent connections")
    load.add_argument("--duplicate-rate", type=float, default=d.duplicate_rate,
                      help="share of payments whose 0200 is sent twice")
    load.add_argument("--advice-rate", type=float, default=d.advice_rate,
                      help="share of payments stood in for: 0220/0221 instead of waiting for the 0210")
    load.add_argument("--cancel-rate", type=float, default=d.cancel_rate,
                      help="share of payments reversed by the customer after approval")
    load.add_argument("--open-loop", action="store_true",
                      help="start payments at --rate whatever is in flight; latency from the intended send time")
    load.add_argument("--pipelined-reversal-rate", type=float, default=d.pipelined_reversal_rate,
                      help="share of payments whose 0420 is written right behind the 0200, before any answer")
    load.add_argument("--rule-breaking-advice-rate", type=float, default=d.rule_breaking_advice_rate,
                      help="share of payments stood in for with an amount below the service's minimum "
                           "(the gateway must acknowledge the 0220 and never post it)")
    load.add_argument("--seed", type=int, default=d.seed, help="seed of the plan (subscribers, amounts, roles)")
    load.add_argument("--answer-timeout", type=float, default=d.answer_timeout,
                      help="seconds the switch waits for an 0210 before reversing")
    load.add_argument("--repeat-interval", type=float, default=d.repeat_interval,
                      help="seconds between 0421 / 0221 repeats")
    load.add_argument("--max-repeats", type=int, default=d.max_repeats,
                      help="sends of one reversal or advice, at most")
    load.add_argument("--max-duration", type=float, default=d.max_duration,
                      help="seconds for the whole run; repeats stop after it")
    load.add_argument("--subscribers", default="0790000000-0790000009",
                      help="billing numbers: comma-separated numbers or FIRST-LAST ranges "
                           "(billgw telecom-sim --extra-subscribers N seeds 0790000000...)")
    load.add_argument("--biller", default=d.biller)
    load.add_argument("--service", default=d.service)
    load.add_argument("--currency", default=d.currency)
    load.add_argument("--exponent", type=int, help="decimals of the currency (default from ISO 4217)")
    load.add_argument("--amount-min", default="1.000", help="smallest amount, decimal")
    load.add_argument("--amount-max", default="50.000", help="largest amount, decimal")
    load.add_argument("--acquirer", default=d.acquirer_id, help="F32")
    load.add_argument("--terminals", type=int, default=d.terminals, help="terminals ATM00001...")
    load.add_argument("--report", help="write the JSON report here")
    load.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    load.add_argument("--verbose", action="store_true", help="log the switch's info events to stderr")
    load.add_argument("--connect-wait", type=float, default=d.connect_wait,
                      help="seconds a payment waits for a signed-on link before it is counted not sent")
    load.add_argument("--sign-on-timeout", type=float, default=d.sign_on_timeout,
                      help="seconds for each link's 0810")
    load.add_argument("--progress", action="store_true",
                      help="print a live progress line (payments started, rate) to stderr every second")
    load.add_argument("--histogram",
                      help="write the 0210 latencies as an encoded HDR histogram (JSON, with the run's "
                           "wall-clock span and counts) here: what atm-sim bench merges across processes")
    load.add_argument("--start-at", type=float,
                      help="wall-clock time (UNIX seconds) to start at: several load processes start together")


MAX_SUBSCRIBERS = 1_000_000


def parse_subscribers(text: str) -> tuple[str, ...]:
    """``"0790000000-0790000002,0791234567"`` -> the four numbers (ranges keep
    the first number's width, so leading zeros survive)."""
    numbers: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "-" in item:
            first, last = (x.strip() for x in item.split("-", 1))
            if not (first.isdigit() and last.isdigit()) or int(last) < int(first):
                raise ValueError(f"bad subscriber range {item!r}")
            if int(last) - int(first) + 1 + len(numbers) > MAX_SUBSCRIBERS:
                raise ValueError(f"more than {MAX_SUBSCRIBERS} subscribers")
            numbers.extend(f"{n:0{len(first)}d}" for n in range(int(first), int(last) + 1))
        else:
            numbers.append(item)
    if not numbers:
        raise ValueError("no subscriber given")
    return tuple(numbers)


def load_codes(path: str | None) -> ResponseCodes:
    """The response-code table: conf/'s TOML format, or the defaults."""
    if path is None:
        return ResponseCodes()
    with open(path, "rb") as handle:
        table = tomllib.load(handle)
    return ResponseCodes.from_mapping(table.get("response_codes", {}))


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.stan is not None and not (len(args.stan) <= 6 and args.stan.isdigit()):
        parser.error("--stan must be 1 to 6 digits")
    if args.stan is not None:
        args.stan = args.stan.zfill(6)
    f7 = args.transmission_datetime
    if f7 is not None and not (len(f7) == 10 and f7.isdigit()):
        parser.error("--transmission-datetime must be 10 digits MMDDhhmmss")
    if args.rrn is not None and len(args.rrn) != 12:
        parser.error("--rrn must be 12 characters")
    if len(args.terminal) != 8:
        parser.error("--terminal must be 8 characters (F41)")


def _baseline_server(args) -> int:
    """Serve the benchmark's baseline until SIGTERM (loopback only)."""
    from twisted.internet import reactor  # the composition root of this command
    from twisted.internet.endpoints import serverFromString

    from .baseline import BaselineFactory

    failed = []

    def cannot_listen(failure):
        failed.append(failure.getErrorMessage())
        reactor.stop()

    serverFromString(reactor, args.listen).listen(BaselineFactory()).addErrback(cannot_listen)
    reactor.run()
    if failed:
        print(f"atm-sim baseline-server: cannot listen on {args.listen}: {failed[0]}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from twisted.internet import reactor  # the composition root of the bench

        from .bench import main as bench_main

        return bench_main(argv[1:], reactor)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "baseline-server":
        return _baseline_server(args)
    if args.command == "load":
        return _load(parser, args, out, err)
    _check_args(parser, args)
    exponent = currency_exponent(args.currency, args.exponent)
    amount_minor = 0
    if args.command == "pay":
        try:
            amount_minor = to_minor_units(args.amount, exponent)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        codes = load_codes(args.codes)
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        parser.error(f"--codes: {exc}")
    bill = BillRequestData(
        biller_code=args.biller,
        service_code=args.service,
        billing_number=args.billing_number,
        bill_number=args.bill_number,
        msisdn=getattr(args, "msisdn", None),
        language=getattr(args, "language", "en"),
        inquiry_reference=getattr(args, "inquiry_reference", None),
    )
    terminal = Terminal(acquirer_id=args.acquirer, terminal_id=args.terminal)
    processing_code = PAYMENT_PROCESSING_CODE if args.command == "pay" else INQUIRY_PROCESSING_CODE
    try:
        with Client(args.host, args.port, framing=args.framing, timeout=args.timeout) as client:
            if args.sign_on:
                signed = client.sign_on(terminal=terminal)
                if signed.response_code != "00":
                    print(f"sign-on refused: {signed.response_code} {codes.text(signed.response_code or '')}",
                          file=err)
                    return EXIT_NO_ANSWER
            sent, response = client.bill_request(
                processing_code, bill=bill, amount_minor=amount_minor, currency=args.currency,
                terminal=terminal, pan=args.pan, stan=args.stan, f7=args.transmission_datetime, rrn=args.rrn)
    except NoAnswer as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}), file=out)
        print(f"no answer: {exc}", file=err)
        return EXIT_NO_ANSWER
    summary = summarize(response, sent, codes, exponent)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2), file=out)
    else:
        print(render(summary), file=out)
    return EXIT_APPROVED if response.response_code == "00" else EXIT_DECLINED


def _load(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The composition root of ``atm-sim load``: the global reactor is used here only."""
    from .switch import SwitchPlan, run_switch

    exponent = currency_exponent(args.currency, args.exponent)
    try:
        plan = SwitchPlan(
            count=args.count, subscribers=parse_subscribers(args.subscribers),
            amount_min=to_minor_units(args.amount_min, exponent),
            amount_max=to_minor_units(args.amount_max, exponent),
            biller=args.biller, service=args.service, currency=args.currency, acquirer_id=args.acquirer,
            terminals=args.terminals, concurrency=args.concurrency, rate=args.rate,
            connections=args.connections, duplicate_rate=args.duplicate_rate, advice_rate=args.advice_rate,
            cancel_rate=args.cancel_rate, pipelined_reversal_rate=args.pipelined_reversal_rate,
            rule_breaking_advice_rate=args.rule_breaking_advice_rate, open_loop=args.open_loop, seed=args.seed, answer_timeout=args.answer_timeout,
            repeat_interval=args.repeat_interval, max_repeats=args.max_repeats,
            max_duration=args.max_duration, framing=args.framing, connect_wait=args.connect_wait,
            sign_on_timeout=args.sign_on_timeout,
        )
    except ValueError as exc:
        parser.error(str(exc))
    log = structlog.wrap_logger(
        structlog.PrintLogger(err),
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(20 if args.verbose else 30),
    )
    from twisted.internet import reactor

    outcome: list = []
    span: dict[str, float] = {}
    progress = _Progress(plan.count, err) if args.progress else None

    def start():
        span["started_at"], span["cpu_at_start"] = time.time(), time.process_time()
        try:
            d = run_switch(reactor, args.host, args.port, plan, log=log,
                           on_payment_started=progress.started if progress else None)
        except ValueError as exc:
            outcome.append(exc)
            reactor.stop()
            return
        if progress is not None:
            progress.loop.clock = reactor
            progress.loop.start(1.0, now=False)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: span.setdefault("ended_at", time.time()))
        d.addBoth(lambda _: progress and progress.loop.running and progress.loop.stop())
        d.addBoth(lambda _: reactor.stop())

    delay = max(0.0, args.start_at - time.time()) if args.start_at else 0.0
    reactor.callWhenRunning(lambda: reactor.callLater(delay, start))
    reactor.run(installSignalHandlers=True)
    result = outcome[0] if outcome else RuntimeError("the run did not finish")
    if isinstance(result, ValueError):
        print(f"atm-sim load: {result}", file=err)
        return EXIT_NO_ANSWER
    if not hasattr(result, "summary"):  # a Failure or an exception
        print(f"atm-sim load failed: {getattr(result, 'getErrorMessage', lambda: result)()}", file=err)
        return EXIT_NO_ANSWER
    report = result
    if args.report:
        report.write(args.report)
    if args.histogram:
        write_histogram(args.histogram, report, span)
    if args.json:
        print(json.dumps({"counts": report.counts, "latency": report.latency,
                          "kept_by_subscriber": report.kept_by_subscriber}, indent=2), file=out)
    else:
        print(report.summary(), file=out)
        if args.report:
            print(f"report     {args.report}", file=out)
    if not report.link.get("connections"):
        return EXIT_NO_ANSWER
    if not report.all_acknowledged or report.counts["errors"]:
        return EXIT_DECLINED
    return EXIT_APPROVED


class _Progress:
    """``atm-sim load --progress``: one line a second on stderr."""

    def __init__(self, count: int, err: TextIO):
        from twisted.internet.task import LoopingCall

        self.count, self.err, self.started_count, self.last = count, err, 0, 0
        self.loop = LoopingCall(self.show)

    def started(self, _index: int) -> None:
        self.started_count += 1

    def show(self) -> None:
        rate, self.last = self.started_count - self.last, self.started_count
        print(f"load: {self.started_count}/{self.count} payments started, {rate}/s", file=self.err, flush=True)


def write_histogram(path: str, report, span: dict[str, float]) -> None:
    """The run as ``atm-sim bench`` merges it: the latencies as an HDR
    histogram, the wall-clock span, the counts and this process's CPU."""
    from .histogram import LatencyHistogram

    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"started_at": span.get("started_at"), "ended_at": span.get("ended_at"),
                   "duration": report.duration, "counts": report.counts, "cpu_seconds": time.process_time() - span.get("cpu_at_start", 0.0),
                   "histogram": LatencyHistogram.of(report.latencies).encode()}, handle)


def summarize(response: DecodedResponse, sent: dict[str, str], codes: ResponseCodes,
              exponent: int) -> dict:
    """The answer as a plain dict (the --json object; ``render`` prints it)."""
    code = response.response_code or ""
    bill = response.bill
    currency = response.fields.get("49") or sent.get("49")

    def money(minor):
        return None if minor is None else format_minor_units(minor, exponent)

    summary = {
        "mti": response.mti,
        "response_code": code,
        "response_text": codes.text(code),
        "approved": code == "00",
        "stan": response.fields.get("11"),
        "transmission_datetime": response.fields.get("7"),
        "rrn": response.fields.get("37"),
        "amount_minor": int(response.fields["4"]) if response.fields.get("4", "").isdigit() else None,
        "currency": currency,
        "auth_code": response.fields.get("38"),
        "settlement_date": response.fields.get("15"),
        "customer_name": bill.customer_name if bill else None,
        "due_amount_minor": bill.due_amount if bill else None,
        "due_amount": money(bill.due_amount) if bill else None,
        "due_date": bill.due_date if bill else None,
        "fee_minor": bill.fee if bill else None,
        "fee": money(bill.fee) if bill else None,
        "bills": [
            {"bill_number": b.bill_number, "amount_minor": b.amount, "amount": money(b.amount),
             "due_date": b.due_date}
            for b in (bill.bills if bill else ())
        ],
        "inquiry_reference": bill.inquiry_reference if bill else None,
        "receipt_number": bill.receipt_number if bill else None,
        "payment_reference": bill.payment_reference if bill else None,
    }
    summary["amount"] = money(summary["amount_minor"])
    return summary


_LABELS = (
    ("customer_name", "Customer name"),
    ("due_amount", "Due amount"),
    ("due_date", "Due date"),
    ("fee", "Fee"),
    ("receipt_number", "Receipt number"),
    ("payment_reference", "Payment reference"),
    ("auth_code", "Auth code"),
    ("settlement_date", "Settlement date"),
    ("inquiry_reference", "Inquiry reference"),
)


def render(summary: dict) -> str:
    currency = summary["currency"] or ""
    lines = [
        f"{'MTI':<18} {summary['mti']}",
        f"{'Response code':<18} {summary['response_code']} {summary['response_text']}",
        f"{'STAN / F7':<18} {summary['stan']} / {summary['transmission_datetime']}",
    ]
    if summary["amount"] is not None:
        lines.append(f"{'Amount':<18} {summary['amount']} ({currency})")
    for key, label in _LABELS:
        value = summary[key]
        if value is None:
            continue
        if key in ("due_amount", "fee"):
            value = f"{value} ({currency})"
        lines.append(f"{label:<18} {value}")
    for entry in summary["bills"]:
        lines.append(f"{'Bill':<18} {entry['bill_number']}  {entry['amount']}  due {entry['due_date']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
