"""A receipt whose sender died mid-submit is never sent twice; one whose
sender died before submitting it is sent by the next."""
from sqlalchemy import create_engine, select

from billgw.sms import outbox
from billgw.sms.outbox import OutboxKind, OutboxState, sms_outbox


def states(engine):
    with engine.connect() as conn:
        return dict(conn.execute(select(sms_outbox.c.payment_id, sms_outbox.c.state)).all())


def test_dead_sender_rows_uncertain_if_submitting_else_claimed_again():
    engine = create_engine("sqlite://")
    outbox.metadata.create_all(engine)
    with engine.begin() as conn:
        for pid in ("p1", "p2"):
            outbox.enqueue(conn, payment_id=pid, kind=OutboxKind.RECEIPT, msisdn="962791234567",
                           language="en", text="Paid", now=100.0)
        first, second = outbox.claim_due(conn, now=100.0, owner="dead", lease_seconds=60, limit=10)
        assert (first.attempts, second.attempts) == (1, 1)
        assert outbox.begin_submit(conn, first.id, owner="dead", now=100.0)  # p1 went to the SMSC
    assert states(engine) == {"p1": "SENDING", "p2": "QUEUED"}  # p2 only reserved
    with engine.begin() as conn:  # leases still live: nobody else takes either
        assert outbox.claim_due(conn, now=150.0, owner="alive", lease_seconds=60, limit=10) == []
    with engine.begin() as conn:  # the dead sender's lease expired
        [again] = outbox.claim_due(conn, now=161.0, owner="alive", lease_seconds=60, limit=10)
        assert again.payment_id == "p2"
    assert states(engine)["p1"] == OutboxState.UNCERTAIN.value
    with engine.begin() as conn:  # the late sender can neither finish p1 nor send p2
        assert not outbox.mark_sent(conn, first.id, owner="dead", message_ids=["m1"], data_coding=0,
                                    parts=1, now=170.0)
        assert not outbox.begin_submit(conn, second.id, owner="dead", now=170.0)
        assert outbox.begin_submit(conn, again.id, owner="alive", now=170.0)


def test_receipt_cancelled_after_its_claim_is_not_submitted():
    engine = create_engine("sqlite://")
    outbox.metadata.create_all(engine)
    with engine.begin() as conn:
        outbox.enqueue(conn, payment_id="p1", kind=OutboxKind.RECEIPT, msisdn="962791234567",
                       language="en", text="Paid", now=100.0)
        [item] = outbox.claim_due(conn, now=100.0, owner="me", lease_seconds=60, limit=10)
        assert outbox.cancel_unsent(conn, "p1", now=101.0) == 1  # the payment was reversed
        assert not outbox.begin_submit(conn, item.id, owner="me", now=102.0)
    assert states(engine) == {"p1": OutboxState.CANCELLED.value}


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
    assert (rows["p1"].state, rows["p1"].smsc_message_ids, rows["p1"].parts) == ("SENT", "m1,m2", 2)
    assert (rows["p2"].state, rows["p2"].next_attempt_at) == ("FAILED", outbox.utc(130.0))
    assert (rows["p3"].state, rows["p3"].smsc_message_ids) == ("UNCERTAIN", "m3")
    assert (rows["p4"].state, rows["p4"].attempts, rows["p4"].lease_owner) == ("QUEUED", 0, None)
    with engine.begin() as conn:  # the handed-back row and the untouched one are claimable again
        again = outbox.claim_for_submit(conn, now=102.0, owner="me", lease_seconds=60, limit=10)
    assert sorted(i.payment_id for i in again) == ["p4", "p5"]
