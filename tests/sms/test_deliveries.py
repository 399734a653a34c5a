"""Receipts into the outbox on every database (the migrated schema): parts
rows, matching by id across case/zeros/base and SMSC, a multi-part
message's final state, duplicates, and the local expiry."""
from sqlalchemy import select

from billgw.sms import outbox
from billgw.sms.deliveries import IncomingReceipt, record_deliveries
from billgw.sms.dlr import DeliveryReceipt
from billgw.sms.outbox import Outcome, OutboxKind, OutboxState, sms_outbox, sms_outbox_events, sms_outbox_parts

T0 = 1_700_000_000.0


def sent(engine, payment_id, ids, *, smsc="main", now=T0):
    """A receipt claimed and accepted by the SMSC with these part ids."""
    with engine.begin() as conn:
        row_id = outbox.enqueue(conn, payment_id=payment_id, kind=OutboxKind.RECEIPT, msisdn="962791234567",
                                language="en", text="Paid", now=now)
        [item] = [i for i in outbox.claim_for_submit(conn, now=now, owner="gw", lease_seconds=60, limit=10)
                  if i.id == row_id]
        assert outbox.record_outcomes(conn, [Outcome(
            row_id, OutboxState.SENT, tuple(ids), 0, len(ids), part_times=tuple(now + n for n in range(len(ids))),
            smsc=smsc, attempt=item.attempts, resends=item.resends)], owner="gw", now=now + 5) == [True]
    return row_id


def receive(engine, message_id, stat, *, smsc="main", at=T0 + 60, error=None):
    with engine.begin() as conn:
        return record_deliveries(conn, [IncomingReceipt(smsc, DeliveryReceipt(message_id, stat, error), at)])[0]


def state(engine, row_id):
    with engine.connect() as conn:
        return conn.execute(select(sms_outbox.c.state).where(sms_outbox.c.id == row_id)).scalar_one()


def parts(engine, row_id):
    with engine.connect() as conn:
        return conn.execute(select(sms_outbox_parts).where(sms_outbox_parts.c.outbox_id == row_id)
                            .order_by(sms_outbox_parts.c.part_number)).all()


def test_each_part_is_a_row_with_its_id_and_submit_time(engine):
    row_id = sent(engine, "P1", ["AB01", "AB02"])
    rows = parts(engine, row_id)
    assert [(p.part_number, p.message_id, p.message_key, p.smsc, p.attempt) for p in rows] == [
        (1, "AB01", "ab01", "main", 1), (2, "AB02", "ab02", "main", 1)]
    assert [p.submitted_at for p in rows] == [outbox.utc(T0), outbox.utc(T0 + 1)]
    assert [p.dlr_stat for p in rows] == [None, None]


def test_all_parts_delivered_makes_the_message_delivered(engine):
    row_id = sent(engine, "P1", ["AB01", "AB02"])
    first = receive(engine, "ab01", "DELIVRD")
    assert (first.matched, first.part_number, first.row_state) == (True, 1, "SENT")
    second = receive(engine, "0000AB02", "DELIVRD", at=T0 + 61)
    assert (second.matched, second.row_state) == (True, "DELIVERED")
    assert state(engine, row_id) == "DELIVERED"
    assert [(p.dlr_stat, p.dlr_at) for p in parts(engine, row_id)] == [
        ("DELIVRD", outbox.utc(T0 + 60)), ("DELIVRD", outbox.utc(T0 + 61))]


def test_one_undelivered_part_makes_the_message_undeliverable_at_once(engine):
    row_id = sent(engine, "P1", ["1", "2", "3"])
    assert receive(engine, "2", "UNDELIV", error="034").row_state == "UNDELIVERABLE"
    with engine.connect() as conn:
        row = conn.execute(select(sms_outbox).where(sms_outbox.c.id == row_id)).one()
    assert (row.state, row.last_error) == ("UNDELIVERABLE", "part 2: UNDELIV err:034")
    # The other parts' receipts are still recorded; the message stays undeliverable.
    assert receive(engine, "1", "DELIVRD").row_state == "UNDELIVERABLE"
    assert receive(engine, "3", "DELIVRD").row_state == "UNDELIVERABLE"
    assert [p.dlr_stat for p in parts(engine, row_id)] == ["DELIVRD", "UNDELIV", "DELIVRD"]


def test_an_expired_part_makes_the_message_expired(engine):
    row_id = sent(engine, "P1", ["x1"])
    assert receive(engine, "X1", "EXPIRED").row_state == "EXPIRED"
    assert state(engine, row_id) == "EXPIRED"


