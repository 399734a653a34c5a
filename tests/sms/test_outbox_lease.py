"""A receipt whose sender died mid-submit is never sent twice; one whose
sender died before submitting it is sent by the next."""
from sqlalchemy import create_engine, select

from billgw.sms import outbox
from billgw.sms.outbox import OutboxKind, OutboxState, sms_outbox


def states(engine):
    with engine.connect() as conn:
        return dict(conn.execute(select(sms_outbox.c.payment_id, sms_outbox.c.state)).all())


def test_a_dead_senders_rows_become_uncertain_and_are_never_sent_again():
    engine = create_engine("sqlite://")
    outbox.metadata.create_all(engine)
    with engine.begin() as conn:
        for pid in ("p1", "p2"):
            outbox.enqueue(conn, payment_id=pid, kind=OutboxKind.RECEIPT, msisdn="962791234567",
                           language="en", text="Paid", now=100.0)
        [first] = outbox.claim_for_submit(conn, now=100.0, owner="dead", lease_seconds=60, limit=1)
    assert states(engine) == {"p1": "SENDING", "p2": "QUEUED"}
    with engine.begin() as conn:  # its lease still live: nobody else takes p1
        [p2] = outbox.claim_for_submit(conn, now=150.0, owner="alive", lease_seconds=60, limit=10)
        assert p2.payment_id == "p2"
    with engine.begin() as conn:  # the dead sender's lease expired: p1 may be at the SMSC
        assert outbox.claim_for_submit(conn, now=161.0, owner="alive", lease_seconds=60, limit=10) == []
    assert states(engine)["p1"] == OutboxState.UNCERTAIN.value
    with engine.begin() as conn:  # the late sender cannot record p1 over the verdict
        assert outbox.record_outcomes(conn, [outbox.Outcome(first.id, OutboxState.SENT, ("m1",), 0, 1)],
                                      owner="dead", now=170.0) == [False]
    assert states(engine)["p1"] == OutboxState.UNCERTAIN.value


def test_a_receipt_cancelled_before_its_claim_is_never_submitted_and_one_claimed_is_left():
    engine = create_engine("sqlite://")
    outbox.metadata.create_all(engine)
    with engine.begin() as conn:
        for pid in ("p1", "p2"):
            outbox.enqueue(conn, payment_id=pid, kind=OutboxKind.RECEIPT, msisdn="962791234567",
                           language="en", text="Paid", now=100.0)
        assert outbox.cancel_unsent(conn, "p1", now=101.0) == 1  # the payment was reversed
        [claimed] = outbox.claim_for_submit(conn, now=102.0, owner="me", lease_seconds=60, limit=10)
        assert claimed.payment_id == "p2"
        # Claimed is on its way to the SMSC: it counts as left (a reversal
        # notice follows), it is not cancelled under the sender.
        assert outbox.cancel_unsent(conn, "p2", now=103.0) == 0
    assert states(engine) == {"p1": OutboxState.CANCELLED.value, "p2": OutboxState.SENDING.value}


def test_windowed_claim_and_batched_outcomes_on_each_database(engine):
    """claim_for_submit + record_outcomes, on SQLite and PostgreSQL (the
    journal's migrated schema): SENT, FAILED, UNCERTAIN and a hand-back that
    refunds the attempt, in one transaction each."""
    from billgw.sms.outbox import Outcome

    with engine.begin() as conn:
        for pid in ("p1", "p2", "p3", "p4", "p5"):
            outbox.enqueue(conn, payment_id=pid, kind=OutboxKind.RECEIPT, msisdn="962791234567",
                           language="en", text="Paid", now=100.0)
    with engine.begin() as conn:
        items = outbox.claim_for_submit(conn, now=100.0, owner="me", lease_seconds=60, limit=4)
        assert [(i.payment_id, i.attempts, i.state) for i in items] == [
            ("p1", 1, "SENDING"), ("p2", 1, "SENDING"), ("p3", 1, "SENDING"), ("p4", 1, "SENDING")]
    assert states(engine) == {"p1": "SENDING", "p2": "SENDING", "p3": "SENDING", "p4": "SENDING", "p5": "QUEUED"}
    by = {i.payment_id: i.id for i in items}
    with engine.begin() as conn:
        done = outbox.record_outcomes(conn, [
            Outcome(by["p1"], OutboxState.SENT, ("m1", "m2"), 8, 2),
            Outcome(by["p2"], OutboxState.FAILED, error="throttled", retry_at=130.0),
            Outcome(by["p3"], OutboxState.UNCERTAIN, ("m3",), error="no answer"),
            Outcome(by["p4"], OutboxState.QUEUED, error="link down"),
        ], owner="me", now=101.0)
        assert outbox.record_outcomes(conn, [Outcome(by["p1"], OutboxState.SENT, ("x",), 0, 1)],
                                      owner="me", now=102.0) == [False]  # already recorded
    assert done == [True] * 4
    with engine.connect() as conn:
        rows = {r.payment_id: r for r in conn.execute(select(sms_outbox))}
        ids = {pid: outbox.message_ids(conn, r.id) for pid, r in rows.items()}
    assert (rows["p1"].state, ids["p1"], rows["p1"].parts) == ("SENT", ["m1", "m2"], 2)
    assert (rows["p2"].state, rows["p2"].next_attempt_at) == ("FAILED", outbox.utc(130.0))
    assert (rows["p3"].state, ids["p3"]) == ("UNCERTAIN", ["m3"])
    assert (rows["p4"].state, rows["p4"].attempts, rows["p4"].lease_owner) == ("QUEUED", 0, None)
    with engine.begin() as conn:  # the handed-back row and the untouched one are claimable again
        again = outbox.claim_for_submit(conn, now=102.0, owner="me", lease_seconds=60, limit=10)
    assert sorted(i.payment_id for i in again) == ["p4", "p5"]
