"""atm-sim against a tiny scripted gateway on a loopback port: what it sends
(MTI, F3, F4 in minor units, F48 tags), what it prints, and its exit status."""
import json
import socket
import threading

import pytest

from billgw.atm_sim import cli
from billgw.atm_sim.client import (
    Client,
    NoAnswer,
    format_minor_units,
    rrn_for,
    time_fields,
    to_minor_units,
)
from billgw.iso8583.bill_data import BillLine, BillRequestData, BillResponseData, decode_tlv
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.messages import decode_request, describe_fields, encode_fields

pytestmark = pytest.mark.timeout(20)


class ScriptedGateway:
    """Accepts one connection and answers each request frame with whatever
    ``script(payload)`` returns: a list of payloads (possibly empty), or None
    to close the connection.

    Records every payload received, so tests assert the client's bytes."""

    def __init__(self, script, framing="binary2"):
        self.script = script
        self.framing = framing
        self.received: list[bytes] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._listener.settimeout(10)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        framer = Framer(self.framing, max_length=4096)
        with conn:
            conn.settimeout(10)
            for _ in range(50):  # bounded: a test never needs more reads
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for payload in framer.feed(data):
                    self.received.append(payload)
                    answers = self.script(payload)
                    if answers is None:
                        return
                    if answers:
                        conn.sendall(b"".join(encode_frame(a, self.framing) for a in answers))

    def close(self):
        self._listener.close()
        self._thread.join(timeout=10)


@pytest.fixture
def gateway_factory():
    started = []

    def start(script, framing="binary2"):
        server = ScriptedGateway(script, framing)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


INQUIRY_BILL = BillResponseData(
    customer_name="Ahmad Saleh", due_amount=12500, due_date="20240115", fee=250,
    bills=(BillLine("2024-01", 7500, "20240115"), BillLine("2024-02", 5000, "20240215")),
    inquiry_reference="INQ-7",
)


def happy(payload, bill_answer=INQUIRY_BILL, code="00", **extra):
    """Answer 0800 with 0810/00 and 0200 with 0210 ``code`` built by our codec."""
    request = decode_request(payload)
    if request.mti == "0800":
        return [request.respond("00").encode()]
    return [request.respond_bill(code, bill=bill_answer, **extra).encode()]


def run(argv, capsys):
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def base_args(port, command="inquire", *extra):
    return [command, "--port", str(port), "--biller", "TEL", "--service", "MOBILE",
            "--billing-number", "0791234567", "--timeout", "5", *extra]


def test_inquire_signs_on_then_sends_the_inquiry_and_prints_the_bill(gateway_factory, capsys):
    gw = gateway_factory(happy)
    status, out, _ = run(base_args(gw.port), capsys)
    assert status == 0
    assert [p[:4] for p in gw.received] == [b"0800", b"0200"]
    sign_on = decode_request(gw.received[0])
    assert sign_on.fields["70"] == "001" and sign_on.fields["32"] == "123456"
    sent = describe_fields(gw.received[1])
    assert (sent["3"], sent["4"], sent["49"], sent["41"], sent["18"]) == (
        "370000", "000000000000", "400", "ATM00001", "6011")
    assert decode_tlv(sent["48"]) == [("BC", "TEL"), ("SC", "MOBILE"), ("BN", "0791234567"), ("LG", "en")]
    assert b"4761739001010010" in gw.received[1]  # the documented test PAN by default
    assert len(sent["37"]) == 12 and sent["37"].isdigit()
    assert "Response code      00 Approved" in out
    assert "Customer name      Ahmad Saleh" in out
    assert "Due amount         12.500 (400)" in out
    assert "Fee                0.250 (400)" in out
    assert "Bill               2024-01  7.500  due 20240115" in out
    assert "Bill               2024-02  5.000  due 20240215" in out
    assert "Inquiry reference  INQ-7" in out


