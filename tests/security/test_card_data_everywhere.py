"""No card number, track or PIN block in any log line or any table (PCI DSS 3.4).

The whole gateway over real loopback sockets (the end-to-end stack:
telecom simulator, SMSC simulator, journal on SQLite or PostgreSQL), fed
by a switch that plants card data in every field that can carry text: F2,
F14, F35 (track 2), F45 (track 1), F52 (PIN block), F55, F43, F102 and the
F48 tags (billing number, bill number, inquiry reference).  The traffic
goes down every path that writes something: an inquiry, a payment the
biller declines with an error text that echoes the bill number, a local
decline, an approved payment and its reversal (receipt and reversal SMS),
an advice posted in the background, a format error (logged with its
dump) and an undecodable frame.

Afterwards every log line is rendered exactly as the gateway writes it
(the masking processor, then the JSON renderer), every column of every
table is read, and every SMS text is taken; none may contain a full test
PAN, a track or the PIN block.
"""
from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import pytest
import pytest_twisted
import structlog
from sqlalchemy import MetaData, select
from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher

from billgw.gateway.log_setup import mask_card_data
from billgw.gateway.schema import transactions
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.framing import encode_frame
from billgw.iso8583.messages import decode_response, encode_fields

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


e2e = _load("security_e2e_stack", HERE.parent / "integration" / "test_gateway_end_to_end.py")

# Public test cards (never real ones); the tracks are made up around them.
VISA = "4761739001010010"
MASTERCARD = "5555555555554444"
TRACK2 = f"{VISA}=25121010000012300000"
TRACK2_D = f"{VISA}D2512101000001230000"
TRACK1 = f"B{VISA}^HADDAD/LAYLA^25121010000000000000000"
PIN_BLOCK = "9F3C1A2B4D5E6F70"
ICC = "9F2608" + "C2A1B3D4E5F60718" + "5A08" + VISA
SECRETS = {
    "Visa test PAN": VISA,
    "Mastercard test PAN": MASTERCARD,
    "track 2 discretionary data": "25121010000012300000",
    "track 2 (D separator) data": "D2512101000001230000",
    "track 1 name": "HADDAD/LAYLA",
    "PIN block": PIN_BLOCK,
}
BILLING_NUMBER = "0791234567"


class Switch:
    """A blocking ISO 8583 client on one socket (run in a thread)."""

    def __init__(self, port: int):
        self.port = port
        self.sock = None

    def __enter__(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=e2e.TIMEOUT)
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def send(self, mti: str, fields: dict) -> None:
        self.sock.sendall(encode_frame(encode_fields(mti, fields)))

    def send_raw(self, payload: bytes) -> None:
        self.sock.sendall(encode_frame(payload))

    def receive(self):
        header = self._exactly(2)
        return decode_response(self._exactly(int.from_bytes(header, "big")))

    def exchange(self, mti: str, fields: dict):
        self.send(mti, fields)
        return self.receive()

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the gateway")
            data += chunk
        return data


def planted(stan: str, *, processing="500000", amount="000000012500", **bill) -> dict:
    """A 0200's fields with card data in every field that can carry it."""
    data = dict(biller_code="TEL", service_code="MOBILE", billing_number=BILLING_NUMBER,
                msisdn="962791234567", language="en")
    data.update(bill)
    return {
        "2": VISA, "3": processing, "4": amount, "7": "1202101500", "11": stan, "12": "101500",
        "13": "1202", "14": "2512", "32": "123456", "35": TRACK2, "37": f"633610{stan}",
        "41": "ATM00001", "43": f"PAN {MASTERCARD} AMMAN".ljust(40), "45": TRACK1,
        "48": BillRequestData(**data).to_tlv(), "49": "400", "52": PIN_BLOCK, "55": ICC,
        "102": MASTERCARD,
    }


def sign_on(stan="000001"):
    return {"7": "1202101500", "11": stan, "70": "001"}


def traffic(port: int) -> dict:
    """Every path that writes something before the receipt: card data in
    every field."""
    seen = {}
    with Switch(port) as s:
        assert s.exchange("0800", sign_on()).fields["39"] == "00"
        seen["inquiry"] = s.exchange("0200", planted("000101", processing="370000", amount="000000000000"))
        # The biller's error text echoes the bill number: "no bill <PAN> for ...".
        seen["biller declined"] = s.exchange("0200", planted("000102", bill_number=VISA))
        seen["local decline"] = s.exchange("0200", planted("000103", billing_number=MASTERCARD))
        seen["track as bill number"] = s.exchange("0200", planted("000104", bill_number=TRACK2_D[:30]))
        seen["approved"] = s.exchange("0200", planted("000105"))
    return seen


def more_traffic(port: int) -> dict:
    """Once the receipt left: its reversal (a reversal notice), an advice,
    a format error and an undecodable frame."""
    seen = {}
    with Switch(port) as s:
        assert s.exchange("0800", sign_on("000002")).fields["39"] == "00"
        reversal = planted("000105")
        for f in ("14", "35", "45", "52", "55", "43", "102"):
            reversal.pop(f)
        reversal.update({"11": "000106", "7": "1202101600",
                         "90": "0200000105" + "1202101500" + "00000123456" + "0" * 11})
        seen["reversal"] = s.exchange("0420", reversal)
        # An advice the switch debited without our answer, with a PAN as
        # bill number: posted in the background from the journal's masked copy.
        seen["advice"] = s.exchange("0220", planted("000107", bill_number=MASTERCARD))
        bad = planted("000108")
        bad["4"] = "0000000125AB"
        seen["format error"] = s.exchange("0200", bad)
        # No MTI can be read: the connection is closed (and logged with its dump).
        s.send_raw(b"\xff200" + b"\xf0" * 8 + f"16{VISA}{TRACK2}{PIN_BLOCK}".encode())
        seen["undecodable closed"] = s.closed_by_peer()
    return seen


