"""Database engine and sessions: SQLite (embedded default, WAL) or PostgreSQL (scale-out)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # Checkpoint the WAL every ~40 MB rather than every ~4 MB: one write transaction of
            # a 100-entry Bundle dirties about that much, so the default checkpointed (and
            # fsynced) on nearly every commit, inside the single writer's turn.
            cur.execute("PRAGMA wal_autocheckpoint=10000")
            cur.close()

        # A deferred BEGIN that later writes fails at once with "database is locked" when
        # another writer holds the lock; writers take the lock up front and queue instead.
        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            write = bool(conn.get_execution_options().get("rix_write"))
            if write and path and path != ":memory:":
                _writer_turn(conn.connection.info, path)
            conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if write else 'DEFERRED'}")

        @event.listens_for(engine, "checkin")
        def _sqlite_checkin(_dbapi_conn: Any, record: Any) -> None:
            _end_writer_turn(record)

        @event.listens_for(engine, "close")
        def _sqlite_close(_dbapi_conn: Any, record: Any) -> None:
            _end_writer_turn(record)

        _disable_pysqlite_autobegin(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _writer_turn(info: dict[str, Any], path: str) -> None:
    """Queue for SQLite's single write lock on a lock file beside the database (every process
    and thread of the server): the next writer starts as soon as the previous one ends, where
    SQLite's own busy wait would poll, sleeping up to 100 ms between tries."""
    if "rix_writer_fd" in info:
        return  # this connection already has the turn (a transaction right after another)
    fd = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks (without the GIL) until the turn comes
    except BaseException:
        os.close(fd)
        raise
    info["rix_writer_fd"] = fd


def _end_writer_turn(record: Any) -> None:
    """Give the turn up when the connection goes back to the pool (after commit or rollback)."""
    fd = record.info.pop("rix_writer_fd", None) if record is not None else None
    if fd is not None:
        os.close(fd)  # closing the descriptor releases its lock


def _disable_pysqlite_autobegin(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (responses are built after it)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session], *, write: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        session.connection(execution_options={"rix_write": write})
        yield session


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