def test_pay_sends_minor_units_and_receipt_tags_and_prints_the_receipt(gateway_factory, capsys):
    approval = BillResponseData(receipt_number="ORJ-778", payment_reference="PAY-000042")
    gw = gateway_factory(lambda p: happy(p, approval, auth_code="004711", settlement_date="0203"))
    status, out, _ = run(base_args(gw.port, "pay", "--amount", "12.5", "--currency", "400",
                                   "--msisdn", "962791234567", "--language", "ar",
                                   "--bill-number", "2024-01", "--inquiry-reference", "INQ-7",
                                   "--no-sign-on"), capsys)
    assert status == 0
    assert len(gw.received) == 1  # --no-sign-on
    payload = gw.received[0]
    assert payload[:4] == b"0200"
    sent = describe_fields(payload)
    assert sent["3"] == "500000" and sent["4"] == "000000012500"
    assert dict(decode_tlv(sent["48"])) == {"BC": "TEL", "SC": "MOBILE", "BN": "0791234567", "BL": "2024-01",
                                            "MS": "962791234567", "LG": "ar", "IR": "INQ-7"}
    assert "Amount             12.500 (400)" in out
    assert "Receipt number     ORJ-778" in out
    assert "Payment reference  PAY-000042" in out
    assert "Auth code          004711" in out


def test_pay_json_output(gateway_factory, capsys):
    approval = BillResponseData(receipt_number="R1", payment_reference="P1")
    gw = gateway_factory(lambda p: happy(p, approval, auth_code="A1B2C3"))
    status, out, _ = run(base_args(gw.port, "pay", "--amount", "0.29", "--currency", "978", "--json",
                                   "--stan", "42", "--transmission-datetime", "0203140509"), capsys)
    assert status == 0
    result = json.loads(out)
    assert result["response_code"] == "00" and result["response_text"] == "Approved"
    assert result["amount_minor"] == 29 and result["amount"] == "0.29"  # EUR: 2 decimals, never a float
    assert (result["stan"], result["transmission_datetime"]) == ("000042", "0203140509")
    assert (result["receipt_number"], result["payment_reference"], result["auth_code"]) == ("R1", "P1", "A1B2C3")
    assert result["approved"] is True


def test_decline_prints_code_and_meaning_and_exits_1(gateway_factory, capsys):
    gw = gateway_factory(lambda p: happy(p, None, code="14"))
    status, out, _ = run(base_args(gw.port, "pay", "--amount", "5"), capsys)
    assert status == 1
    assert "Response code      14 Invalid billing number" in out
    assert describe_fields(gw.received[1])["4"] == "000000005000"


def test_codes_file_gives_the_networks_meaning(gateway_factory, capsys, tmp_path):
    codes = tmp_path / "codes.toml"
    codes.write_text('[response_codes.invalid_billing_number]\ncode = "B4"\ntext = "Unknown subscriber"\n')
    gw = gateway_factory(lambda p: happy(p, None, code="B4"))
    status, out, _ = run(base_args(gw.port, "inquire", "--codes", str(codes)), capsys)
    assert status == 1
    assert "Response code      B4 Unknown subscriber" in out


def test_exact_repeat_sends_identical_bytes(gateway_factory, capsys):
    repeat = ("--amount", "12.500", "--no-sign-on", "--stan", "123", "--transmission-datetime", "0203140509")
    first, second = gateway_factory(happy), gateway_factory(happy)
    assert run(base_args(first.port, "pay", *repeat), capsys)[0] == 0
    assert run(base_args(second.port, "pay", *repeat), capsys)[0] == 0
    assert len(first.received) == 1 and first.received == second.received
    gw = first
    sent = describe_fields(gw.received[0])
    assert (sent["11"], sent["7"], sent["12"], sent["13"], sent["37"]) == (
        "000123", "0203140509", "140509", "0203", "140509000123")


def test_answers_to_other_requests_are_skipped(gateway_factory):
    """Responses are matched on F11 + F7, not on order."""
    def script(payload):
        request = decode_request(payload)
        stale = dict(request.respond("96").fields)
        stale["11"] = "999999"
        return [encode_fields("0210", stale), request.respond_bill("00", bill=INQUIRY_BILL).encode()]

    gw = gateway_factory(script)
    with Client("127.0.0.1", gw.port, timeout=5) as client:
        response = client.inquire(BillRequestData("TEL", "MOBILE", "0791234567"), stan="000007")
    assert response.fields["11"] == "000007" and response.response_code == "00"


