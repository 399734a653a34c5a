"""Reading the configuration file: one table at a time, every key accounted for.

A :class:`_Section` hands out a table's values by key, checked for type and
by a ``check`` function, and remembers which keys were read, so a key left
over (misspelt, unknown) is an error naming it by its dotted path.  String
values may name environment variables, ``${NAME}`` or ``${NAME:-default}``.
The small ``check`` functions shared by every section live here too.
"""
from __future__ import annotations

import re
from typing import Any, Mapping


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _interpolate(value: str, path: str, environ: Mapping[str, str]) -> str:
    def sub(match):
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _ENV.sub(sub, value)


class _Section:
    """Reads one table, tracking which keys were used so leftovers are errors."""

    def __init__(self, data: Mapping[str, Any], path: str, environ: Mapping[str, str]):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path or 'configuration'}: expected a table")
        self.data = dict(data)
        self.path = path
        self.environ = environ
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple, default: Any = ..., *, check=None):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._key(key)}: required key is missing")
            return default
        value = self.data[key]
        if isinstance(value, str):
            value = _interpolate(value, self._key(key), self.environ)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and int not in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self._key(key)}: expected {names}, got {type(value).__name__}")
        if check is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f"{self._key(key)}: {problem}")
        return value

    def section(self, key: str, required: bool = False) -> "_Section":
        self.used.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._key(key)}: required table is missing")
            return _Section({}, self._key(key), self.environ)
        return _Section(self.data[key], self._key(key), self.environ)

    def keys(self):
        return list(self.data)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self._key(unknown[0])}: unknown key")


def _positive(value):
    return None if value > 0 else "must be greater than zero"


def _non_negative(value):
    return None if value >= 0 else "must not be negative"


def _one_of(*choices):
    def check(value):
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"

    return check


def _regex(value):
    try:
        re.compile(value)
    except re.error as exc:
        return f"not a valid regular expression ({exc})"
    return None


def _plain(value: Any, path: str, environ: Mapping[str, str]) -> Any:
    """A settings value as plain dicts, tuples and scalars, with ``${NAME}``
    interpolated in every string at any depth."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{path}.{k}", environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{path}[{i}]", environ) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _interpolate(value, path, environ)
    return value
