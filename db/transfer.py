"""Copying a whole store to another database (SQLite to PostgreSQL and back), counts checked.

Tables are copied in dependency order (parents before the rows that point at them), in
batches, inside one transaction on the target: a failed copy leaves the target as it was.
The source is read from one consistent snapshot (an online backup of a SQLite file, a
repeatable-read transaction on PostgreSQL), so the app may keep running while it copies.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, Integer, Table, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

import db  # noqa: F401  (every area's tables on Base.metadata)
from db.engine import make_engine
from db.models import Base

COPY_BATCH_ROWS = 5_000
# Tables a database keeps for itself, not part of the store's data.
BOOKKEEPING = {"alembic_version", "sqlite_sequence"}

CopyProgress = Callable[[str, int, int], None]  # table, rows copied so far, rows in the table


class CopyError(RuntimeError):
    """A copy that cannot be done or did not check out (names the table and the fix)."""


@dataclass
class TableCount:
    """Rows of one table in the source and in the target after the copy."""

    table: str
    source: int
    target: int


def store_tables() -> list[Table]:
    """The store's tables, parents before children."""
    return list(Base.metadata.sorted_tables)


def row_counts(connection: Connection) -> dict[str, int]:
    """Rows per store table (tables missing from the database count as absent)."""
    present = set(inspect(connection).get_table_names())
    return {t.name: int(connection.scalar(select(func.count()).select_from(t)) or 0)
            for t in store_tables() if t.name in present}


def is_empty(engine: Engine) -> bool:
    """Whether the store holds no rows at all."""
    with engine.connect() as connection:
        return not any(row_counts(connection).values())


def unknown_tables(connection: Connection) -> list[str]:
    """Tables in the database that this version of the workbench does not know (a newer store)."""
    known = {t.name for t in store_tables()} | BOOKKEEPING
    return sorted(set(inspect(connection).get_table_names()) - known)


def empty_store(connection: Connection) -> None:
    """Delete every row of the store's tables, children first."""
    for table in reversed(store_tables()):
        connection.execute(table.delete())


def reset_sequences(connection: Connection) -> None:
    """On PostgreSQL, move each id sequence past the largest id copied in (no-op elsewhere)."""
    if connection.dialect.name != "postgresql":
        return
    for table in store_tables():
        key = list(table.primary_key.columns)
        if len(key) != 1 or not isinstance(key[0].type, Integer):
            continue
        sequence = connection.scalar(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                     {"t": table.name, "c": key[0].name})
        if sequence:
            top = connection.scalar(select(func.max(key[0])))
            connection.execute(text("SELECT setval(:s, :v, :called)"),
                               {"s": sequence, "v": top or 1, "called": top is not None})


def _copy_table(source: Connection, target: Connection, table: Table, total: int, batch_rows: int,
                progress: CopyProgress | None) -> None:
    order = list(table.primary_key.columns)
    rows = source.execution_options(yield_per=batch_rows).execute(select(table).order_by(*order))
    done = 0
    for batch in rows.partitions(batch_rows):
        try:
            target.execute(table.insert(), [dict(row._mapping) for row in batch])
        except DBAPIError as exc:
            raise CopyError(f"table {table.name}: the target refused rows {done + 1}-{done + len(batch)}: "
                            f"{str(exc.orig).strip().splitlines()[0]}; nothing was copied") from exc
        done += len(batch)
        if progress:
            progress(table.name, done, total)


def _copy(source: Connection, target_engine: Engine, *, replace: bool, batch_rows: int,
          progress: CopyProgress | None) -> list[TableCount]:
    unknown = unknown_tables(source)
    if unknown:
        raise CopyError(f"the source has tables this workbench does not know ({', '.join(unknown)}); "
                        "copy it with the workbench version that made it")
    counts = row_counts(source)
    result = []
    with target_engine.begin() as target:
        present = row_counts(target)
        filled = {name: n for name, n in present.items() if n}
        if filled and not replace:
            listed = ", ".join(f"{name} ({n} rows)" for name, n in list(filled.items())[:5])
            raise CopyError(f"the target store is not empty: {listed}; copy into an empty database, "
                            "or pass --replace to delete its rows first")
        if filled:
            empty_store(target)
        for table in store_tables():
            _copy_table(source, target, table, counts.get(table.name, 0), batch_rows, progress)
        reset_sequences(target)
        copied = row_counts(target)
        for table in store_tables():
            result.append(TableCount(table.name, counts.get(table.name, 0), copied.get(table.name, 0)))
        wrong = [c for c in result if c.source != c.target]
        if wrong:  # raising rolls the whole copy back
            raise CopyError("row counts differ after the copy: " + ", ".join(
                f"{c.table} {c.source} -> {c.target}" for c in wrong) + "; nothing was copied")
    return result


def copy_store(source_url: str, target_url: str, *, replace: bool = False, batch_rows: int = COPY_BATCH_ROWS,
               progress: CopyProgress | None = None) -> list[TableCount]:
    """Copy every row of the store at ``source_url`` into the one at ``target_url`` (schema
    created or upgraded there first); returns the per-table counts, which are checked equal.

    Refuses (:class:`CopyError`) a target that holds rows unless ``replace``.
    """
    source_parsed = make_url(source_url)
    if source_parsed == make_url(target_url):
        raise CopyError(f"source and target are the same database ({source_parsed!r}); name another")
    if source_parsed.get_backend_name() == "sqlite" and not Path(source_parsed.database or "").is_file():
        raise CopyError(f"source store {source_parsed.database or '(in memory)'} does not exist; check the path")
    target = make_engine(target_url)
    source = make_engine(source_url)
    if source.dialect.name == "sqlite":
        from db.backup import sqlite_backup

        with tempfile.TemporaryDirectory(prefix="workbench-copy-") as tmp:
            snapshot = Path(tmp) / "snapshot.db"
            sqlite_backup(source, snapshot)
            frozen = create_engine(f"sqlite:///{snapshot.as_posix()}")  # a copy of the migrated source
            try:
                with frozen.connect() as connection:
                    return _copy(connection, target, replace=replace, batch_rows=batch_rows, progress=progress)
            finally:
                frozen.dispose()
    with source.connect().execution_options(isolation_level="REPEATABLE READ") as connection, connection.begin():
        return _copy(connection, target, replace=replace, batch_rows=batch_rows, progress=progress)
