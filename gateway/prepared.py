"""Hot-path statements compiled once and run on the DB-API cursor.

The journal's statements are SQLAlchemy Core (one schema, both databases),
but SQLAlchemy's execution path -- the compiled-cache look-up, parameter
construction, the execution context and the ``Result`` machinery -- cost
more CPU than SQLite spends running the statement (py-spy, see
docs/performance.md).  A :class:`Prepared` statement keeps the Core
statement as its definition and, per dialect (and per set of SET / VALUES
keys), compiles it once into the SQL text, the order of its parameters,
each parameter's bind processor and each result column's processor; a call
is then one ``cursor.execute`` on the connection's DB-API connection, inside
the transaction the SQLAlchemy ``Connection`` began.  Rows come back as
named tuples, so code that reads ``row.state`` does not change.

Only plain statements are prepared: parameters are all bind parameters or
column values; columns left out of an INSERT get their scalar Python
default as SQLAlchemy would give it.  A statement that needs more (an
INSERT leaving out a column whose default is a function or SQL
expression) runs on SQLAlchemy's own path instead, with the same results:
a column added later with such a default costs speed, never correctness.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Iterable, Mapping

from sqlalchemy.engine import Connection
from sqlalchemy.sql import Insert


class _Compiled:
    """One statement compiled for one dialect and one set of value keys."""

    __slots__ = ("sql", "names", "binders", "row_type", "processors", "defaults", "positional", "via_sqlalchemy")

    def __init__(self, statement, dialect, column_keys: list[str] | None):
        self.via_sqlalchemy = False
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self.positional = compiled.positional
        self.names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        binds = compiled.binds
        self.binders = {}
        for name in self.names:
            bind = binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.binders[name] = processor
        self.defaults: dict[str, Any] = {}
        if isinstance(statement, Insert):
            given = set(column_keys or ())
            for column in statement.table.c:
                if column.key in self.names and column.key not in given:
                    default = column.default
                    if default is None or not default.is_scalar:
                        self.via_sqlalchemy = True  # SQLAlchemy computes it (module docstring)
                        return
                    self.defaults[column.key] = default.arg
        columns = list(statement.exported_columns) if _returns_rows(statement) else []
        self.row_type = namedtuple("Row", [c.key for c in columns], rename=True) if columns else None
        processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
        self.processors = processors if any(p is not None for p in processors) else None

    def parameters(self, params: Mapping[str, Any]):
        values = []
        for name in self.names:
            value = params[name] if name in params else self.defaults[name]
            binder = self.binders.get(name)
            values.append(binder(value) if binder is not None and value is not None else value)
        return values if self.positional else dict(zip(self.names, values))

    def row(self, raw):
        if self.processors is None:
            return self.row_type._make(raw)
        return self.row_type._make(v if p is None or v is None else p(v) for p, v in zip(self.processors, raw))


def _returns_rows(statement) -> bool:
    return bool(getattr(statement, "_returning", None)) or bool(getattr(statement, "is_select", False))


class Prepared:
    """A Core statement run straight on the DB-API cursor (module docstring).

    ``keyed``: the statement's SET / VALUES columns come from each call's
    parameters (an UPDATE that sets what changed), so it is compiled once
    per set of keys; ``fixed`` names the parameters that are bind
    parameters of the statement itself (its WHERE clause), never columns.
    """

    def __init__(self, statement, *, keyed: bool = False, fixed: Iterable[str] = ()):
        self.statement = statement
        self._keyed = keyed
        self._fixed = frozenset(fixed)
        self._compiled: dict[tuple, _Compiled] = {}

    def _for(self, dialect, params: Mapping[str, Any]) -> _Compiled:
        keys = tuple(sorted(k for k in params if k not in self._fixed)) if self._keyed else ()
        found = self._compiled.get((dialect.name, keys))
        if found is None:
            found = _Compiled(self.statement, dialect, list(keys) if self._keyed else None)
            self._compiled[(dialect.name, keys)] = found
        return found

    def _cursor(self, conn: Connection, params: Mapping[str, Any]):
        compiled = self._for(conn.dialect, params)
        if compiled.via_sqlalchemy:
            return None, conn.execute(self.statement, dict(params))
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute(compiled.sql, compiled.parameters(params))
        return compiled, cursor

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; the rows it touched."""
        _, cursor = self._cursor(conn, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any]):
        """The first row (a named tuple, or SQLAlchemy's Row), or None."""
        compiled, cursor = self._cursor(conn, params)
        try:
            raw = cursor.fetchone()
        finally:
            cursor.close()
        if raw is None or compiled is None:
            return raw
        return compiled.row(raw)

    def one(self, conn: Connection, params: Mapping[str, Any]):
        row = self.first(conn, params)
        if row is None:
            raise LookupError("the statement returned no row")
        return row
