"""The running gateway under hostile traffic, over real loopback sockets.

The whole stack (telecom simulator, SMSC simulator, journal on SQLite or
PostgreSQL) while, at once: connections send mutated frames (bit flips,
cut and grown messages, broken length headers and bitmaps, non-digits,
garbage F48), others hold partial frames open (slowloris), and a flood of
connections arrives past the peer's cap -- and beside it all a well-behaved
switch keeps inquiring.  Asserted: every one of its inquiries is answered
correctly, the gateway still answers afterwards, every partial frame's
connection is closed by the frame timer, the flood beyond the caps is
refused at accept, no journal row is half-written (each row's last event
is its state, none left unsettled), and the log written per bad frame is
bounded.

Bounded for CI: a seeded generator, a fixed number of frames and
connections, every socket wait bounded.
"""
from __future__ import annotations

import importlib.util
import random
import socket
import sys
import threading
from pathlib import Path

import pytest
import pytest_twisted
import structlog
from sqlalchemy import func, select
from twisted.internet import defer, task

from billgw.gateway.log_setup import mask_card_data
from billgw.gateway.schema import transaction_events, transactions
from billgw.gateway.states import UNSETTLED, State
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.framing import encode_frame
from billgw.iso8583.messages import encode_fields

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


e2e = sys.modules.get("security_e2e_stack") or _load("security_e2e_stack",
                                                       HERE.parent / "integration" / "test_gateway_end_to_end.py")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SEED = 8583
CONNECTIONS = 12  # fuzzing connections, one after the other
FRAMES_PER_CONNECTION = 40
HOLDERS = 20  # connections holding a partial frame open
FLOOD = 120  # connections opened at once (the local peer's cap is 64)
MIN_GOOD_INQUIRIES = 10
MAX_GOOD_INQUIRIES = 400
UNKNOWN_BILLING = "0799999999"  # the biller knows no such account


def _bases() -> list[bytes]:
    def bill_fields(stan, processing, amount, mti="0200"):
        return encode_fields(mti, {
            "2": "4761739001010010", "3": processing, "4": amount, "7": "1206101500", "11": stan,
            "12": "101500", "13": "1206", "32": "123456", "37": f"634010{stan}", "41": "ATM00001",
            "48": BillRequestData("TEL", "MOBILE", UNKNOWN_BILLING, msisdn="962791234567").to_tlv(),
            "49": "400"})

    reversal = encode_fields("0420", {
        "3": "500000", "4": "000000012500", "7": "1206101600", "11": "000900", "37": "634010000900",
        "41": "ATM00001", "90": "0200000901" + "1206101500" + "00000123456" + "0" * 11})
    sign_on = encode_fields("0800", {"7": "1206101500", "11": "000001", "70": "001"})
    return [bill_fields("000901", "500000", "000000012500"), bill_fields("000902", "370000", "000000000000"),
            bill_fields("000903", "500000", "000000012500", "0220"), reversal, sign_on]


