"""What to do with a submit_sm_resp command_status: a table from ``conf/``.

SMSCs disagree on which statuses are worth a retry (vendors put their own in
0x400-0x4FF), so the classification is data, not code: ``conf/smpp_status.toml``
is the packaged default and ``[sms] status_table`` names a replacement.  Two
classes only, because the sender has only two reactions: *temporary* (retry
with back-off and slow the whole bind) and *permanent* (fail the receipt at
once -- retrying a bad destination only spends the SMSC's patience).
"""
from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping


class StatusClass(enum.Enum):
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class StatusTable:
    classes: Mapping[int, StatusClass] = field(default_factory=dict)
    default: StatusClass = StatusClass.TEMPORARY

    def classify(self, status: int) -> StatusClass:
        return self.classes.get(status, self.default)

    def is_permanent(self, status: int) -> bool:
        return self.classify(status) is StatusClass.PERMANENT

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "status table") -> "StatusTable":
        """Raise ValueError naming the offending key."""
        unknown = sorted(set(data) - {"default", "status"})
        if unknown:
            raise ValueError(f"{source}: {unknown[0]}: unknown key")
        default = _class(data.get("default", "temporary"), f"{source}: default")
        statuses = data.get("status", {})
        if not isinstance(statuses, Mapping):
            raise ValueError(f"{source}: status: expected a table")
        classes = {}
        for key, value in statuses.items():
            try:
                code = int(key, 16) if key.lower().startswith("0x") else int(key)
            except ValueError:
                raise ValueError(f"{source}: status.{key}: not a command_status (write it as hex, \"0x58\")") from None
            if not 0 <= code <= 0xFFFFFFFF:
                raise ValueError(f"{source}: status.{key}: outside 0..0xFFFFFFFF")
            classes[code] = _class(value, f"{source}: status.{key}")
        return cls(classes, default)


def _class(value, where: str) -> StatusClass:
    try:
        return StatusClass(value)
    except ValueError:
        raise ValueError(f"{where}: must be \"temporary\" or \"permanent\", not {value!r}") from None


def load_status_table(path: str | Path | None = None) -> StatusTable:
    """``path``, or the packaged ``billgw.conf/smpp_status.toml``."""
    if path:
        source = str(path)
        text = Path(path).read_text("utf-8")
    else:
        source = "billgw.conf/smpp_status.toml"
        text = resources.files("billgw.conf").joinpath("smpp_status.toml").read_text("utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML: {exc}") from None
    return StatusTable.from_mapping(data, source)
