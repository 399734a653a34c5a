"""The water adapter's work on the biller's tables: one function per call,
each run inside one transaction on a transport thread (blocking), taking the
Connection and returning the interface's dataclasses.

The money rules live here:

- a payment is one intake row, **unique on the gateway's payment id**: a
  repeat finds its row and gets the same answer (the same intake
  reference), never a second row; the row committed *is* the ACCEPTED
  answer -- the money is safe in the biller's hands from that COMMIT on;
- the row's processing code says where it is: pending (the batch has not
  run), posted (booked, with the batch's receipt number), rejected, or
  withdrawn (undone by the gateway before the batch);
- a reversal withdraws a pending row (only while it is pending: the update
  is guarded on the code), records a reversal row for a booked one where the
  biller has a reversals table, and is refused (NOT_PERMITTED: a person
  refunds) where it has none.  A reversal of a payment the biller never
  had leaves a withdrawn placeholder row, so that a late insert of the same
  id is refused rather than taken.
"""
from __future__ import annotations

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from billgw.billing_adapters.interface import (
    Bill,
    BillerDeclined,
    BillInquiryResult,
    BillStatus,
    DeclineReason,
    LedgerEntry,
    PaymentAccepted,
    PaymentConfirmation,
    PaymentOrder,
    PaymentStatus,
    PaymentStatusKind,
    ReversalConfirmation,
)

from .mapping import WaterTables

PLACEHOLDER_ACCOUNT = ""  # the account of a withdrawn placeholder row (reversal before the payment)
_OPEN = (BillStatus.NEW, BillStatus.PARTIALLY_PAID)


def intake_reference(row_id: int) -> str:
    """The biller's reference of an intake row, as the ATM's receipt shows it."""
    return f"IN{row_id:010d}"


def _yyyymmdd(value) -> str | None:
    if value is None:
        return None
    return str(value).replace("-", "")[:8]


def _status(t: WaterTables, code) -> BillStatus:
    return t.bill_status_codes.get(str(code), BillStatus.EXPIRED)  # an unknown code is not payable


def read_bills(conn: Connection, t: WaterTables, account: str, bill_number: str | None,
               currency: str) -> BillInquiryResult:
    """The account's bills; what is still due is the bill's amount less the
    payments waiting in the intake (the batch has not booked them yet)."""
    query = select(t.bills).where(t.c_bill("account") == account)
    rows = conn.execute(query.order_by(t.c_bill("due_date"), t.c_bill("bill_number"))).mappings().all()
    if not rows:
        raise BillerDeclined(DeclineReason.UNKNOWN_BILLING_NUMBER, "no such account")
    pending = dict(conn.execute(
        select(t.c_intake("bill_number"), func.sum(t.c_intake("amount")))
        .where(t.c_intake("account") == account, t.c_intake("status") == t.code["pending"])
        .group_by(t.c_intake("bill_number"))).all())
    bc = t.bill_columns
    bills = []
    for row in rows:
        number = row[bc["bill_number"]]
        if bill_number is not None and number != bill_number:
            continue
        status = _status(t, row[bc["status"]])
        due = max(0, int(row[bc["amount_due"]]) - int(pending.get(number) or 0))
        if status in _OPEN and due == 0:
            status = BillStatus.PAID
        bills.append(Bill(bill_number=number, amount_due=due, due_date=_yyyymmdd(row[bc["due_date"]]),
                          currency=currency, status=status,
                          issue_date=_yyyymmdd(row[bc["issue_date"]]) if bc.get("issue_date") else None))
    if bill_number is not None and not bills:
        raise BillerDeclined(DeclineReason.BILL_NOT_FOUND, "no such bill on the account")
    name = next((row[bc["customer_name"]] for row in rows if bc.get("customer_name") and row[bc["customer_name"]]),
                "")
    return BillInquiryResult(billing_number=account, customer_name=name or "", bills=tuple(bills))