def render(event: dict) -> str:
    """A captured event as the gateway's pipeline writes it to the log."""
    masked = mask_card_data(None, None, dict(event))
    return structlog.processors.JSONRenderer(ensure_ascii=False)(None, None, masked)


def dump_tables(engine) -> list[tuple[str, str, str]]:
    meta = MetaData()
    meta.reflect(engine)
    out = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in row._mapping.items():
                    out.append((table.name, column, str(value)))
    return out


def leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items()
            if secret in text or secret.lower() in text or secret in text.replace(" ", "")]


@pytest.fixture
def stack(reactor, tmp_path, db_url):
    s = e2e.Stack(reactor, tmp_path, db_url)
    yield s
    pytest_twisted.blockon(defer.ensureDeferred(s.stop()))


@pytest.fixture
def reactor():
    from twisted.internet import reactor as global_reactor

    return global_reactor


PAN_KEY = "test-only PAN HMAC key, 32+ characters long"


@pytest_twisted.ensureDeferred
async def test_no_card_data_in_any_log_line_table_or_sms(stack, reactor, fail_on_logged_errors, monkeypatch):
    # With the PAN's keyed hash on: the hash is kept, the card never.
    monkeypatch.setenv("BILLGW_PAN_HMAC_KEY", PAN_KEY)
    await run_and_look_everywhere(stack, reactor, fail_on_logged_errors)

    # An operator finds the card's payments by the card number, hashed.
    import io

    from billgw.gateway.cli import _journal_find

    out = io.StringIO()
    status = await e2e.bounded(e2e.deferToThread(_journal_find, stack.settings, "4761 7390 0101 0010",
                                                 {"BILLGW_PAN_HMAC_KEY": PAN_KEY}, out), reactor)
    found = out.getvalue().splitlines()
    assert status == 0
    stans = sorted(line.split(" stan ")[1][:6] for line in found)
    assert stans == ["000101", "000102", "000103", "000104", "000105", "000107"]
    assert all("476173******0010" in line for line in found) and not leaks(out.getvalue())
    out = io.StringIO()
    other = await e2e.bounded(e2e.deferToThread(_journal_find, stack.settings, MASTERCARD,
                                                {"BILLGW_PAN_HMAC_KEY": PAN_KEY}, out), reactor)
    assert other == 1  # F102 is an account, F43 free text: never hashed as the card
    wrong_key = await e2e.bounded(e2e.deferToThread(_journal_find, stack.settings, VISA,
                                                    {"BILLGW_PAN_HMAC_KEY": "another key of 32 characters...."},
                                                    io.StringIO()), reactor)
    assert wrong_key == 1


async def run_and_look_everywhere(stack, reactor, captured: list[dict]) -> None:
    twisted_lines = []

    def observe(event):
        twisted_lines.append(render({"event": formatEvent(event),
                                     "exception": event["log_failure"].getTraceback()
                                     if event.get("log_failure") else None}))

    globalLogPublisher.addObserver(observe)
    try:
        await stack.start()
        seen = await e2e.in_thread(reactor, traffic, stack.port)
        await e2e.bounded(stack.smsc.wait_for_messages(1), reactor)
        seen.update(await e2e.in_thread(reactor, more_traffic, stack.port))
        # The advice is posted in the background by the biller worker.
        for _ in range(100):
            [advised] = await stack.rows(select(transactions).where(transactions.c.stan == "000107"))
            if advised["state"] in ("EXCEPTION", "DECLINED", "CONFIRMED"):
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        await stack.sms_drained()
        await e2e.bounded(stack.smsc.wait_for_messages(2), reactor)
    finally:
        globalLogPublisher.removeObserver(observe)

    # The traffic went where it should (so the checks below looked at something).
    codes = {name: (answer.fields.get("39") if not isinstance(answer, bool) else answer)
             for name, answer in seen.items()}
    assert codes == {"inquiry": "00", "biller declined": "25", "local decline": "14",
                     "track as bill number": "25", "approved": "00", "reversal": "00", "advice": "00",
                     "format error": "30", "undecodable closed": True}
    for name, answer in seen.items():
        if not isinstance(answer, bool):
            assert not leaks(repr(answer.fields)), f"{name}: card data echoed on the wire"
    assert advised["state"] == "EXCEPTION"  # the masked bill number is no bill: a person refunds it

    lines = [render(e) for e in captured] + twisted_lines
    assert any("no bill 555555******4444" in line or "no bill 476173******0010" in line for line in lines)
    for line in lines:
        assert not leaks(line), f"card data in a log line: {line[:300]}"

    cells = await e2e.bounded(e2e.deferToThread(dump_tables, stack.engine), reactor)
    assert any(column == "masked_pan" and value == "476173******0010" for _, column, value in cells)
    from billgw.iso8583.masking import PanHasher
    assert any(column == "pan_hash" and value == PanHasher(PAN_KEY.encode())(VISA) for _, column, value in cells)
    assert any(column == "billing_number" and value == "555555******4444" for _, column, value in cells)
    for table, column, value in cells:
        assert not leaks(value), f"card data in {table}.{column}: {value[:200]}"

    texts = [m.text for m in stack.smsc.messages_received]
    assert len(texts) == 2 and all("0010" in t for t in texts)  # receipt and reversal notice: last 4 only
    for t in texts:
        assert not leaks(t), f"card data in an SMS: {t}"