def _mutate(rng: random.Random, message: bytes) -> bytes:
    m = bytearray(message)
    for _ in range(rng.randint(1, 5)):
        op = rng.choice(["flip", "set", "insert", "delete", "truncate", "grow", "bitmap", "f48"])
        at = rng.randrange(max(1, len(m)))
        if op == "flip" and m:
            m[at] ^= 1 << rng.randrange(8)
        elif op == "set" and m:
            m[at] = rng.randrange(256)
        elif op == "insert":
            m[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == "delete" and m:
            del m[at:at + rng.randint(1, 8)]
        elif op == "truncate":
            del m[at:]
        elif op == "grow":
            m += rng.choice([b"9", b"\xff", b"'; DROP TABLE transactions; --", "ملاحظة".encode()]) * rng.randint(1, 60)
        elif op == "bitmap" and len(m) > 20:
            m[4 + rng.randrange(16)] = rng.choice(b"0123456789ABCDEFZ")
        elif op == "f48":
            i = m.find(b"BC")
            if i > 0:
                m[i - 3:i] = rng.choice([b"999", b"000", b"0x1", b"\x00\x00\x00"])
    return bytes(m[:4000])


def fuzz(port: int, seed: int) -> dict:
    """Mutated frames on CONNECTIONS connections; a few broken headers."""
    rng = random.Random(seed)
    bases = _bases()
    sent = closed_by_gateway = 0
    for n in range(CONNECTIONS):
        with socket.create_connection(("127.0.0.1", port), timeout=e2e.TIMEOUT) as sock:
            sock.sendall(encode_frame(bases[-1]))  # signed on: mutated 0200s go further
            try:
                for _ in range(FRAMES_PER_CONNECTION):
                    sock.sendall(encode_frame(_mutate(rng, rng.choice(bases))))
                    sent += 1
                if n % 3 == 0:
                    # A length header beyond max_frame, or none at all.
                    sock.sendall(rng.choice([b"\xff\xff" + b"0" * 100, b"\x00\x00"]))
                    sent += 1
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(e2e.TIMEOUT)
                while sock.recv(65536):  # read answers until the gateway is done
                    pass
            except OSError:  # broken pipe, reset, not connected
                closed_by_gateway += 1  # an undecodable frame closed the connection
    return {"sent": sent, "closed_by_gateway": closed_by_gateway}


def hold_partial_frames(port: int, ready: threading.Event) -> int:
    """HOLDERS connections each send part of a frame and wait; returns how
    many the gateway closed (it must close them all).  ``ready`` is set
    once all are open (the flood starts then, so none is refused at accept)."""
    socks = []
    for i in range(HOLDERS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=e2e.TIMEOUT)
        sock.sendall(b"\x00\x64" + b"0200" + b"7" * (i % 10))  # 100 bytes announced
        socks.append(sock)
    ready.set()
    closed = 0
    for sock in socks:
        try:
            closed += sock.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        finally:
            sock.close()
    return closed


def flood(port: int) -> int:
    """FLOOD connections at once; returns how many the gateway closed at
    accept (waiting at most a few seconds for their end of stream)."""
    import selectors
    import time

    socks = []
    refused = 0
    try:
        for _ in range(FLOOD):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=e2e.TIMEOUT))
        waiting = selectors.DefaultSelector()
        for sock in socks:
            waiting.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + 5.0
        while waiting.get_map() and time.monotonic() < deadline:
            for key, _ in waiting.select(timeout=0.2):
                try:
                    refused += key.fileobj.recv(1) == b""
                except ConnectionResetError:
                    refused += 1
                waiting.unregister(key.fileobj)
            if refused >= FLOOD - 64:
                break  # every connection beyond the cap is accounted for
        waiting.close()
    finally:
        for sock in socks:
            sock.close()
    return refused


def good_switch(client, done: threading.Event) -> list:
    """Inquires on its one connection, signed on before the storm, until the
    storm is over (at most MAX_GOOD_INQUIRIES)."""
    answers = []
    for i in range(MAX_GOOD_INQUIRIES):
        if done.is_set() and i >= MIN_GOOD_INQUIRIES:
            break
        answers.append(client.inquire(BillRequestData("TEL", "MOBILE", e2e.BILLING_NUMBER), stan=f"{100000 + i:06d}"))
    return answers


@pytest.fixture
def stack(tmp_path, db_url):
    from twisted.internet import reactor

    s = e2e.Stack(reactor, tmp_path, db_url)
    yield s
    pytest_twisted.blockon(defer.ensureDeferred(s.stop()))