def _intake_row(conn: Connection, t: WaterTables, payment_id: str):
    return conn.execute(select(t.intake).where(t.c_intake("payment_id") == payment_id)).mappings().first()


def _reversal_row(conn: Connection, t: WaterTables, payment_id: str):
    if t.reversals is None:
        return None
    return conn.execute(select(t.reversals).where(t.c_rev("payment_id") == payment_id)).mappings().first()


def _answer_existing(t: WaterTables, row, order: PaymentOrder):
    """A repeat of a payment id: the same answer, if it is the same payment."""
    ic = t.intake_columns
    same = (row[ic["account"]] == order.billing_number and int(row[ic["amount"]]) == order.amount
            and (order.bill_number is None or row[ic["bill_number"]] == order.bill_number))
    code = row[ic["status"]]
    if code == t.code["withdrawn"]:
        raise BillerDeclined(DeclineReason.OTHER, "payment id withdrawn: it can never be taken")
    if not same:
        raise BillerDeclined(DeclineReason.OTHER, "payment id already used for another payment")
    if code == t.code["rejected"]:
        raise BillerDeclined(DeclineReason.OTHER, "the biller's batch rejected this payment")
    bill = row[ic["bill_number"]]
    if code == t.code["posted"] and row[ic["receipt"]]:
        return PaymentConfirmation(order.payment_id, str(row[ic["receipt"]]), int(row[ic["amount"]]), bill)
    return PaymentAccepted(order.payment_id, intake_reference(row[ic["id"]]), int(row[ic["amount"]]), bill)


def insert_payment(conn: Connection, t: WaterTables, order: PaymentOrder, *, paid_at: str,
                   currency: str) -> PaymentAccepted | PaymentConfirmation:
    """Take the payment into the intake (committed by the caller: that
    COMMIT is the ACCEPTED answer), or answer the repeat of one taken."""
    row = _intake_row(conn, t, order.payment_id)
    if row is not None:
        return _answer_existing(t, row, order)
    bills = read_bills(conn, t, order.billing_number, order.bill_number, currency)  # declines unknown ones
    bill_number = order.bill_number
    if bill_number is not None:
        status = bills.bills[0].status
        if status is BillStatus.PAID:
            raise BillerDeclined(DeclineReason.BILL_ALREADY_PAID, "the bill is paid")
        if status not in _OPEN:
            raise BillerDeclined(DeclineReason.NO_BILL_DUE, f"the bill is {status.value}")
    else:
        open_bills = [b for b in bills.bills if b.status in _OPEN]
        bill_number = open_bills[0].bill_number if open_bills else None
    values = {"payment_id": order.payment_id, "account": order.billing_number, "bill_number": bill_number,
              "amount": order.amount, "paid_at": paid_at, "status": t.code["pending"],
              "channel": order.channel[:10], "service": order.service_code[:16]}
    values = {t.intake_columns[k]: v for k, v in values.items() if t.has_intake(k)}
    try:
        with conn.begin_nested():
            conn.execute(insert(t.intake).values(**values))
    except IntegrityError:
        # The same id, inserted by someone else since we looked: theirs stands.
        row = _intake_row(conn, t, order.payment_id)
        if row is None:
            raise
        return _answer_existing(t, row, order)
    row = _intake_row(conn, t, order.payment_id)
    return PaymentAccepted(order.payment_id, intake_reference(row[t.intake_columns["id"]]), order.amount,
                           bill_number)