def test_a_repeated_receipt_does_not_undo_the_first_final_one(engine):
    row_id = sent(engine, "P1", ["m1"])
    assert receive(engine, "m1", "DELIVRD").row_state == "DELIVERED"
    again = receive(engine, "m1", "UNDELIV")
    assert (again.duplicate, again.row_state, state(engine, row_id)) == (True, "DELIVERED", "DELIVERED")


def test_an_intermediate_receipt_is_kept_and_the_final_one_decides(engine):
    row_id = sent(engine, "P1", ["m1"])
    assert receive(engine, "m1", "ENROUTE").row_state == "SENT"
    assert receive(engine, "m1", "DELIVRD").row_state == "DELIVERED"
    assert parts(engine, row_id)[0].dlr_stat == "DELIVRD"


def test_hex_in_the_response_and_decimal_in_the_receipt_match(engine):
    row_id = sent(engine, "P1", ["000000FF"])
    assert receive(engine, "255", "DELIVRD").row_state == "DELIVERED"
    assert state(engine, row_id) == "DELIVERED"


def test_the_exact_id_wins_over_the_other_bases_reading(engine):
    dec = sent(engine, "P1", ["255"])  # an SMSC with decimal ids...
    hexa = sent(engine, "P2", ["ff"])  # ...and one whose ids read as hex
    assert receive(engine, "255", "DELIVRD").outbox_id == dec
    assert receive(engine, "FF", "UNDELIV").outbox_id == hexa
    assert (state(engine, dec), state(engine, hexa)) == ("DELIVERED", "UNDELIVERABLE")


def test_receipts_are_matched_within_their_smsc(engine):
    row_id = sent(engine, "P1", ["42"], smsc="zain")
    assert receive(engine, "42", "DELIVRD", smsc="orange").matched is False
    assert state(engine, row_id) == "SENT"
    assert receive(engine, "42", "DELIVRD", smsc="zain").row_state == "DELIVERED"


def test_an_unknown_id_is_unmatched_and_changes_nothing(engine):
    row_id = sent(engine, "P1", ["m1"])
    assert receive(engine, "nope", "DELIVRD").matched is False
    assert state(engine, row_id) == "SENT"


def test_the_parts_of_an_uncertain_row_get_their_receipts_but_the_row_stays_uncertain(engine):
    with engine.begin() as conn:
        row_id = outbox.enqueue(conn, payment_id="P1", kind=OutboxKind.RECEIPT, msisdn="962791234567",
                                language="en", text="Paid", now=T0)
        [item] = outbox.claim_for_submit(conn, now=T0, owner="gw", lease_seconds=60, limit=1)
        outbox.record_outcomes(conn, [Outcome(row_id, OutboxState.UNCERTAIN, ("u1",), error="no answer",
                                              smsc="main", attempt=item.attempts)], owner="gw", now=T0)
    assert receive(engine, "u1", "DELIVRD").row_state == "UNCERTAIN"
    assert parts(engine, row_id)[0].dlr_stat == "DELIVRD"


def test_a_receipt_not_submitted_within_expire_after_expires_and_is_not_sent(engine):
    with engine.begin() as conn:
        old = outbox.enqueue(conn, payment_id="OLD", kind=OutboxKind.RECEIPT, msisdn="962791234567",
                             language="en", text="Paid", now=T0)
        fresh = outbox.enqueue(conn, payment_id="NEW", kind=OutboxKind.RECEIPT, msisdn="962791234567",
                               language="en", text="Paid", now=T0 + 86000)
    with engine.begin() as conn:
        items = outbox.claim_for_submit(conn, now=T0 + 86401, owner="gw", lease_seconds=60, limit=10,
                                        expire_after=86400)
    assert [i.payment_id for i in items] == ["NEW"]
    assert (state(engine, old), state(engine, fresh)) == ("EXPIRED", "SENDING")
    with engine.connect() as conn:
        [event] = conn.execute(select(sms_outbox_events)).all()
        last_error = conn.execute(select(sms_outbox.c.last_error).where(sms_outbox.c.id == old)).scalar_one()
    assert (event.outbox_id, event.event, event.from_state, event.to_state, event.actor) == (
        old, "EXPIRED", "QUEUED", "EXPIRED", "sender")
    assert event.at == outbox.utc(T0 + 86401) and "86400" in last_error


