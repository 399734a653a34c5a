"""``atm-sim bench``: what it computes from its measurements, the servers it
configures, and one real quick run (figures printed, never asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet.testing import StringTransport

from billgw.atm_sim.baseline import BaselineFactory
from billgw.atm_sim.bench import RowResult, gateway_config, render, with_ratios
from billgw.gateway.config import load_settings
from billgw.iso8583.framing import Framer, encode_frame
from billgw.iso8583.messages import decode_request, decode_response, encode_fields
from billgw.iso8583.bill_data import BillRequestData

BIN = Path(sys.executable).parent


def row(name, concurrency, throughput, sms=None):
    return RowResult(name, concurrency, 4, 100, 100, 1.0, throughput, 1.0, 2.0, 2.5, 3.0, 1.5, 50.0,
                     sms_per_second=sms)


def test_ratios_are_taken_at_the_same_concurrency_and_summarised_on_the_last_line():
    rows = with_ratios([row("baseline", 10, 2000.0), row("sqlite", 10, 500.0, sms=480.0),
                        row("baseline-c100", 100, 4000.0), row("sqlite-c100", 100, 400.0),
                        row("sqlite-open100", 10, 100.0)])
    assert [r.ratio for r in rows] == [1.0, 0.25, 1.0, 0.1, None]
    text = render(rows)
    assert text.splitlines()[-1] == ("bench summary: sqlite 0.250x sqlite-c100 0.100x sms-drain 480/s "
                                     "sqlite-open100 p99 2.0ms")


@pytest.mark.parametrize("biller", ["instant", "telecom"])
def test_each_gateway_row_runs_a_configuration_the_gateway_accepts(tmp_path, biller):
    path = tmp_path / "billgw.toml"
    path.write_text(gateway_config(port=9999, db_url="sqlite:///x.sqlite", smsc_port=2776, biller=biller,
                                   telecom_port=8082))
    settings = load_settings(path, environ={})
    [code] = settings.billers
    assert settings.billers[code].adapter == ("instant" if biller == "instant" else "telecom_soap")
    assert settings.sms.port == 2776 and settings.listener.endpoint == "tcp:9999:interface=127.0.0.1"


def test_the_baseline_approves_with_the_gateways_shape_of_answer():
    proto = BaselineFactory().buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    bill = BillRequestData("BENCH", "ANY", "0790000000")
    fields = {"2": "4761739001010010", "3": "500000", "4": "000000001000", "7": "1202050000", "11": "000001",
              "12": "050000", "13": "1202", "32": "123456", "37": "633605000001", "41": "ATM00001",
              "48": bill.to_tlv(), "49": "400"}
    assert decode_request(encode_fields("0200", fields)).mti == "0200"
    proto.dataReceived(encode_frame(encode_fields("0200", fields)))
    [frame] = Framer("binary2", 4096).feed(transport.value())
    answer = decode_response(frame)
    assert (answer.mti, answer.response_code, answer.fields["11"]) == ("0210", "00", "000001")
    assert answer.bill.payment_reference and answer.bill.receipt_number and answer.fields["38"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_quick_run_measures_every_row_and_every_payment_is_approved(tmp_path):
    report = tmp_path / "bench.json"
    done = subprocess.run([str(BIN / "atm-sim"), "bench", "--quick", "--report", str(report),
                           "--workdir", str(tmp_path / "work")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=170, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].startswith("bench summary: sqlite ")
    rows = json.loads(report.read_text())["rows"]
    assert [r["name"] for r in rows] == ["baseline", "sqlite", "e2e", "sqlite-open100"]
    assert all(r["approved"] == r["payments"] for r in rows)  # the bench measured payments, not errors
    assert all(r["sms_received"] == r["approved"] for r in rows if r["name"] != "baseline")
    drain = json.loads(report.read_text())["sms_drain"]  # atm_sim/bench_sms.py
    assert [(d["window"], d["receipts"]) for d in drain] == [(1, 200), (10, 200)]
    assert all(d["per_second"] > 0 for d in drain)