def payment_status(conn: Connection, t: WaterTables, payment_id: str) -> PaymentStatus:
    row = _intake_row(conn, t, payment_id)
    if row is None:
        return PaymentStatus(payment_id, PaymentStatusKind.NOT_FOUND)
    ic = t.intake_columns
    code, amount = row[ic["status"]], int(row[ic["amount"]])
    if code == t.code["pending"]:
        return PaymentStatus(payment_id, PaymentStatusKind.ACCEPTED, intake_reference(row[ic["id"]]), amount)
    if code == t.code["rejected"]:
        return PaymentStatus(payment_id, PaymentStatusKind.REJECTED, None, amount)
    if code == t.code["withdrawn"]:
        return PaymentStatus(payment_id, PaymentStatusKind.REVERSED, None, amount)
    if code == t.code["posted"]:
        receipt = str(row[ic["receipt"]]) if row[ic["receipt"]] else None
        if _reversal_row(conn, t, payment_id) is not None:
            return PaymentStatus(payment_id, PaymentStatusKind.REVERSED, receipt, amount)
        return PaymentStatus(payment_id, PaymentStatusKind.POSTED, receipt, amount)
    # A code the mapping does not know: not an answer we can act on.
    raise ValueError(f"intake row of {payment_id} has an unmapped processing code {code!r}")


def reverse_payment(conn: Connection, t: WaterTables, payment_id: str, *, at: str,
                    reason: str = "acquirer reversal") -> ReversalConfirmation:
    ic = t.intake_columns
    row = _intake_row(conn, t, payment_id)
    if row is None:
        placeholder = {"payment_id": payment_id, "account": PLACEHOLDER_ACCOUNT, "amount": 0, "paid_at": at,
                       "status": t.code["withdrawn"]}
        conn.execute(insert(t.intake).values(**{ic[k]: v for k, v in placeholder.items()}))
        return ReversalConfirmation(payment_id, False, "never in the intake; the id is barred")
    code = row[ic["status"]]
    if code == t.code["pending"]:
        done = conn.execute(update(t.intake).where(
            t.c_intake("payment_id") == payment_id, t.c_intake("status") == t.code["pending"]).values(
            {ic["status"]: t.code["withdrawn"]}))
        if done.rowcount == 1:
            return ReversalConfirmation(payment_id, True, "withdrawn from the intake before the batch")
        row = _intake_row(conn, t, payment_id)  # the batch took it meanwhile
        code = row[ic["status"]]
    if code == t.code["withdrawn"]:
        return ReversalConfirmation(payment_id, True, "already withdrawn")
    if code == t.code["rejected"]:
        return ReversalConfirmation(payment_id, False, "the batch rejected it: nothing held")
    if t.reversals is None:
        raise BillerDeclined(DeclineReason.NOT_PERMITTED,
                             "booked by the biller's batch, and the biller takes no reversals of booked payments")
    if _reversal_row(conn, t, payment_id) is None:
        rc = t.reversal_columns
        values = {"payment_id": payment_id, "amount": int(row[ic["amount"]]), "reversed_at": at,
                  "reason": reason[:80]}
        conn.execute(insert(t.reversals).values(**{rc[k]: v for k, v in values.items() if rc.get(k)}))
    return ReversalConfirmation(payment_id, True, "reversal recorded for the booked payment")


def ledger(conn: Connection, t: WaterTables) -> list[LedgerEntry]:
    """Every intake row (placeholders aside), in intake order, as the audit
    compares them: pending rows are held but not booked; rejected and
    withdrawn rows hold nothing; a booked row with a reversal row is reversed."""
    ic = t.intake_columns
    reversed_ids = set()
    if t.reversals is not None:
        reversed_ids = {r[0] for r in conn.execute(select(t.c_rev("payment_id"))).all()}
    entries = []
    for row in conn.execute(select(t.intake).order_by(t.c_intake("id"))).mappings():
        if row[ic["account"]] == PLACEHOLDER_ACCOUNT:
            continue
        code, payment_id = row[ic["status"]], row[ic["payment_id"]]
        entries.append(LedgerEntry(
            payment_id=payment_id, subscriber=row[ic["account"]], bill_number=row[ic["bill_number"]] or "",
            amount=int(row[ic["amount"]]),
            receipt_number=str(row[ic["receipt"]] or intake_reference(row[ic["id"]])),
            reversed=code == t.code["withdrawn"] or payment_id in reversed_ids,
            posted_at=str(row[ic["paid_at"]]), pending=code == t.code["pending"],
            rejected=code == t.code["rejected"]))
    return entries
