"""Field 48 bill data: tag-length-value sub-fields.

Each element is a 2-character tag, a 3-digit decimal length and the value,
back to back (``BC003TEL`` = tag BC, length 3, value ``TEL``).  Lengths count
bytes of the UTF-8 encoded value, so customer names in Arabic fit.  A tag may
repeat where the interface says so (``BD``, one per bill).  Unknown tags are
kept and ignored, so a switch can send extra data without breaking us.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from anyascii import anyascii

# Request tags (0200/0220 from the acquirer).
BILLER_CODE = "BC"
SERVICE_CODE = "SC"
BILLING_NUMBER = "BN"
BILL_NUMBER = "BL"
MSISDN = "MS"
LANGUAGE = "LG"
INQUIRY_REFERENCE = "IR"
# Response tags (0210).
CUSTOMER_NAME = "CN"
DUE_AMOUNT = "DA"
DUE_DATE = "DD"
FEE = "FE"
BILL_DETAIL = "BD"
RECEIPT_NUMBER = "RN"
PAYMENT_REFERENCE = "PR"
MORE_BILLS = "MB"
SURCHARGE = "SG"
BILL_PAID = "BP"

# F48's text encoding towards a peer (conf/ ``[peers.NAME] f48_encoding``):
# UTF-8, or ASCII only for strict decoders, with names transliterated or
# left out (``f48_names``; see :func:`to_ascii`).
UTF8 = "utf-8"
ASCII = "ascii"
F48_ENCODINGS = (UTF8, ASCII)
TRANSLITERATE = "transliterate"
OMIT = "omit"
F48_NAMES = (TRANSLITERATE, OMIT)

# F48 is LLLVAR: at most 999 bytes.  An answer is fitted to it before it is
# journaled (see :func:`fit_bills`), so every answer can be sent.
F48_MAX_BYTES = 999
# What a biller's values may be to travel in our F48 (the tags' formats below).
BILL_NUMBER_MAX = 30
RECEIPT_NUMBER_MAX = 32

TAG_DESCRIPTIONS = {
    BILLER_CODE: ("request", "Biller code, e.g. TEL", "an..10"),
    SERVICE_CODE: ("request", "Service code of the biller, e.g. MOBILE", "an..10"),
    BILLING_NUMBER: ("request", "Billing number (subscriber / account number)", "ans..30"),
    BILL_NUMBER: ("both", "Bill number to pay; repeat the tag to pay several bills; absent = the oldest open bills first", "ans..30"),
    MSISDN: ("request", "Subscriber mobile number for the SMS receipt (international, digits)", "ans..20"),
    LANGUAGE: ("request", "Receipt language: en or ar (default en)", "a2"),
    INQUIRY_REFERENCE: ("both", "Reference of the inquiry a payment follows: an opaque id of 32 characters", "ans..32"),
    CUSTOMER_NAME: ("response", "Customer name at the biller (UTF-8, or ASCII per peer)", "ans..60"),
    DUE_AMOUNT: ("response", "Total due, minor units of F49's currency", "n..12"),
    DUE_DATE: ("response", "Due date of the oldest open bill, YYYYMMDD", "n8"),
    FEE: ("response", "Fee in minor units, carried apart from the bill amount", "n..12"),
    BILL_DETAIL: ("response", "One per open bill: bill number, amount, due date and, when overdue, its late surcharge, separated by '|'", "ans..60"),
    RECEIPT_NUMBER: ("response", "Biller's receipt number for the payment", "ans..32"),
    PAYMENT_REFERENCE: ("response", "Gateway payment reference (quote it to support): an opaque id of 32 characters", "ans..32"),
    MORE_BILLS: ("response", "Open bills left out of the BD list because F48 is full", "n..3"),
    SURCHARGE: ("response", "Late-payment surcharge in minor units, apart from the bill amounts", "n..12"),
    BILL_PAID: ("response", "One per bill a payment settled: bill number, amount put on it, of which surcharge, separated by '|'", "ans..60"),
}


class BillDataError(ValueError):
    """F48 is not well-formed TLV; ``position`` is the byte offset in F48."""

    def __init__(self, reason: str, position: int):
        super().__init__(f"field 48: {reason} at byte {position}")
        self.reason = reason
        self.position = position


def decode_tlv(value: str) -> list[tuple[str, str]]:
    """Parse F48 into (tag, value) pairs, in order."""
    raw = value.encode("utf-8")
    items = []
    pos = 0
    while pos < len(raw):
        if len(raw) - pos < 5:
            raise BillDataError("truncated tag/length", pos)
        tag = raw[pos : pos + 2].decode("ascii", "replace")
        length_text = raw[pos + 2 : pos + 5]
        if not tag.isalnum() or not tag.isascii():
            raise BillDataError(f"bad tag {tag!r}", pos)
        if not length_text.isdigit():
            raise BillDataError(f"length of tag {tag} is not 3 digits", pos + 2)
        length = int(length_text)
        start = pos + 5
        if start + length > len(raw):
            raise BillDataError(f"tag {tag} announces {length} bytes, {len(raw) - start} left", pos)
        try:
            items.append((tag, raw[start : start + length].decode("utf-8")))
        except UnicodeDecodeError:
            raise BillDataError(f"tag {tag} value is not UTF-8", start) from None
        pos = start + length
    return items


def encode_tlv(items: list[tuple[str, str]]) -> str:
    out = []
    for tag, value in items:
        if len(tag) != 2:
            raise ValueError(f"tag {tag!r} must be 2 characters")
        length = len(value.encode("utf-8"))
        if length > 999:
            raise ValueError(f"tag {tag} value of {length} bytes is too long")
        out.append(f"{tag}{length:03d}{value}")
    return "".join(out)


@dataclass(frozen=True)
class BillRequestData:
    """The bill data a switch sends with an inquiry or payment."""

    biller_code: str
    service_code: str
    billing_number: str
    bill_number: str | None = None  # the first BL: the bill, when one is named
    msisdn: str | None = None
    language: str = "en"
    inquiry_reference: str | None = None
    bill_numbers: tuple[str, ...] = ()  # every BL, in order (a payment of several bills)

    @property
    def named_bills(self) -> tuple[str, ...]:
        """The bills the request names (one per BL tag), none for "oldest first"."""
        if self.bill_numbers:
            return self.bill_numbers
        return (self.bill_number,) if self.bill_number else ()

    def to_tlv(self) -> str:
        items = [
            (BILLER_CODE, self.biller_code),
            (SERVICE_CODE, self.service_code),
            (BILLING_NUMBER, self.billing_number),
        ]
        items.extend((BILL_NUMBER, number) for number in self.named_bills)
        for tag, value in (
            (MSISDN, self.msisdn),
            (LANGUAGE, self.language),
            (INQUIRY_REFERENCE, self.inquiry_reference),
        ):
            if value:
                items.append((tag, value))
        return encode_tlv(items)

    @classmethod
    def from_tlv(cls, value: str) -> "BillRequestData":
        items = decode_tlv(value)
        tags = dict(items)
        named = tuple(v for t, v in items if t == BILL_NUMBER and v)
        missing = [t for t in (BILLER_CODE, SERVICE_CODE, BILLING_NUMBER) if not tags.get(t)]
        if missing:
            raise BillDataError(f"missing tag {missing[0]}", 0)
        language = (tags.get(LANGUAGE) or "en").lower()
        msisdn = tags.get(MSISDN) or None
        # Any printable text up to 20 characters: the gateway judges the
        # number (country, Arabic-Indic digits, policy), not the codec, so an
        # unusable number need not fail the payment (gateway/msisdn_policy.py).
        if msisdn is not None and not (len(msisdn) <= 20 and msisdn.isprintable()):
            raise BillDataError("tag MS is not an MSISDN of at most 20 printable characters", 0)
        return cls(
            biller_code=tags[BILLER_CODE],
            service_code=tags[SERVICE_CODE],
            billing_number=tags[BILLING_NUMBER],
            bill_number=named[0] if named else None,
            msisdn=msisdn,
            language=language,
            inquiry_reference=tags.get(INQUIRY_REFERENCE) or None,
            bill_numbers=named if len(named) > 1 else (),
        )


@dataclass(frozen=True)
class BillLine:
    bill_number: str
    amount: int
    due_date: str
    surcharge: int = 0  # late-payment surcharge on the bill today, apart from its amount

    def to_value(self) -> str:
        parts = [self.bill_number, str(self.amount), self.due_date]
        if self.surcharge:
            parts.append(str(self.surcharge))
        return "|".join(parts)


@dataclass(frozen=True)
class BillPaid:
    """One bill a payment settled: what was put on it, of which surcharge."""

    bill_number: str
    amount: int
    surcharge: int = 0

    def to_value(self) -> str:
        return f"{self.bill_number}|{self.amount}|{self.surcharge}"


@dataclass(frozen=True)
class BillResponseData:
    """What the gateway returns in F48 of a 0210."""

    customer_name: str | None = None
    due_amount: int | None = None
    due_date: str | None = None
    fee: int | None = None
    bills: tuple[BillLine, ...] = ()
    bill_number: str | None = None
    inquiry_reference: str | None = None
    receipt_number: str | None = None
    payment_reference: str | None = None
    more_bills: int | None = None  # open bills not listed: F48 had no room for them
    surcharge: int | None = None  # late-payment surcharge, apart from the bill amounts
    paid: tuple[BillPaid, ...] = ()  # the bills an approved payment settled

    def to_tlv(self) -> str:
        items = []
        if self.customer_name:
            items.append((CUSTOMER_NAME, self.customer_name[:60]))
        if self.due_amount is not None:
            items.append((DUE_AMOUNT, str(self.due_amount)))
        if self.due_date:
            items.append((DUE_DATE, self.due_date))
        if self.fee is not None:
            items.append((FEE, str(self.fee)))
        if self.surcharge:
            items.append((SURCHARGE, str(self.surcharge)))
        for bill in self.bills:
            items.append((BILL_DETAIL, bill.to_value()))
        if self.bill_number:
            items.append((BILL_NUMBER, self.bill_number))
        for paid in self.paid:
            items.append((BILL_PAID, paid.to_value()))
        if self.inquiry_reference:
            items.append((INQUIRY_REFERENCE, self.inquiry_reference))
        if self.receipt_number:
            items.append((RECEIPT_NUMBER, self.receipt_number))
        if self.payment_reference:
            items.append((PAYMENT_REFERENCE, self.payment_reference))
        if self.more_bills:
            items.append((MORE_BILLS, str(self.more_bills)))
        return encode_tlv(items)

    def size(self) -> int:
        """Bytes of the encoded F48 value (what its LLL prefix counts)."""
        return len(self.to_tlv().encode("utf-8"))

    @classmethod
    def from_tlv(cls, value: str) -> "BillResponseData":
        items = decode_tlv(value)
        tags = dict(items)
        bills = []
        paid = []
        for tag, detail in items:
            if tag == BILL_DETAIL:
                parts = detail.split("|")
                if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts[1:2] + parts[3:]):
                    raise BillDataError("tag BD is not 'number|amount|YYYYMMDD[|surcharge]'", 0)
                bills.append(BillLine(parts[0], int(parts[1]), parts[2], int(parts[3]) if len(parts) == 4 else 0))
            elif tag == BILL_PAID:
                parts = detail.split("|")
                if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
                    raise BillDataError("tag BP is not 'number|amount|surcharge'", 0)
                paid.append(BillPaid(parts[0], int(parts[1]), int(parts[2])))

        def number(tag):
            text = tags.get(tag)
            if text is None:
                return None
            if not text.isdigit():
                raise BillDataError(f"tag {tag} is not numeric", 0)
            return int(text)

        return cls(
            customer_name=tags.get(CUSTOMER_NAME),
            due_amount=number(DUE_AMOUNT),
            due_date=tags.get(DUE_DATE),
            fee=number(FEE),
            bills=tuple(bills),
            bill_number=tags.get(BILL_NUMBER),
            inquiry_reference=tags.get(INQUIRY_REFERENCE),
            receipt_number=tags.get(RECEIPT_NUMBER),
            payment_reference=tags.get(PAYMENT_REFERENCE),
            more_bills=number(MORE_BILLS),
            surcharge=number(SURCHARGE),
            paid=tuple(paid),
        )


def fit_bills(data: BillResponseData, budget: int = F48_MAX_BYTES) -> BillResponseData:
    """``data`` with as many of its bills (oldest first, as given) as fit in
    ``budget`` bytes of F48; the ones left out are counted in MB.  Raises
    ValueError when even no bill at all does not fit."""
    bills = list(data.bills)
    fitted = data
    while fitted.size() > budget:
        if not bills:
            raise ValueError(f"F48 of {fitted.size()} bytes does not fit {budget} even without bills")
        bills.pop()
        fitted = replace(data, bills=tuple(bills), more_bills=len(data.bills) - len(bills))
    return fitted


def fit_paid(data: BillResponseData, budget: int = F48_MAX_BYTES) -> BillResponseData:
    """``data`` with as many of its BP elements (oldest bill first) as fit
    in ``budget`` bytes of F48: an approval that settled very many bills
    lists the first ones; the others are on the biller's receipt."""
    paid = list(data.paid)
    fitted = data
    while fitted.size() > budget and paid:
        paid.pop()
        fitted = replace(data, paid=tuple(paid))
    return fitted


def _ascii_text(value: str, limit: int) -> str:
    """``value`` transliterated to printable ASCII (anyascii: Arabic, Greek,
    accented Latin ... each to its usual Latin spelling), at most ``limit``
    characters."""
    text = "".join(c for c in anyascii(value) if " " <= c <= "~")
    return " ".join(text.split())[:limit]


def to_ascii(f48: str, names: str = TRANSLITERATE) -> str:
    """An answer's F48 for a peer that takes ASCII only.

    Values already ASCII pass unchanged.  A customer name (CN) that is not
    is transliterated (``names="transliterate"``) or left out (``"omit"``);
    any other value that is not is transliterated.  No value grows beyond
    its UTF-8 length, so what fitted F48's 999 bytes still fits.  A
    transliterated name that comes out empty is left out."""
    out = []
    for tag, value in decode_tlv(f48):
        if value.isascii():
            out.append((tag, value))
            continue
        if tag == CUSTOMER_NAME and names == OMIT:
            continue
        text = _ascii_text(value, len(value.encode("utf-8")))
        if text or tag != CUSTOMER_NAME:
            out.append((tag, text))
    return encode_tlv(out)
