"""Record layouts described as data, as a COBOL copybook describes them.

A :class:`Layout` is a list of fields -- text (``PIC X(n)``), zoned numbers
(``PIC 9(n)`` / ``PIC S9(n)V9(s)``), packed numbers (``COMP-3``) and
repeated groups (``OCCURS n TIMES DEPENDING ON count``) -- and every offset
and length is *derived* from that list; nothing places a slice by hand.  So
a field added to a layout moves the ones after it, a document table
(:func:`describe`) is printed from the same data, and the encoder and
decoder cannot disagree.

Values: text is ``str``; a number with scale 0 is ``int``, one with a scale
is a ``Decimal`` with exactly that many places (``PIC S9(11)V999`` of
``Decimal("12.500")``); a value with more places than its field is refused
rather than rounded.  A repeated group is a list of dicts, as many as its
``depending_on`` count field says (the count is filled in on encoding).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Union

from . import fields as f


class RecordError(ValueError):
    """A record cannot be encoded or decoded; names the field."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


TEXT, ZONED, PACKED = "X", "9", "COMP-3"


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # TEXT, ZONED or PACKED
    digits: int  # characters of a text field; integer + decimal digits of a number
    scale: int = 0  # implied decimal places (the V999 of PIC S9(11)V999)
    signed: bool = False
    doc: str = ""

    @property
    def size(self) -> int:
        return f.packed_length(self.digits) if self.kind == PACKED else self.digits

    @property
    def picture(self) -> str:
        if self.kind == TEXT:
            return f"X({self.digits})"
        whole = self.digits - self.scale
        pic = ("S" if self.signed else "") + f"9({whole})" + (f"V9({self.scale})" if self.scale else "")
        return pic + (" COMP-3" if self.kind == PACKED else "")

    def encode(self, value: Any, code_page: str) -> bytes:
        if self.kind == TEXT:
            if not isinstance(value, str):
                raise f.FieldError(f"{value!r} is not text")
            return f.encode_text(value, self.digits, code_page)
        units = _unscaled(value, self.scale)
        if self.kind == ZONED:
            return f.encode_zoned(units, self.digits, signed=self.signed)
        return f.encode_packed(units, self.digits, signed=self.signed)

    def decode(self, data: bytes, code_page: str) -> Any:
        if self.kind == TEXT:
            return f.decode_text(data, code_page)
        if self.kind == ZONED:
            units = f.decode_zoned(data, signed=self.signed)
        else:
            units = f.decode_packed(data, self.digits, signed=self.signed)
        return Decimal(units).scaleb(-self.scale) if self.scale else units


