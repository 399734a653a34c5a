"""A small blocking ISO 8583 client: what an ATM or a bank switch does on the wire.

The simulator talks to the gateway only over TCP, as a bank would, so it
exercises the gateway's listener, framing and codec exactly as production
traffic does.  It may use :mod:`billgw.iso8583` (the dialect) but never the
gateway itself.

It is a command-line tool, not reactor code: a plain socket with a timeout
on connect and on every read, and one overall deadline per exchange, so it
never hangs however the peer misbehaves.

Matching follows the interface: a response belongs to a request when its
F11 (STAN) and F7 (transmission date and time) are the request's; anything
else that arrives meanwhile (an answer to an earlier, abandoned request, a
gateway echo test) is skipped -- echo tests are answered, as a switch must.
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
import socket
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Mapping

from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.examples import TEST_PAN
from billgw.iso8583.framing import Framer, FramingError, encode_frame
from billgw.iso8583.messages import (
    DecodedResponse,
    MessageFormatError,
    decode_response,
    encode_fields,
    response_mti,
)

DEFAULT_TIMEOUT = 35.0  # above the gateway's per-biller timeouts, like a switch's 30 s
DEFAULT_MAX_LENGTH = 4096
# Frames read while waiting for one answer; a peer that floods us is an error.
MAX_FRAMES_PER_EXCHANGE = 100

# ISO 4217 minor-unit exponents of the currencies billers use; --exponent
# overrides, anything else defaults to 2.
CURRENCY_EXPONENTS = {"400": 3, "048": 3, "368": 3, "414": 3, "512": 3, "788": 3,
                      "760": 2, "978": 2, "840": 2, "826": 2, "682": 2, "784": 2}

INQUIRY_PROCESSING_CODE = "370000"
PAYMENT_PROCESSING_CODE = "500000"
ATM_MERCHANT_TYPE = "6011"


class NoAnswer(Exception):
    """The gateway could not be reached, closed the connection, sent something
    unreadable, or did not answer in time.  Exit status 2 in the CLI."""


def currency_exponent(currency: str, exponent: int | None = None) -> int:
    if exponent is not None:
        return exponent
    return CURRENCY_EXPONENTS.get(currency, 2)


_AMOUNT_TEXT = re.compile(r"^\d{1,15}(\.\d{1,6})?$")


def to_minor_units(amount: str, exponent: int) -> int:
    """``"12.500"`` with exponent 3 -> ``12500``, in Decimal/integer arithmetic.

    Floats are never involved (``0.29`` must be 29 cents, not 28.999...);
    more decimals than the currency has is an error rather than a rounding.
    """
    text = amount.strip()
    if not _AMOUNT_TEXT.match(text):
        raise ValueError(f"amount {amount!r} is not a plain decimal number such as 12.500")
    try:
        minor = Decimal(text).scaleb(exponent)
    except InvalidOperation:
        raise ValueError(f"amount {amount!r} is not a decimal number") from None
    if minor != minor.to_integral_value():
        raise ValueError(f"amount {amount!r} has more than {exponent} decimal places")
    value = int(minor)
    if value > 999_999_999_999:
        raise ValueError(f"amount {amount!r} does not fit the 12 digits of F4")
    return value


def format_minor_units(minor: int, exponent: int) -> str:
    """``12500`` with exponent 3 -> ``"12.500"`` (integer arithmetic)."""
    if exponent == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}"


def new_stan() -> str:
    """A random non-zero 6-digit STAN: a one-shot CLI has no counter to keep,
    and a random value makes an accidental repeat of an earlier run unlikely."""
    return f"{secrets.randbelow(999_999) + 1:06d}"


def transmission_datetime(now: dt.datetime) -> str:
    """F7, MMDDhhmmss in UTC."""
    return now.astimezone(dt.timezone.utc).strftime("%m%d%H%M%S")


def time_fields(f7: str) -> dict[str, str]:
    """F7, F12 (hhmmss) and F13 (MMDD) from one F7 value.

    The simulator's terminal runs on UTC, so F12/F13 are F7's time and date;
    deriving them from F7 makes a repeat with the same --stan and
    --transmission-datetime byte-identical to the original.
    """
    if not (len(f7) == 10 and f7.isdigit()):
        raise ValueError(f"transmission date-time {f7!r} must be 10 digits MMDDhhmmss")
    return {"7": f7, "12": f7[4:10], "13": f7[0:4]}


def rrn_for(f7: str, stan: str) -> str:
    """A 12-digit RRN from F7's hhmmss and the STAN: unique per terminal and
    second, and the same again for an exact repeat."""
    return f7[4:10] + stan


@dataclass(frozen=True)
class Terminal:
    """Who we are on the wire: F32 acquirer and F41 terminal."""

    acquirer_id: str = "123456"
    terminal_id: str = "ATM00001"


def network_fields(code: str, *, stan: str, f7: str, terminal: Terminal) -> dict[str, str]:
    return {"7": f7, "11": stan, "32": terminal.acquirer_id, "70": code}


def bill_fields(processing_code: str, *, amount_minor: int, currency: str, bill: BillRequestData,
                stan: str, f7: str, terminal: Terminal, pan: str | None = TEST_PAN,
                rrn: str | None = None) -> dict[str, str]:
    """The fields of a 0200 inquiry or payment, per the interface document."""
    fields = {
        "2": pan,
        "3": processing_code,
        "4": f"{amount_minor:012d}",
        **time_fields(f7),
        "11": stan,
        "18": ATM_MERCHANT_TYPE,
        "32": terminal.acquirer_id,
        "37": rrn or rrn_for(f7, stan),
        "41": terminal.terminal_id,
        "48": bill.to_tlv(),
        "49": currency,
    }
    return {k: v for k, v in fields.items() if v}


class Client:
    """One TCP connection to the gateway.  Use as a context manager."""

    def __init__(self, host: str, port: int, *, framing: str = "binary2",
                 timeout: float = DEFAULT_TIMEOUT, max_length: int = DEFAULT_MAX_LENGTH):
        self.host = host
        self.port = port
        self.framing = framing
        self.timeout = timeout
        self._framer = Framer(framing, max_length=max_length)
        self._pending: list[bytes] = []
        self._sock: socket.socket | None = None

    def connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise NoAnswer(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._sock.settimeout(self.timeout)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Client":
        self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def send(self, mti: str, fields: Mapping[str, str]) -> bytes:
        """Encode and send one message; returns its payload (without header)."""
        payload = encode_fields(mti, fields)
        self._send_payload(payload)
        return payload

    def _send_payload(self, payload: bytes) -> None:
        if self._sock is None:
            raise NoAnswer("not connected")
        try:
            self._sock.sendall(encode_frame(payload, self.framing))
        except OSError as exc:
            raise NoAnswer(f"send failed: {exc}") from None

    def exchange(self, mti: str, fields: Mapping[str, str]) -> DecodedResponse:
        """Send a request and wait for the response whose F11 and F7 match it."""
        self.send(mti, fields)
        return self.wait_for(response_mti(mti), fields["11"], fields["7"])

    def wait_for(self, mti: str, stan: str, f7: str) -> DecodedResponse:
        deadline = time.monotonic() + self.timeout
        for _ in range(MAX_FRAMES_PER_EXCHANGE):
            payload = self._next_frame(deadline)
            try:
                response = decode_response(payload)
            except MessageFormatError as exc:
                raise NoAnswer(f"unreadable answer: {exc}") from None
            if response.mti == "0800":
                self._answer_network_request(response)
                continue
            if (response.mti, response.fields.get("11"), response.fields.get("7")) == (mti, stan, f7):
                return response
        raise NoAnswer(f"no matching answer among {MAX_FRAMES_PER_EXCHANGE} frames")

    def _answer_network_request(self, request: DecodedResponse) -> None:
        """The gateway's own echo test: answer 0810/00 as a switch would."""
        fields = {f: request.fields[f] for f in ("7", "11", "32", "70") if f in request.fields}
        fields["39"] = "00"
        self._send_payload(encode_fields("0810", fields))

    def _next_frame(self, deadline: float) -> bytes:
        if self._sock is None:
            raise NoAnswer("not connected")
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoAnswer(f"no answer within {self.timeout:g} s")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                raise NoAnswer(f"no answer within {self.timeout:g} s") from None
            except OSError as exc:
                raise NoAnswer(f"receive failed: {exc}") from None
            if not data:
                raise NoAnswer("the gateway closed the connection")
            try:
                self._pending.extend(self._framer.feed(data))
            except FramingError as exc:
                raise NoAnswer(f"bad frame from the gateway: {exc}") from None
        return self._pending.pop(0)

    # -- the transactions -------------------------------------------------------

    def sign_on(self, *, terminal: Terminal = Terminal(), stan: str | None = None,
                now: dt.datetime | None = None) -> DecodedResponse:
        """0800 with F70 = 001; returns the 0810."""
        f7 = transmission_datetime(now or dt.datetime.now(dt.timezone.utc))
        return self.exchange("0800", network_fields("001", stan=stan or new_stan(), f7=f7, terminal=terminal))

    def bill_request(self, processing_code: str, *, bill: BillRequestData, amount_minor: int = 0,
                     currency: str = "400", terminal: Terminal = Terminal(), pan: str | None = TEST_PAN,
                     stan: str | None = None, f7: str | None = None, rrn: str | None = None,
                     now: dt.datetime | None = None) -> tuple[dict[str, str], DecodedResponse]:
        """Send a 0200 and return (the fields sent, the matching 0210)."""
        f7 = f7 or transmission_datetime(now or dt.datetime.now(dt.timezone.utc))
        fields = bill_fields(processing_code, amount_minor=amount_minor, currency=currency, bill=bill,
                             stan=stan or new_stan(), f7=f7, terminal=terminal, pan=pan, rrn=rrn)
        return fields, self.exchange("0200", fields)

    def inquire(self, bill: BillRequestData, **kwargs) -> DecodedResponse:
        return self.bill_request(INQUIRY_PROCESSING_CODE, bill=bill, amount_minor=0, **kwargs)[1]

    def pay(self, bill: BillRequestData, amount_minor: int, **kwargs) -> DecodedResponse:
        return self.bill_request(PAYMENT_PROCESSING_CODE, bill=bill, amount_minor=amount_minor, **kwargs)[1]