@pytest_twisted.ensureDeferred
async def test_the_gateway_holds_up_under_fuzzing_slowloris_and_a_flood(stack, fail_on_logged_errors):
    from twisted.internet import reactor

    await stack.start()
    factory = stack.gateway.factory
    factory.frame_timeout = 1.0  # the slowloris guard, short for the test
    port = stack.port
    before = len(fail_on_logged_errors)

    # The good switch connects and signs on first, then inquires all along;
    # the fuzzing, then the slowloris holders and the flood together.
    results = {}
    done = threading.Event()
    client = stack.client()

    def storm():
        client.connect()
        assert client.sign_on().response_code == "00"
        good = threading.Thread(target=lambda: results.update(good=good_switch(client, done)), daemon=True)
        good.start()
        results["fuzz"] = fuzz(port, SEED)
        holding = threading.Event()
        later = [threading.Thread(target=lambda: results.update(holders=hold_partial_frames(port, holding)),
                                  daemon=True),
                 threading.Thread(target=lambda: holding.wait(30) and results.update(flood=flood(port)), daemon=True)]
        for t in later:
            t.start()
        for t in later:
            t.join(60)
        done.set()
        good.join(60)
        client.close()
        return not good.is_alive() and all(not t.is_alive() for t in later)

    assert await e2e.bounded(e2e.deferToThread(storm), reactor, 140)

    # The well-behaved switch: every inquiry answered, correctly.
    good = results["good"]
    assert len(good) >= MIN_GOOD_INQUIRIES
    assert [(a.mti, a.fields["11"], a.response_code) for a in good] == [
        ("0210", f"{100000 + i:06d}", "00") for i in range(len(good))]
    assert all(a.bill.customer_name == "Layla Haddad" for a in good)

    assert results["holders"] == HOLDERS  # every partial frame's connection closed
    assert results["flood"] >= FLOOD - factory.peers.peers[0].max_connections  # beyond the cap: refused
    assert factory.counters["closed_incomplete_frame"] >= HOLDERS
    # (an undecodable frame closes its connection: the rest of its frames go nowhere)
    assert factory.counters["format_error"] > 100 and results["fuzz"]["sent"] > 300

    # Still up: a new switch is answered.
    def sign_on_again():
        with stack.client() as c:
            return c.sign_on()

    again = await e2e.in_thread(reactor, sign_on_again)
    assert again.response_code == "00"

    # No journal row half-written: all settle, and each row's last event is its state.
    for _ in range(100):
        unsettled = await stack.rows(select(transactions.c.id).where(
            transactions.c.state.in_([s.value for s in UNSETTLED])))
        if not unsettled:
            break
        await task.deferLater(reactor, 0.1, lambda: None)
    assert unsettled == []
    rows = await stack.rows(select(transactions.c.id, transactions.c.state, transactions.c.response_code))
    last = select(transaction_events.c.transaction_id, func.max(transaction_events.c.id).label("last")) \
        .group_by(transaction_events.c.transaction_id).subquery()
    events = await stack.rows(select(transaction_events.c.transaction_id, transaction_events.c.to_state)
                              .join(last, transaction_events.c.id == last.c.last))
    last_state = {e["transaction_id"]: e["to_state"] for e in events}
    for row in rows:
        assert last_state.get(row["id"]) == row["state"], row
        if row["state"] != State.EXCEPTION.value:
            assert row["response_code"], row  # answered rows keep their answer

    # The log: bounded per bad frame (dumps only for a connection's first few).
    lines = [structlog.processors.JSONRenderer()(None, None, mask_card_data(None, None, dict(e)))
             for e in fail_on_logged_errors[before:]]
    bad_frames = results["fuzz"]["sent"] + HOLDERS + FLOOD
    assert max(map(len, lines)) < 25_000
    per_frame = sum(map(len, lines)) / bad_frames
    print(f"fuzz: {results['fuzz']}, counters {dict(factory.counters)}, {len(lines)} log lines, "
          f"{per_frame:.0f} log bytes per bad frame, {len(good)} good inquiries answered")
    assert per_frame < 2_000, (len(lines), sum(map(len, lines)))