def test_a_failed_receipt_past_expire_after_expires_too(engine):
    with engine.begin() as conn:
        row_id = outbox.enqueue(conn, payment_id="P1", kind=OutboxKind.RECEIPT, msisdn="962791234567",
                                language="en", text="Paid", now=T0)
        [item] = outbox.claim_for_submit(conn, now=T0, owner="gw", lease_seconds=60, limit=1)
        outbox.record_outcomes(conn, [Outcome(row_id, OutboxState.FAILED, error="throttled", retry_at=T0 + 30)],
                               owner="gw", now=T0)
    with engine.begin() as conn:
        assert outbox.claim_for_submit(conn, now=T0 + 3601, owner="gw", lease_seconds=60, limit=1,
                                       expire_after=3600) == []
    assert state(engine, row_id) == "EXPIRED"


def test_the_migration_moves_comma_joined_ids_into_parts(db_url):
    from sqlalchemy import text

    from billgw.gateway.db import make_engine
    from billgw.gateway.migrate import upgrade

    eng = make_engine(db_url, 1)
    try:
        upgrade(eng, "0003")
        with eng.begin() as conn:
            conn.execute(text(
                "INSERT INTO sms_outbox (payment_id, kind, msisdn, language, text, state, attempts, next_attempt_at,"
                " smsc_message_ids, parts, created_at, updated_at) VALUES ('P1', 'receipt', '962791234567', 'en',"
                " 'Paid', 'SENT', 2, '2026-12-01 10:00:00', 'm-1,m-2', 2, '2026-12-01 10:00:00',"
                " '2026-12-01 10:00:05')"))
        upgrade(eng)
        with eng.connect() as conn:
            row = conn.execute(select(sms_outbox)).one()
            ids = outbox.message_ids(conn, row.id)
            [first, _] = conn.execute(select(sms_outbox_parts).order_by(sms_outbox_parts.c.part_number)).all()
        assert (row.queued_at, row.resends, ids) == (row.created_at, 0, ["m-1", "m-2"])
        assert (first.attempt, first.message_key, first.submitted_at) == (2, "m-1", row.updated_at)
        assert "smsc_message_ids" not in row._mapping
    finally:
        eng.dispose()


def test_what_may_be_on_the_phone_for_a_reversal_notice(engine):
    delivered = sent(engine, "P1", ["d1"])
    receive(engine, "d1", "DELIVRD")
    smsc_expired = sent(engine, "P2", ["e1"])
    receive(engine, "e1", "EXPIRED")
    with engine.begin() as conn:
        outbox.enqueue(conn, payment_id="P3", kind=OutboxKind.RECEIPT, msisdn="962791234567", language="en",
                       text="Paid", now=T0)
        outbox.expire_stale(conn, now=T0 + 100_000, expire_after=86400)
    with engine.connect() as conn:
        left = {i.payment_id: outbox.may_have_left(conn, i)
                for pid in ("P1", "P2", "P3") for i in outbox.get_for_payment(conn, pid)}
    assert (state(engine, delivered), state(engine, smsc_expired)) == ("DELIVERED", "EXPIRED")
    assert left == {"P1": True, "P2": True, "P3": False}  # P3 expired here, never submitted


def _wait_blocked_or_done(engine, thread, bound=200):
    """Until the other transaction waits for a lock (PostgreSQL) or ended."""
    import time

    from sqlalchemy import text

    for _ in range(bound):
        if not thread.is_alive():
            return
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                waiting = conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")).scalar_one()
            if waiting:
                return
        time.sleep(0.02)  # a bounded wait for the other thread, not an assertion on time


def test_receipts_for_two_parts_recorded_at_once_both_count(engine):
    """Two processes (each with a bind of the account) record the receipts of
    a message's two parts at the same moment: each must see the other's, or
    the row stays SENT for ever.  On PostgreSQL this fails without the row
    lock in record_deliveries; SQLite's BEGIN IMMEDIATE serialises the two
    writers by itself, and the test shows it stays so."""
    import threading

    row_id = sent(engine, "P1", ["p1", "p2"])
    first = engine.connect()
    tx = first.begin()
    assert record_deliveries(first, [IncomingReceipt("main", DeliveryReceipt("p1", "DELIVRD"), T0 + 60)])[0].matched
    results = []

    def other():
        with engine.begin() as conn:
            results.append(record_deliveries(conn, [IncomingReceipt("main", DeliveryReceipt("p2", "DELIVRD"),
                                                                    T0 + 61)])[0])

    thread = threading.Thread(target=other)
    thread.start()
    try:
        _wait_blocked_or_done(engine, thread)
    finally:
        tx.commit()
        first.close()
        thread.join(30)
    assert [r.matched for r in results] == [True]
    assert state(engine, row_id) == "DELIVERED"
