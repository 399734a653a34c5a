"""Adapter settings as a schema: nested tables, maps and lists, each value
checked, every mistake named by its dotted key.

An adapter kind declares its settings once (:class:`Table` of
:class:`Setting`); :func:`Table.check` turns what the configuration file
holds into the keyword arguments its builder takes, or raises
:class:`SettingsError` whose ``key`` is the dotted path inside the settings
table (``columns.amount``, ``codes.E17``).  The gateway's ``check-config``
prefixes it with ``billers.<CODE>.settings.``, so an operator reads exactly
which line of the file is wrong -- without anything being started.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting cannot be used.  ``key`` is its dotted path ("" for the table)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


Check = Callable[[str, Any], Any]  # (dotted key, value) -> checked value, or SettingsError


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@dataclass(frozen=True)
class Setting:
    """One key of a table: its check, and whether it must be given."""

    check: Check
    required: bool = False
    default: Any = None
    doc: str = ""


@dataclass(frozen=True)
class Table:
    """A table with known keys: unknown keys are errors, defaults filled in."""

    settings: Mapping[str, Setting] = field(default_factory=dict)

    def __call__(self, path: str, value: Any) -> dict[str, Any]:
        return self.check(value, path)

    def check(self, value: Any, path: str = "") -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise SettingsError(path, f"expected a table, not {type(value).__name__}")
        unknown = sorted(set(value) - set(self.settings))
        if unknown:
            raise SettingsError(_join(path, str(unknown[0])),
                                f"unknown setting (accepted: {', '.join(sorted(self.settings))})")
        out = {}
        for key, setting in self.settings.items():
            where = _join(path, key)
            if key not in value:
                if setting.required:
                    raise SettingsError(where, "required setting is missing")
                out[key] = setting.default
            else:
                out[key] = setting.check(where, value[key])
        return out


def mapping_of(value_check: Check, *, key_pattern: str | None = None, min_items: int = 0) -> Check:
    """A table whose keys are data (a code table: biller code -> meaning)."""
    pattern = re.compile(key_pattern) if key_pattern else None

    def check(path: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise SettingsError(path, f"expected a table, not {type(value).__name__}")
        if len(value) < min_items:
            raise SettingsError(path, f"needs at least {min_items} entr{'y' if min_items == 1 else 'ies'}")
        out = {}
        for key, item in value.items():
            if pattern is not None and not pattern.fullmatch(str(key)):
                raise SettingsError(_join(path, str(key)), f"key does not match {key_pattern!r}")
            out[str(key)] = value_check(_join(path, str(key)), item)
        return out

    return check


def list_of(item_check: Check, *, min_items: int = 0) -> Check:
    def check(path: str, value: Any) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(path, f"expected a list, not {type(value).__name__}")
        if len(value) < min_items:
            raise SettingsError(path, f"needs at least {min_items} item(s)")
        return tuple(item_check(f"{path}[{i}]", item) for i, item in enumerate(value))

    return check


# --- scalar checks ---------------------------------------------------------------

def http_url(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SettingsError(path, f"must be a string URL, not {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(path, f"must be an http(s) URL with a host, not {value!r}")
    try:
        value.encode("ascii")
    except UnicodeEncodeError:
        raise SettingsError(path, f"must be ASCII (IDNA-encode the host), not {value!r}") from None
    return value


def positive_number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SettingsError(path, f"must be a positive number of seconds, not {value!r}")
    return float(value)


def positive_int(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(path, f"must be a positive integer, not {value!r}")
    return value


def non_empty_str(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SettingsError(path, f"must be a non-empty string, not {value!r}")
    return value


def boolean(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(path, f"must be true or false, not {value!r}")
    return value


def one_of(*choices: str) -> Check:
    def check(path: str, value: Any) -> str:
        if value not in choices:
            raise SettingsError(path, f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
        return value

    return check

