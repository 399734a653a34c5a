"""billgw audit's SMS-side rules: receipts stuck in the queue (past
[sms] queued_alert_after), a bind refused for its credentials (read from
sms_link_health, written by the gateway process), links not bound, payments
that went on without a receipt."""
import datetime as dt

from twisted.internet.task import Clock

from billgw.gateway.audit.sms_health import (
    SmsHealthSnapshot,
    WaitingReceipt,
    load_sms_health,
    sms_health_findings,
)
from billgw.gateway.schema import transactions
from billgw.sms.health import LinkHealthRecorder, LinkHealthRow, read_health, write_health
from billgw.sms.outbox import sms_outbox

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def at(seconds_ago: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(NOW - seconds_ago, dt.timezone.utc).replace(tzinfo=None)


def categories(items):
    return sorted((f.category, f.payment_id) for f in items)


def test_only_receipts_waiting_past_the_limit_are_stuck():
    snapshot = SmsHealthSnapshot(
        waiting=(WaitingReceipt(1, "p1", "receipt", "QUEUED", 0, at(901)),
                 WaitingReceipt(2, "p2", "receipt", "FAILED", 3, at(5000), "SmppSubmitError: throttled"),
                 WaitingReceipt(3, "p3", "receipt", "QUEUED", 0, at(899))),
        links=(), paid_without_receipt=0)
    findings, notes = sms_health_findings(snapshot, now=NOW, queued_alert_after=900)
    assert categories(findings) == [("sms_stuck", "p1"), ("sms_stuck", "p2")]
    assert findings[1].details["age_seconds"] == 5000 and "throttled" in findings[1].details["last_error"]
    assert notes == []


def test_a_refused_bind_is_broken_and_a_down_or_silent_one_a_note():
    links = (
        LinkHealthRow("billgw@smsc-a:2775", "REFUSED", 0x0E, "bind refused", "gw1:10", at(30)),
        LinkHealthRow("billgw@smsc-b:2775", "DOWN", None, "cannot connect", "gw1:10", at(10)),
        LinkHealthRow("billgw@smsc-c:2775", "BOUND", 0, None, "gw2:11", at(3600)),  # its process gone?
        LinkHealthRow("billgw@smsc-d:2775", "BOUND", 0, None, "gw2:11", at(20)),
        LinkHealthRow("billgw@smsc-e:2775", "STOPPED", 0, None, "gw3:12", at(86400)),
    )
    findings, notes = sms_health_findings(SmsHealthSnapshot((), links, 2), now=NOW, queued_alert_after=900)
    [refused] = findings
    assert refused.category == "sms_bind_refused" and "0x0000000E" in refused.message
    assert refused.details["link"] == "billgw@smsc-a:2775"
    assert [(n.category, n.details.get("link")) for n in notes] == [
        ("sms_link_not_bound", "billgw@smsc-b:2775"), ("sms_link_not_bound", "billgw@smsc-c:2775"),
        ("sms_invalid_msisdn", None)]


def _outbox(conn, pid, state, created):
    conn.execute(sms_outbox.insert().values(
        payment_id=pid, kind="receipt", msisdn="962791234567", language="en", text="t", state=state,
        attempts=1, next_attempt_at=created, created_at=created, updated_at=created))


def _payment(conn, pid, msisdn):
    conn.execute(transactions.insert().values(
        id=pid, kind="payment", mti="0200", processing_code="500000", acquirer_id="1", terminal_id="T1",
        stan=pid[-6:], transmission_dt="0101000000", rrn="1", fingerprint="f", amount=1, currency="400",
        fee=0, state="CONFIRMED", msisdn=msisdn, created_at=at(10), updated_at=at(10)))


def test_the_loader_reads_old_waiting_receipts_link_rows_and_payments_without_receipt(engine):
    with engine.begin() as conn:
        _outbox(conn, "p1", "QUEUED", at(1000))
        _outbox(conn, "p2", "SENT", at(1000))
        _outbox(conn, "p3", "FAILED", at(100))
        _payment(conn, "pay000001", "")          # given but invalid: paid without a receipt
        _payment(conn, "pay000002", None)        # no number given
        _payment(conn, "pay000003", "962791234567")
        write_health(conn, link="billgw@h:1", state="REFUSED", last_bind_status=0x0E, last_error="x" * 900,
                     owner="gw:1", now=NOW - 5)
        write_health(conn, link="billgw@h:1", state="REFUSED", last_bind_status=0x0F, last_error="again",
                     owner="gw:2", now=NOW)  # the last writer wins, one row per bind
    snapshot = load_sms_health(engine, now=NOW, queued_alert_after=900)
    assert [w.payment_id for w in snapshot.waiting] == ["p1"]
    assert snapshot.paid_without_receipt == 1
    [link] = snapshot.links
    assert (link.state, link.last_bind_status, link.owner, link.last_error) == ("REFUSED", 0x0F, "gw:2", "again")


class FakeLink:
    def __init__(self):
        self.state = "CONNECTING"
        self.status = None

    def health(self):
        return {"state": self.state, "last_bind_status": self.status, "last_error": None}


def test_the_recorder_writes_on_change_on_a_heartbeat_and_stopped_at_the_end(sync_pool):
    clock, link = Clock(), FakeLink()
    clock.advance(NOW)
    writes = []

    def run(fn, *args, **kwargs):
        writes.append(kwargs.get("state"))
        return sync_pool.run(fn, *args, **kwargs)

    recorder = LinkHealthRecorder(run_in_db=run, link=link, clock=clock, name="billgw@h:1", owner="gw:1",
                                  interval=5, heartbeat=60)
    recorder.startService()
    clock.advance(5)
    clock.advance(5)  # unchanged: nothing written
    link.state, link.status = "REFUSED", 0x0E
    clock.advance(5)
    assert writes == ["CONNECTING", "REFUSED"]
    clock.advance(60)  # the heartbeat rewrites it, so a live process's row stays fresh
    assert writes == ["CONNECTING", "REFUSED", "REFUSED"]
    recorder.stopService()
    assert writes[-1] == "STOPPED"
    with sync_pool.engine.connect() as conn:
        [row] = read_health(conn)
    assert (row.link, row.state, row.owner) == ("billgw@h:1", "STOPPED", "gw:1")
