"""Delivery receipts: a deliver_sm from the SMSC read as "part X ended so".

Pure functions, no I/O.  SMSCs say the same thing in several ways, so this
module reads all the ways we know and says what it could not read:

* **TLVs** (SMPP 3.4 §5.3.2): ``receipted_message_id`` (0x001E) and
  ``message_state`` (0x0427).  Preferred when present.
* **The text form** (SMPP 3.4 Appendix B, a de-facto format):
  ``id:IIII sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm
  stat:DELIVRD err:000 text:...``.  Vendors vary the case of the keys, write
  ``submit_date``, add seconds to the dates, spell the states out
  (``DELIVERED``, ``UNDELIVERABLE``), or leave fields out; all accepted.
  Where a TLV is missing, its text field stands in.
* **Message ids** differ between the submit_sm_resp and the receipt on some
  SMSCs: case, leading zeros, hexadecimal in one and decimal in the other.
  :func:`message_key` is the one form both are compared in, and
  :func:`candidate_keys` adds the other base's reading, tried after the
  exact one.

What a part's state means for the whole message is :func:`combine`'s job.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

# esm_class bits 2-5, "message type" (SMPP 3.4 §5.2.12).
ESM_TYPE_MASK = 0x3C
ESM_SMSC_RECEIPT = 0x04
ESM_INTERMEDIATE = 0x20
ESM_ACKS = (0x08, 0x10)  # delivery / manual user acknowledgement

# message_state TLV values (SMPP 3.4 §5.2.28; 9 from SMPP 5.0).
_STATE_BY_NUMBER = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
    9: "SKIPPED",
}
# Spellings seen in the text form, upper-cased, to the canonical stat.
_STATE_BY_WORD = {
    "DELIVRD": "DELIVRD", "DELIVERED": "DELIVRD", "DELIVR": "DELIVRD", "DELIVRED": "DELIVRD",
    "EXPIRED": "EXPIRED", "EXPIRD": "EXPIRED",
    "DELETED": "DELETED", "DELETD": "DELETED",
    "UNDELIV": "UNDELIV", "UNDELIVERABLE": "UNDELIV", "UNDELIVERED": "UNDELIV", "UNDELIVRD": "UNDELIV",
    "ACCEPTD": "ACCEPTD", "ACCEPTED": "ACCEPTD",
    "UNKNOWN": "UNKNOWN", "UNKNOWN_": "UNKNOWN",
    "REJECTD": "REJECTD", "REJECTED": "REJECTD",
    "ENROUTE": "ENROUTE",
    "SKIPPED": "SKIPPED",
    "FAILED": "UNDELIV",
}
# What a part's stat means for the subscriber.  ENROUTE and ACCEPTD are not
# final here: many SMSCs send them as intermediate notifications and a final
# one follows.
DELIVERED = frozenset({"DELIVRD"})
EXPIRED = frozenset({"EXPIRED"})
UNDELIVERABLE = frozenset({"UNDELIV", "REJECTD", "DELETED", "UNKNOWN", "SKIPPED"})
FINAL = DELIVERED | EXPIRED | UNDELIVERABLE

_FIELD = re.compile(
    r"(?i)(?<![A-Za-z])(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err)\s*[:=]\s*([^\s]*)"
)
_HEX = re.compile(r"[0-9a-f]+")
_DEC = re.compile(r"[0-9]+")


class NotAReceipt(ValueError):
    """A deliver_sm that is not a delivery receipt (an MO message, say)."""


@dataclass(frozen=True)
class DeliveryReceipt:
    message_id: str  # as the SMSC wrote it
    stat: str  # canonical: DELIVRD, UNDELIV, EXPIRED, ... (see _STATE_BY_NUMBER)
    error: str | None = None  # the err: field or network_error_code, as given
    done_at: _dt.datetime | None = None  # the SMSC's "done date" (naive, SMSC time)
    source: str = "tlv"  # "tlv", "text" or "tlv+text": what the fields came from

    @property
    def final(self) -> bool:
        return self.stat in FINAL


def message_key(message_id: str) -> str:
    """The form a message id is compared in: trimmed, lower case, no leading zeros."""
    key = message_id.strip().lower().lstrip("0")
    return key or ("0" if message_id.strip() else "")


def candidate_keys(message_id: str) -> list[str]:
    """Keys under which a receipt's id may have been recorded, exact first:
    an all-hex id also as its decimal value, an all-decimal id also as hex."""
    key = message_key(message_id)
    keys = [key] if key else []
    if key and len(key) <= 32:
        if _HEX.fullmatch(key):
            keys.append(str(int(key, 16)))
        if _DEC.fullmatch(key):
            keys.append(format(int(key), "x"))
    seen, out = set(), []
    for k in keys:
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace")
    return "" if value is None else str(value)


def parse_text(short_message) -> dict[str, str]:
    """The ``key:value`` fields of the text form, keys canonical
    (``submit_date``/``done_date``), first occurrence wins."""
    fields: dict[str, str] = {}
    body = _text(short_message)
    cut = re.search(r"(?i)(?<![A-Za-z])text\s*:", body)
    if cut:
        body = body[:cut.start()]  # the echoed text may itself contain "id:"
    for match in _FIELD.finditer(body):
        key = re.sub(r"[ _]", "_", match.group(1).lower())
        fields.setdefault(key, match.group(2))
    return fields


def _date(value: str | None) -> _dt.datetime | None:
    if not value or not _DEC.fullmatch(value):
        return None
    fmt = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S", 14: "%Y%m%d%H%M%S"}.get(len(value))
    try:
        return _dt.datetime.strptime(value, fmt) if fmt else None
    except ValueError:
        return None


def _stat_from_word(word: str | None) -> str | None:
    if not word:
        return None
    return _STATE_BY_WORD.get(word.strip().upper())


def parse_receipt(*, esm_class: int, short_message=b"", receipted_message_id=None, message_state=None,
                  network_error_code=None) -> DeliveryReceipt:
    """Read a deliver_sm's fields as a receipt; :class:`NotAReceipt` if it is none.

    Raises ``ValueError`` (NotAReceipt's base) naming what is missing when it
    claims to be a receipt but gives no id or no state.
    """
    message_type = esm_class & ESM_TYPE_MASK
    flagged = message_type in (ESM_SMSC_RECEIPT, ESM_INTERMEDIATE) + ESM_ACKS
    tlv_id = _text(receipted_message_id).strip() or None
    tlv_state = _STATE_BY_NUMBER.get(message_state) if isinstance(message_state, int) else None
    fields = parse_text(short_message) if (flagged or tlv_id or short_message) else {}
    text_id = fields.get("id") or None
    text_state = _stat_from_word(fields.get("stat"))
    if not flagged and not tlv_id and not (text_id and text_state):
        raise NotAReceipt(f"esm_class 0x{esm_class:02X} and no receipt fields: not a delivery receipt")
    message_id = tlv_id or text_id
    stat = tlv_state or text_state
    if not message_id:
        raise ValueError("delivery receipt without a message id (no receipted_message_id, no id: field)")
    if not stat:
        given = fields.get("stat") or message_state
        raise ValueError(f"delivery receipt for {message_id} without a known state ({given!r})")
    error = fields.get("err")
    if error is None and network_error_code:
        error = _text(network_error_code).encode("latin-1").hex() if isinstance(network_error_code, (bytes, str)) \
            else str(network_error_code)
    # Where the id and the state came from (error and date may come from the text either way).
    from_tlv = (tlv_id is not None, tlv_state is not None)
    source = "tlv" if all(from_tlv) else ("text" if not any(from_tlv) else "tlv+text")
    return DeliveryReceipt(message_id=message_id, stat=stat, error=error,
                           done_at=_date(fields.get("done_date")), source=source)


def receipt_from_pdu(pdu) -> DeliveryReceipt:
    """:func:`parse_receipt` over a deliver_sm parsed by smpplib."""
    return parse_receipt(
        esm_class=getattr(pdu, "esm_class", 0) or 0,
        short_message=getattr(pdu, "short_message", b"") or b"",
        receipted_message_id=getattr(pdu, "receipted_message_id", None),
        message_state=getattr(pdu, "message_state", None),
        network_error_code=getattr(pdu, "network_error_code", None),
    )


def part_outcome(stat: str | None) -> str | None:
    """DELIVERED, EXPIRED or UNDELIVERABLE for a final stat, else None."""
    if stat in DELIVERED:
        return "DELIVERED"
    if stat in EXPIRED:
        return "EXPIRED"
    if stat in UNDELIVERABLE:
        return "UNDELIVERABLE"
    return None


def combine(part_stats: list[str | None], parts: int) -> str | None:
    """A multi-part message's final state from its parts' receipts.

    The subscriber reads the whole text or nothing, so one part that will
    never arrive decides: any part UNDELIVERABLE (UNDELIV, REJECTD, DELETED,
    UNKNOWN, SKIPPED) makes the message UNDELIVERABLE; else any part EXPIRED
    makes it EXPIRED -- both at once, without waiting for the other parts.
    DELIVERED needs every one of the ``parts`` delivered.  Otherwise None:
    not final yet (parts without a receipt, or only ENROUTE/ACCEPTD).
    """
    outcomes = [part_outcome(s) for s in part_stats]
    if "UNDELIVERABLE" in outcomes:
        return "UNDELIVERABLE"
    if "EXPIRED" in outcomes:
        return "EXPIRED"
    if parts > 0 and len(outcomes) >= parts and all(o == "DELIVERED" for o in outcomes):
        return "DELIVERED"
    return None