def _unscaled(value: Any, scale: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise f.FieldError(f"{value!r} is not a number")
    if not scale:
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise f.FieldError(f"{value} has decimals in a field without any")
            return int(value)
        return value
    scaled = Decimal(value).scaleb(scale)
    if scaled != scaled.to_integral_value():
        raise f.FieldError(f"{value} has more than {scale} decimal places")
    return int(scaled)


def X(name: str, length: int, doc: str = "") -> Field:
    return Field(name, TEXT, length, doc=doc)


def N(name: str, digits: int, scale: int = 0, *, signed: bool = False, doc: str = "") -> Field:
    """A zoned (DISPLAY) number."""
    return Field(name, ZONED, digits, scale, signed, doc)


def P(name: str, digits: int, scale: int = 0, *, signed: bool = True, doc: str = "") -> Field:
    """A packed (COMP-3) number."""
    return Field(name, PACKED, digits, scale, signed, doc)


@dataclass(frozen=True)
class Occurs:
    """``OCCURS times TIMES DEPENDING ON depending_on``: a group repeated."""

    name: str
    times: int
    fields: tuple[Field, ...]
    depending_on: str
    doc: str = ""

    @property
    def entry_size(self) -> int:
        return sum(item.size for item in self.fields)

    @property
    def size(self) -> int:
        return self.times * self.entry_size


Item = Union[Field, Occurs]


@dataclass(frozen=True)
class Layout:
    """One record type: its items in order; offsets derived."""

    name: str
    items: tuple[Item, ...]
    doc: str = ""
    offsets: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        offsets, at, names = {}, 0, set()
        for item in self.items:
            if item.name in names:
                raise ValueError(f"layout {self.name}: field {item.name} twice")
            names.add(item.name)
            offsets[item.name] = at
            at += item.size
        for item in self.items:
            if isinstance(item, Occurs):
                counter = next((i for i in self.items if i.name == item.depending_on), None)
                if not isinstance(counter, Field) or counter.kind == TEXT or counter.scale or counter.signed:
                    raise ValueError(f"layout {self.name}: {item.name} depends on {item.depending_on}, "
                                     "which must be an unsigned whole number before it")
                if offsets[counter.name] > offsets[item.name]:
                    raise ValueError(f"layout {self.name}: {item.depending_on} must come before {item.name}")
        object.__setattr__(self, "offsets", offsets)

    @property
    def size(self) -> int:
        return sum(item.size for item in self.items)

    def encode(self, values: dict[str, Any], code_page: str = f.DEFAULT_CODE_PAGE) -> bytes:
        """The record's bytes; every field must be given (counts of repeated
        groups are derived from the lists)."""
        values = dict(values)
        for item in self.items:
            if isinstance(item, Occurs):
                entries = values.get(item.name, [])
                if len(entries) > item.times:
                    raise RecordError(f"{self.name}.{item.name}",
                                      f"{len(entries)} entries, at most {item.times}")
                values[item.depending_on] = len(entries)
        out = bytearray()
        for item in self.items:
            where = f"{self.name}.{item.name}"
            if isinstance(item, Occurs):
                entries = values[item.name]
                for index in range(item.times):
                    entry = entries[index] if index < len(entries) else None
                    for sub in item.fields:
                        out += self._encode_field(sub, _blank(sub) if entry is None else _given(entry, sub, where),
                                                  f"{where}[{index}].{sub.name}", code_page)
                continue
            if item.name not in values:
                raise RecordError(where, "no value given")
            out += self._encode_field(item, values[item.name], where, code_page)
        return bytes(out)

    @staticmethod
    def _encode_field(item: Field, value: Any, where: str, code_page: str) -> bytes:
        try:
            return item.encode(value, code_page)
        except f.FieldError as exc:
            raise RecordError(where, str(exc)) from None

    def decode(self, data: bytes, code_page: str = f.DEFAULT_CODE_PAGE) -> dict[str, Any]:
        """The record's values.  ``data`` is exactly the record (a
        fixed-length frame's trailing spaces are the framer's business)."""
        if len(data) != self.size:
            raise RecordError(self.name, f"record of {len(data)} bytes, the layout has {self.size}")
        out: dict[str, Any] = {}
        for item in self.items:
            at = self.offsets[item.name]
            where = f"{self.name}.{item.name}"
            if isinstance(item, Occurs):
                count = out[item.depending_on]
                if count > item.times:
                    raise RecordError(f"{self.name}.{item.depending_on}", f"{count} entries, at most {item.times}")
                entries = []
                for index in range(count):
                    entry, sub_at = {}, at + index * item.entry_size
                    for sub in item.fields:
                        entry[sub.name] = self._decode_field(sub, data[sub_at:sub_at + sub.size],
                                                             f"{where}[{index}].{sub.name}", code_page)
                        sub_at += sub.size
                    entries.append(entry)
                out[item.name] = entries
                continue
            out[item.name] = self._decode_field(item, data[at:at + item.size], where, code_page)
        return out

    @staticmethod
    def _decode_field(item: Field, data: bytes, where: str, code_page: str) -> Any:
        try:
            return item.decode(data, code_page)
        except f.FieldError as exc:
            raise RecordError(where, str(exc)) from None


def _given(entry: dict, item: Field, where: str) -> Any:
    if item.name not in entry:
        raise RecordError(f"{where}.{item.name}", "no value given")
    return entry[item.name]


def _blank(item: Field) -> Any:
    """An unused entry of a repeated group: spaces, or zero."""
    return "" if item.kind == TEXT else 0


def describe(layout: Layout) -> Iterable[tuple[str, int, int, str, str]]:
    """(field, offset, length, picture, meaning) rows, for the documentation."""
    for item in layout.items:
        at = layout.offsets[item.name]
        if isinstance(item, Occurs):
            yield (item.name, at, item.size, f"OCCURS {item.times} DEPENDING ON {item.depending_on}", item.doc)
            sub_at = at
            for sub in item.fields:
                yield (f"  {item.name}.{sub.name}", sub_at, sub.size, sub.picture, sub.doc)
                sub_at += sub.size
        else:
            yield (item.name, at, item.size, item.picture, item.doc)
