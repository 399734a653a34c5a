"""A receipt whose sender died mid-submit is never sent twice."""
from sqlalchemy import create_engine, select

from billgw.sms import outbox
from billgw.sms.outbox import OutboxKind, OutboxState, sms_outbox


def test_expired_sending_lease_becomes_uncertain_not_resent():
    engine = create_engine("sqlite://")
    outbox.metadata.create_all(engine)
    with engine.begin() as conn:
        outbox.enqueue(conn, payment_id="p1", kind=OutboxKind.RECEIPT, msisdn="962791234567",
                       language="en", text="Paid", now=100.0)
        outbox.enqueue(conn, payment_id="p2", kind=OutboxKind.RECEIPT, msisdn="962791234567",
                       language="en", text="Paid", now=100.0)
        [first] = outbox.claim_due(conn, now=100.0, owner="dead", lease_seconds=60, limit=1)
        assert first.payment_id == "p1"
    with engine.begin() as conn:  # the dead sender's lease has not expired yet
        [second] = outbox.claim_due(conn, now=150.0, owner="alive", lease_seconds=60, limit=10)
        assert second.payment_id == "p2"
    with engine.begin() as conn:  # now it has: p1 is uncertain, and nobody claims it
        assert outbox.claim_due(conn, now=161.0, owner="alive", lease_seconds=60, limit=10) == []
        states = dict(conn.execute(select(sms_outbox.c.payment_id, sms_outbox.c.state)).all())
    assert states == {"p1": OutboxState.UNCERTAIN.value, "p2": OutboxState.SENDING.value}
    with engine.begin() as conn:  # the late sender cannot mark it sent any more
        assert not outbox.mark_sent(conn, first.id, owner="dead", message_ids=["m1"], data_coding=0,
                                    parts=1, now=170.0)
