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


# --- the load in several processes, merged ------------------------------------

def test_a_rows_load_is_split_over_workers_with_keys_that_never_collide(tmp_path):
    from billgw.atm_sim.bench_load import LoadShape, split, worker_argv

    assert split(10, 3) == [4, 3, 3] and sum(split(1001, 20)) == 1001
    shape = LoadShape(count=1001, concurrency=1000, connections=1000, workers=20)
    argvs = [worker_argv("atm-sim", shape, 9999, i, tmp_path / f"{i}.json", 123.0) for i in range(20)]

    def value(argv, flag):
        return argv[argv.index(flag) + 1]
    assert sum(int(value(a, "--count")) for a in argvs) == 1001
    assert sum(int(value(a, "--connections")) for a in argvs) == 1000
    assert max(int(value(a, "--connections")) for a in argvs) <= 64
    assert len({value(a, "--acquirer") for a in argvs}) == 20  # F32 apart: no two share a key
    assert {value(a, "--start-at") for a in argvs} == {"123.000"}
    with pytest.raises(ValueError):
        LoadShape(count=1000, concurrency=1000, connections=1000, workers=2)  # 500 links in one process


def test_merged_histograms_give_the_percentiles_of_all_latencies_not_an_average_of_each():
    from billgw.atm_sim.bench_load import merge
    from billgw.atm_sim.histogram import LatencyHistogram

    fast = LatencyHistogram.of([0.001] * 990)
    slow = LatencyHistogram.of([0.5] * 10)
    parts = [{"histogram": h.encode(), "started_at": 100.0 + i, "ended_at": 110.0 + i, "cpu_seconds": 5.5,
              "counts": {"approved": n, "payments": n, "not_sent": 0}}
             for i, (h, n) in enumerate(((fast, 990), (slow, 10)))]
    row = merge(parts)
    assert (row.approved, row.seconds, row.workers) == (1000, 11.0, 2)
    assert row.latency["count"] == 1000
    assert row.latency["p50"] == pytest.approx(0.001, rel=0.01)
    assert row.latency["p99"] == pytest.approx(0.001, rel=0.01)  # 99 % of all are fast
    assert row.latency["p99.9"] == pytest.approx(0.5, rel=0.01) and row.latency["max"] == pytest.approx(0.5, rel=0.01)
    assert row.load_cpu_percent == 50.0  # 11 CPU seconds over 11 s in two processes


def test_the_full_bench_has_the_scaling_and_full_journal_rows_and_the_quick_one_does_not():
    from billgw.atm_sim.bench import rows_for, shape_for

    full = {r.name: r for r in rows_for(False, None)}
    assert {"baseline-c1", "sqlite-c1", "baseline-c100", "sqlite-c100", "baseline-c1000", "sqlite-c1000",
            "sqlite-1m"} <= set(full)
    assert full["sqlite-c1000"].connections == 1000 and full["sqlite-1m"].journal_rows == 1_000_000
    for spec in full.values():
        shape_for(spec)  # every row's load can be split as asked
    quick = [r.name for r in rows_for(True, "postgresql+psycopg://x/y")]
    assert quick == ["baseline", "sqlite", "postgresql", "e2e", "sqlite-open100"]


def test_a_full_journal_row_is_summarised_against_the_empty_one():
    rows = with_ratios([row("baseline", 10, 2000.0), row("sqlite", 10, 500.0), row("sqlite-1m", 10, 450.0)])
    rows[2].journal_rows = 1_000_000
    assert render(rows).splitlines()[-1] == "bench summary: sqlite 0.250x sqlite-1m 0.225x sqlite-1m 0.90-of-empty"


def test_the_plots_are_pngs_of_throughput_against_concurrency_and_of_the_percentiles(tmp_path):
    from billgw.atm_sim.bench_plots import plot, scaling_series

    rows = [row("baseline-c1", 1, 900.0), row("baseline", 10, 2000.0), row("sqlite", 10, 500.0),
            row("sqlite-c1", 1, 100.0), row("sqlite-open100", 10, 100.0)]
    assert scaling_series(rows) == {"baseline": [(1, 900.0), (10, 2000.0)], "sqlite": [(1, 100.0), (10, 500.0)]}
    paths = plot(rows, tmp_path / "bench")
    assert [p.name for p in paths] == ["bench-throughput.png", "bench-latency.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_soak_growth_is_counted_after_the_warm_up():
    from billgw.atm_sim.bench_soak import growth

    samples = [(10.0, 50_000), (20.0, 80_000), (130.0, 81_000), (250.0, 81_200), (370.0, 81_600)]
    g = growth(samples, warm_up=120.0)
    assert (g["first_kib"], g["last_kib"], g["growth_kib"], g["max_kib"]) == (81_000, 81_600, 600, 81_600)
    assert g["growth_kib_per_minute"] == 150.0
    assert growth(samples[:3], warm_up=120.0) == {"samples_after_warm_up": 1}


def test_a_prefilled_journal_holds_settled_payments_the_gateway_reads_and_never_sends_again(tmp_path):
    from billgw.atm_sim.bench_prefill import count, prefill
    from billgw.gateway import journal
    from billgw.gateway.db import make_engine
    from billgw.gateway.migrate import upgrade
    from billgw.gateway.states import State
    from billgw.sms import outbox

    path = tmp_path / "journal.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    prefill(str(path), 2_000)
    assert count(str(path)) == 2_000
    with engine.begin() as conn:
        views = journal.list_all(conn)
        assert len(views) == 2_000 and {v.state for v in views} == {State.CONFIRMED}
        assert len({(v.acquirer_id, v.terminal_id, v.stan) for v in views}) == 2_000
        assert journal.find_by_keys(conn, "123455", views[0].terminal_id, views[0].stan, "0000000000") is not None
        # Every receipt already SENT: the sender has nothing to claim.
        assert outbox.claim_for_submit(conn, now=2e9, owner="t", lease_seconds=30, limit=100) == []
    engine.dispose()


def test_atm_sim_load_writes_its_latencies_as_a_histogram_the_bench_can_merge(tmp_path):
    from types import SimpleNamespace

    from billgw.atm_sim.bench_load import merge
    from billgw.atm_sim.cli import write_histogram

    report = SimpleNamespace(latencies=[0.002, 0.004, 0.250], duration=3.0,
                             counts={"approved": 3, "payments": 4, "not_sent": 1})
    path = tmp_path / "load.hdr.json"
    write_histogram(str(path), report, {"started_at": 1000.0, "ended_at": 1003.5, "cpu_at_start": 0.0})
    part = json.loads(path.read_text())
    row = merge([part])
    assert (row.approved, row.sent, row.seconds) == (3, 3, 3.5)
    assert row.latency["count"] == 3 and row.latency["max"] == pytest.approx(0.25, rel=0.01)
    assert row.latency["p50"] == pytest.approx(0.004, rel=0.01)
