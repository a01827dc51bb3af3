"""Hot-path writes run on the DBAPI cursor of a connection's transaction, compiled once per dialect.

SQLAlchemy's ``Connection.execute`` builds an execution context and a result object and looks up
its compiled cache on every call: for the token exchange's two one-row INSERTs on SQLite that cost
several times the statements themselves (measured: about 150 µs of overhead around 15 µs of
SQLite; docs/performance.md, "Workload identity federation"). A ``DriverStatement`` does that work
once: it compiles its Core statement for the connection's dialect and the parameter names it is
given, keeps the bind processors of each parameter's type (so a datetime is stored exactly as
SQLAlchemy stores it), and then only converts the values and calls ``cursor.execute``.

It runs inside the connection's transaction, which SQLAlchemy still begins and ends, and it
announces itself with the engine's ``before_cursor_execute`` event as SQLAlchemy would, so the
listeners that hold SQLite's per-process writer lock (``db/database.py``) see it. Only for
statements whose every value is passed by the caller: Python-side column defaults are not applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class _Plan:
    sql: str
    positional: tuple[str, ...] | None  # parameter order for positional paramstyles; None: named
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]


class DriverStatement:
    """A Core statement that executes on the DBAPI cursor; see the module's docstring for when."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, str, str, tuple[str, ...]], _Plan] = {}

    def _plan(self, connection: Connection, names: tuple[str, ...]) -> _Plan:
        dialect = connection.dialect
        # By driver and paramstyle too: two drivers of one database (psycopg, psycopg2) bind differently.
        key = (dialect.name, dialect.driver, dialect.paramstyle, names)
        plan = self._plans.get(key)
        if plan is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=list(names))
            assert isinstance(compiled, SQLCompiler)  # a DML statement compiles to SQL
            missing = set(compiled.binds) - set(names)
            if missing:
                raise ValueError(f"no value for {', '.join(sorted(missing))}")
            processors = []
            for name in compiled.binds:
                processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors.append((name, processor))
            positional = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
            plan = self._plans[key] = _Plan(compiled.string, positional, tuple(processors))
        return plan

    def execute(self, connection: Connection, values: Mapping[str, Any]) -> None:
        """Run with these values on ``connection``'s transaction."""
        self._run(connection, values).close()

    def scalar(self, connection: Connection, values: Mapping[str, Any]) -> Any:
        """Run, and answer the first column of the first row (RETURNING), or None without a row."""
        cursor = self._run(connection, values)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else row[0]

    def _run(self, connection: Connection, values: Mapping[str, Any]) -> Any:
        plan = self._plan(connection, tuple(sorted(values)))
        converted = dict(values)
        for name, processor in plan.processors:
            converted[name] = processor(converted[name])
        parameters: Sequence[Any] | Mapping[str, Any] = (
            converted if plan.positional is None else tuple(converted[name] for name in plan.positional))
        dbapi_connection = connection.connection.driver_connection
        cursor = dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            connection.dispatch.before_cursor_execute(connection, cursor, plan.sql, parameters, None, False)
            cursor.execute(plan.sql, parameters)
        except connection.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            # What Connection.execute raises for it: SQLAlchemy's wrapper (callers catch those), with
            # no parameter in its text, and the connection dropped if the server went away.
            if connection.dialect.is_disconnect(exc, dbapi_connection, cursor):
                connection.invalidate(exc)
            raise DBAPIError.instance(plan.sql, parameters, exc, connection.dialect.loaded_dbapi.Error,
                                      hide_parameters=True, dialect=connection.dialect) from exc
        return cursor