def test_gateway_echo_test_is_answered_while_waiting(gateway_factory):
    """The gateway may send its own 0800 echo while a 0200 is outstanding."""
    pending = []
    answers = []

    def script(payload):
        if payload[:4] == b"0200":
            pending.append(decode_request(payload))
            return [encode_fields("0800", {"7": "0203140000", "11": "555555", "70": "301"})]
        answers.append(payload)  # our 0810: now release the 0210
        return [pending[0].respond_bill("00").encode()]

    gw = gateway_factory(script)
    with Client("127.0.0.1", gw.port, timeout=5) as client:
        response = client.inquire(BillRequestData("TEL", "MOBILE", "0791234567"))
    assert response.response_code == "00"
    echo_answer = describe_fields(answers[0])
    assert (echo_answer["t"], echo_answer["11"], echo_answer["70"], echo_answer["39"]) == (
        "0810", "555555", "301", "00")


def test_ascii4_framing_on_the_wire(gateway_factory, capsys):
    gw = gateway_factory(happy, framing="ascii4")
    status, _, _ = run(base_args(gw.port, "inquire", "--framing", "ascii4"), capsys)
    assert status == 0 and [p[:4] for p in gw.received] == [b"0800", b"0200"]


def test_no_answer_exits_2_within_the_timeout(gateway_factory, capsys):
    gw = gateway_factory(lambda payload: [])
    status, out, err = run(base_args(gw.port, "inquire", "--timeout", "0.5", "--json"), capsys)
    assert status == 2
    assert "no answer within 0.5 s" in err
    assert json.loads(out) == {"error": "no answer within 0.5 s"}


def test_connection_refused_exits_2(capsys):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    status, _, err = run(base_args(port), capsys)
    assert status == 2 and "cannot connect" in err


def test_closed_connection_exits_2(gateway_factory, capsys):
    gw = gateway_factory(lambda payload: None)  # hang up on the first request
    status, _, err = run(base_args(gw.port, "inquire", "--timeout", "3"), capsys)
    assert status == 2
    assert "closed the connection" in err or "receive failed" in err


@pytest.mark.parametrize("text,exponent,minor", [
    ("12.500", 3, 12500), ("12.5", 3, 12500), ("12", 3, 12000), ("0.29", 2, 29), ("0.1", 2, 10),
    ("1.005", 3, 1005), ("999999999.999", 3, 999999999999), ("7", 0, 7),
])
def test_amount_to_minor_units(text, exponent, minor):
    assert to_minor_units(text, exponent) == minor


@pytest.mark.parametrize("text,exponent", [
    ("12.5001", 3), ("0.001", 2), ("1e3", 2), ("-1", 2), ("NaN", 2), ("", 2), ("1,5", 2),
    ("1000000000000", 0),
])
def test_amount_rejected(text, exponent):
    with pytest.raises(ValueError):
        to_minor_units(text, exponent)


def test_bad_amount_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(base_args(1, "pay", "--amount", "12.3456"))
    assert info.value.code == 2
    assert "more than 3 decimal places" in capsys.readouterr().err


def test_format_minor_units_and_time_fields():
    assert format_minor_units(12500, 3) == "12.500"
    assert format_minor_units(5, 2) == "0.05"
    assert format_minor_units(7, 0) == "7"
    assert time_fields("0203140509") == {"7": "0203140509", "12": "140509", "13": "0203"}
    assert rrn_for("0203140509", "000123") == "140509000123"
    with pytest.raises(ValueError):
        time_fields("02031405")


def test_client_timeout_raises_no_answer(gateway_factory):
    gw = gateway_factory(lambda payload: [])
    with Client("127.0.0.1", gw.port, timeout=0.3) as client:
        with pytest.raises(NoAnswer, match="no answer within 0.3 s"):
            client.sign_on()
