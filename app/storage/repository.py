"""The generic versioned resource repository: one set of tables for every resource type."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import (
    Insert,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    event,
    false,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict
from app.fhir import jsonio
from app.fhir.registry import Registry
from app.fhir.search import Include, SearchQuery
from app.fhir.values import format_instant, now_utc
from app.storage.compiler import REFERENCE, RESOURCE, Compiler
from app.storage.indexer import index_rows
from app.storage.tables import INDEX_TABLES, VERSION


@dataclass
class Stored:
    """A resource version as stored: identity, version, time, and its JSON (None if deleted)."""

    pk: int
    type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    content: str | None
    method: str = "PUT"

    @cached_property
    def resource(self) -> dict[str, Any]:
        """The resource JSON as a dict, parsed once (not for tombstones); treat it as read-only:
        the policy, the audit and the response all read this same parse."""
        assert self.content is not None
        data: dict[str, Any] = jsonio.loads(self.content)
        return data


def new_id() -> str:
    """A server-assigned logical id."""
    return str(uuid.uuid4())


def _dumps(resource: dict[str, Any]) -> str:
    return jsonio.dumps(resource)


# The statements run once per resource are built once: SQLAlchemy then skips rebuilding and
# re-keying them on every call (about half the Python time of a single-row insert).
# `INSERT ... ON CONFLICT DO NOTHING RETURNING pk`: a taken (type, id) inserts no row.
_INSERT_IF_ABSENT: dict[str, Insert] = {
    "sqlite": sqlite.insert(RESOURCE).on_conflict_do_nothing().returning(RESOURCE.c.pk),
}
# The same on psycopg directly (PostgreSQL): a third of SQLAlchemy's Python time per call.
_PG_INSERT_IF_ABSENT = (
    "INSERT INTO resource (resource_type, resource_id, version_id, last_updated, deleted, content)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING pk"
)
_CURRENT = select(RESOURCE).where(
    RESOURCE.c.resource_type == bindparam("type_name"),
    RESOURCE.c.resource_id == bindparam("resource_id"),
)


# The change feed's safe horizon (FHIR R4 http.html#history, `_since`): a reader may promise
# "every version stamped before H is committed and visible to me" when each writing transaction
# stamps its versions no earlier than its own start, and the reader takes H no later than the
# start of any transaction still able to commit. On PostgreSQL both sides use the database's
# clock (several RIX hosts may share one database; their clocks may differ):
# - a writer takes its first stamp once it holds a transaction id, so that a reader either sees
#   it in pg_stat_activity (and stays below its start) or read its own clock before that stamp
#   was taken. The CTE is materialised so that the id is assigned before the clock is read.
_PG_WRITER_FLOOR = text(
    "WITH xact AS MATERIALIZED (SELECT pg_current_xact_id() AS xid)"
    " SELECT clock_timestamp() AT TIME ZONE 'UTC' FROM xact"
)
# - a reader reads its clock first, then the oldest start among the transactions of this
#   database holding an id (only those can have written: an idle pooled connection, or a
#   transaction that has only read, holds none and must not hold the horizon back). RIX's
#   writers all connect as one role, whose own sessions' starts are visible to it;
#   `backend_start` (earlier still) stands in when `track_activities` is off.
_PG_READER_CLOCK = text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")
_PG_OLDEST_WRITER = text(
    "SELECT min(coalesce(xact_start, backend_start)) AT TIME ZONE 'UTC' FROM pg_stat_activity"
    " WHERE datname = current_database() AND usename = current_user"
    " AND backend_xid IS NOT NULL"
)
_MAX_STAMP = select(func.max(VERSION.c.last_updated))
_EPOCH = datetime(1970, 1, 1)  # the horizon of a database without any version yet


def _to_millisecond(value: datetime) -> datetime:
    """Down to the millisecond, the precision of a FHIR instant. Stamps and horizons are both
    cut down, and cutting down keeps order (a >= b implies cut(a) >= cut(b)), so the horizon's
    promise holds on the values clients see."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


# Columns bound by the batched inserts (executemany needs every row to bind the same ones).
_COLUMNS: dict[str, list[str]] = {
    table.name: [c.name for c in table.columns if c.name not in ("id", "seq")]
    for table in (VERSION, *INDEX_TABLES.values())
}


class Repository:
    """Reads and writes resources, their history and their index rows within one session.

    The `resource` row of a write is inserted or updated at once (its pk and the optimistic
    lock need it); its history row and search-index rows are queued and inserted in batches:
    before this repository reads or deletes rows of those tables and when the session commits,
    so what a transaction reads (and what it commits) is exactly what it wrote. The resource
    rows it wrote are remembered: no other transaction can change them before this one ends,
    so `current` answers them without asking the database again.
    """

    def __init__(self, session: Session, registry: Registry, base_url: str | None = None) -> None:
        self.session = session
        self.registry = registry
        self.compiler = Compiler(base_url)
        self._pending: dict[Table, list[dict[str, Any]]] = {}
        self._written: dict[tuple[str, str], Stored] = {}
        # Called with every version this repository writes (identity vigilance listens).
        self.listeners: list[Callable[[Stored], None]] = []
        # The clock of this transaction's stamps (see `_clock`) and its horizon (see `horizon`).
        self._floor: tuple[datetime, float] | None = None
        self._horizon: datetime | None = None
        event.listen(session, "before_commit", self._before_commit)
        event.listen(session, "after_commit", self._end_transaction)
        event.listen(session, "after_rollback", self._end_transaction)

    def flush(self) -> None:
        """Insert the queued history and index rows: one COPY per table on PostgreSQL (a tenth
        of the client CPU of an executemany), one executemany elsewhere."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        connection = self.session.connection()
        if connection.dialect.name != "postgresql":
            for table, rows in pending.items():
                connection.execute(insert(table), rows)
            return
        raw: Any = connection.connection.dbapi_connection  # psycopg, in this transaction
        with raw.cursor() as cursor:
            for table, rows in pending.items():
                columns = _COLUMNS[table.name]
                with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([row[c] for c in columns])

    def _before_commit(self, _session: Session) -> None:
        self.flush()

    def _end_transaction(self, _session: Session) -> None:
        # Both belong to one transaction: a next one on this session starts afresh.
        self._floor = None
        self._horizon = None

    # -- the change feed's clock ----------------------------------------------------------------

    def _clock(self) -> datetime:
        """The stamp (`meta.lastUpdated`) of a version written now: never earlier than the
        start of this transaction, as the horizon requires.

        The first stamp of a transaction is read once: on PostgreSQL from the database's clock
        after the transaction holds an id (`_PG_WRITER_FLOOR`); on SQLite from this process's
        clock, the write lock being held from `BEGIN IMMEDIATE` (app/storage/db.py), so that
        stamps follow the order in which writers commit. Later stamps add this process's
        monotonic time elapsed since: no round trip per version, and never backwards.
        """
        if self._floor is None:
            if self.session.get_bind().dialect.name == "postgresql":
                floor: datetime = self.session.execute(_PG_WRITER_FLOOR).scalar_one()
            else:
                floor = now_utc()
            self._floor = (floor, time.monotonic())
            return _to_millisecond(floor)
        floor, started = self._floor
        return _to_millisecond(floor + timedelta(seconds=time.monotonic() - started))

    def horizon(self) -> datetime:
        """The change feed's safe horizon H: every version stamped before H is committed and
        visible to this transaction, and every version not yet visible will be stamped H or
        later. A client that follows a feed with `_since=H` (the Bundle's meta.lastUpdated)
        misses nothing (FHIR R4 http.html#history; at least once: versions stamped H or later
        may come again). Computed once per transaction, before the reads it covers.

        PostgreSQL: the reader's database clock, held back to the start of the oldest
        transaction of this database holding a transaction id (`_PG_OLDEST_WRITER`).
        SQLite: a transaction holding the write lock (every unit when audit is on) sees every
        commit and none can happen until it ends: its clock now. Otherwise (a deferred read)
        the newest stamp of its snapshot: writers stamp while holding the lock, so one that
        this snapshot does not see stamps no earlier than the last commit it does see.
        """
        if self._horizon is not None:
            return self._horizon
        self.flush()
        connection = self.session.connection()
        if connection.dialect.name == "postgresql":
            now: datetime = self.session.execute(_PG_READER_CLOCK).scalar_one()
            oldest: datetime | None = self.session.execute(_PG_OLDEST_WRITER).scalar_one()
            horizon = now if oldest is None else min(now, oldest)
        elif connection.get_execution_options().get("rix_write"):
            horizon = now_utc()
        else:
            newest: datetime | None = self.session.execute(_MAX_STAMP).scalar_one()
            horizon = newest or _EPOCH
        if self._floor is not None:  # this transaction's own writes are not committed yet
            horizon = min(horizon, self._floor[0])
        self._horizon = _to_millisecond(horizon)
        return self._horizon

    def _queue(self, table: Table, rows: list[dict[str, Any]]) -> None:
        self._pending.setdefault(table, []).extend(rows)

    # -- reads --------------------------------------------------------------------------------

    def current(self, type_name: str, resource_id: str) -> Stored | None:
        """The current row (possibly a tombstone), or None if the id was never used."""
        mine = self._written.get((type_name, resource_id))
        if mine is not None:
            return dataclasses.replace(mine, method="PUT")  # as row_stored(row) would build it
        row = self.session.execute(
            _CURRENT, {"type_name": type_name, "resource_id": resource_id}
        ).first()
        return self.row_stored(row) if row else None

    def version(self, type_name: str, resource_id: str, version_id: int) -> Stored | None:
        """One historical version, or None."""
        self.flush()
        row = self.session.execute(
            select(VERSION).where(
                VERSION.c.resource_type == type_name,
                VERSION.c.resource_id == resource_id,
                VERSION.c.version_id == version_id,
            )
        ).first()
        return self._stored_version(row) if row else None

    def live_many(self, keys: set[tuple[str, str]]) -> list[Stored]:
        """The live resources among (type, id) keys."""
        if not keys:
            return []
        rows = self.session.execute(
            select(RESOURCE).where(
                tuple_(RESOURCE.c.resource_type, RESOURCE.c.resource_id).in_(sorted(keys)),
                RESOURCE.c.deleted == false(),
            )
        ).all()
        return [self.row_stored(row) for row in rows]

    def by_identifier(self, type_name: str, system: str | None, value: str) -> list[Stored]:
        """The live resources of a type carrying the identifier `system|value` (any system
        when None), found through the token index."""
        self.flush()
        token = INDEX_TABLES["token"]
        # A join, not `pk IN (subquery)`: half the planning time, on the hot path of PIXm
        # and of every conditional Patient feed.
        rows = self.session.execute(
            select(RESOURCE)
            .join(token, token.c.resource_pk == RESOURCE.c.pk)
            .where(
                token.c.resource_type == type_name,
                token.c.param == "identifier",
                token.c.code == value,
                *([token.c.system == system] if system is not None else []),
                RESOURCE.c.deleted == false(),
            )
        ).all()
        # A resource listing the same identifier twice has two index rows.
        return [self.row_stored(row) for row in {row.pk: row for row in rows}.values()]

    def has_identifier_system(self, type_name: str, system: str) -> bool:
        """True when some resource of the type was indexed with an identifier in `system`."""
        self.flush()
        token = INDEX_TABLES["token"]
        found = self.session.execute(
            select(token.c.resource_pk)
            .where(
                token.c.resource_type == type_name,
                token.c.param == "identifier",
                token.c.system == system,
            )
            .limit(1)
        ).first()
        return found is not None

    # -- writes -------------------------------------------------------------------------------

    def create(
        self, resource: dict[str, Any], resource_id: str | None = None, method: str = "POST"
    ) -> Stored:
        """Store a new resource (version 1) with a server-assigned id unless one is given;
        `method` is what history reports (PUT for update-as-create)."""
        type_name = resource["resourceType"]
        resource_id = resource_id or new_id()
        now = self._clock()
        content = self.stamp(resource, resource_id, 1, now)
        values = {
            "resource_type": type_name,
            "resource_id": resource_id,
            "version_id": 1,
            "last_updated": now,
            "deleted": False,
            "content": content,
        }
        # No savepoint per create: the taken (type, id) just inserts no row.
        dialect = self.session.get_bind().dialect.name
        if dialect == "postgresql":
            raw: Any = self.session.connection().connection.dbapi_connection
            with raw.cursor() as cursor:
                cursor.execute(
                    _PG_INSERT_IF_ABSENT,
                    (type_name, resource_id, 1, now, False, content),
                )
                row = cursor.fetchone()
            pk = None if row is None else int(row[0])
        elif (stmt := _INSERT_IF_ABSENT.get(dialect)) is not None:
            pk = self.session.execute(stmt, values).scalar_one_or_none()
        else:
            try:
                with self.session.begin_nested():
                    pk = self.session.execute(
                        insert(RESOURCE).values(**values).returning(RESOURCE.c.pk)
                    ).scalar_one()
            except IntegrityError:
                pk = None
        if pk is None:
            raise Conflict(f"{type_name}/{resource_id} already exists")
        stored = Stored(pk, type_name, resource_id, 1, now, False, content, method)
        self._written[(type_name, resource_id)] = stored
        self._write_version(stored)
        self._index(stored, resource)
        self._notify(stored)
        return stored

    def _notify(self, stored: Stored) -> None:
        for listener in self.listeners:
            listener(stored)

    def update(self, current: Stored, resource: dict[str, Any]) -> Stored:
        """Write the next version of `current` (which may be a tombstone)."""
        now = max(self._clock(), current.last_updated)
        version = current.version + 1
        content = self.stamp(resource, current.id, version, now)
        self._advance(current, version, now, deleted=False, content=content)
        stored = Stored(current.pk, current.type, current.id, version, now, False, content, "PUT")
        self._written[(stored.type, stored.id)] = stored
        self._write_version(stored)
        self._clear_index(current.pk)
        self._index(stored, resource)
        self._notify(stored)
        return stored

    def delete(self, current: Stored) -> Stored:
        """Write a tombstone version; the history keeps every earlier version."""
        now = max(self._clock(), current.last_updated)
        version = current.version + 1
        self._advance(current, version, now, deleted=True, content=None)
        stored = Stored(current.pk, current.type, current.id, version, now, True, None, "DELETE")
        self._written[(stored.type, stored.id)] = stored
        self._write_version(stored)
        self._clear_index(current.pk)
        self._notify(stored)
        return stored

    def _advance(
        self, current: Stored, version: int, now: datetime, *, deleted: bool, content: str | None
    ) -> None:
        # Optimistic lock: another writer that got there first makes this match no row.
        result = self.session.execute(
            update(RESOURCE)
            .where(RESOURCE.c.pk == current.pk, RESOURCE.c.version_id == current.version)
            .values(version_id=version, last_updated=now, deleted=deleted, content=content)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(
                f"{current.type}/{current.id} was changed concurrently; read it again and retry"
            )

    def _write_version(self, stored: Stored) -> None:
        row = {
            "resource_pk": stored.pk,
            "resource_type": stored.type,
            "resource_id": stored.id,
            "version_id": stored.version,
            "last_updated": stored.last_updated,
            "method": stored.method,
            "content": stored.content,
        }
        self._queue(VERSION, [row])

    def index(self, stored: Stored) -> None:
        """Write the search-index rows of a stored resource (records indexed after the fact)."""
        self._index(stored, stored.resource)

    def _index(self, stored: Stored, resource: dict[str, Any]) -> None:
        definition = self.registry.get(stored.type)
        fixed = {"resource_pk": stored.pk, "resource_type": stored.type}
        for type_, rows in index_rows(definition, resource).items():
            if rows:
                table = INDEX_TABLES[type_]
                columns = _COLUMNS[table.name]
                self._queue(table, [{c: fixed.get(c, row.get(c)) for c in columns} for row in rows])

    def _clear_index(self, pk: int) -> None:
        self.flush()
        for table in INDEX_TABLES.values():
            self.session.execute(delete(table).where(table.c.resource_pk == pk))

    def reindex(self, type_name: str | None = None) -> int:
        """Rebuild the index rows of live resources (after search parameters change); listeners
        hear every resource again (identity vigilance rebuilds its state)."""
        self.flush()
        query = select(RESOURCE).where(RESOURCE.c.deleted == false())
        if type_name:
            query = query.where(RESOURCE.c.resource_type == type_name)
        count = 0
        for row in self.session.execute(query).all():
            stored = self.row_stored(row)
            self._clear_index(stored.pk)
            self._index(stored, stored.resource)
            self._notify(stored)
            count += 1
        return count

    @staticmethod
    def stamp(resource: dict[str, Any], resource_id: str, version: int, now: datetime) -> str:
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(now)
        body = {"resourceType": resource["resourceType"], "id": resource_id, "meta": meta}
        body.update({k: v for k, v in resource.items() if k not in body})
        return _dumps(body)

    # -- search and history -------------------------------------------------------------------

    def search(self, query: SearchQuery) -> tuple[list[Stored], int | None]:
        """The page of matches and the total (None when not asked for)."""
        self.flush()
        wants_total = query.total != "none" or query.summary == "count"
        fetched = query.summary != "count" and query.count > 0
        rows: list[Any] = []
        last = False
        if fetched:
            page = self.compiler.select_page(query, peek=True)
            rows = list(self.session.execute(page).all())
            last = len(rows) <= query.count
            rows = rows[: query.count]
        total: int | None = None
        if wants_total:
            if last and (rows or query.offset == 0):
                # The page is the last one: its rows are the total (page and count read the
                # same snapshot), no count needed.
                total = query.offset + len(rows)
            else:
                total = self.session.execute(self.compiler.select_count(query)).scalar_one()
        return [self.row_stored(row) for row in rows], total

    def max_pk(self) -> int:
        """The newest resource's pk: the snapshot bound for stable paging."""
        return int(
            self.session.execute(select(func.coalesce(func.max(RESOURCE.c.pk), 0))).scalar_one()
        )

    def count_matches(self, query: SearchQuery, limit: int = 2) -> list[Stored]:
        """Up to `limit` matches (conditional interactions need 0, 1 or "several")."""
        limited = SearchQuery(type=query.type, criteria=query.criteria, count=limit)
        self.flush()
        rows = self.session.execute(self.compiler.select_page(limited)).all()
        return [self.row_stored(row) for row in rows]

    def includes(self, matches: list[Stored], includes: list[Include], limit: int) -> list[Stored]:
        """Targets of the matches' references named by _include entries."""
        if not matches or not includes:
            return []
        self.flush()
        pks = [m.pk for m in matches]
        conditions = []
        for inc in includes:
            if inc.wildcard:
                cond = (
                    REFERENCE.c.resource_type.in_(sorted({m.type for m in matches}))
                    if inc.source_type == "*"
                    else REFERENCE.c.resource_type == inc.source_type
                )
            else:
                assert inc.param is not None
                cond = (REFERENCE.c.resource_type == inc.source_type) & (
                    REFERENCE.c.param == inc.param.code
                )
            if inc.target_type:
                cond = cond & (REFERENCE.c.target_type == inc.target_type)
            conditions.append(cond)
        rows = self.session.execute(
            select(REFERENCE.c.target_type, REFERENCE.c.target_id)
            .where(
                REFERENCE.c.resource_pk.in_(pks),
                REFERENCE.c.target_id.is_not(None),
                or_(*conditions),
            )
            .distinct()
            .limit(limit)
        ).all()
        keys = {(t, i) for t, i in rows if t in self.registry}
        return self.live_many(keys)

    def revincludes(
        self, matches: list[Stored], revincludes: list[Include], limit: int
    ) -> list[Stored]:
        """Resources whose references named by _revinclude point at the matches."""
        if not matches or not revincludes:
            return []
        self.flush()
        by_type: dict[str, set[str]] = {}
        for m in matches:
            by_type.setdefault(m.type, set()).add(m.id)
        # `target_type = T AND target_id IN (...)` per type: a row-value IN list of the same
        # pairs costs the planner one OR branch per pair.
        targets = or_(
            *(
                and_(REFERENCE.c.target_type == t, REFERENCE.c.target_id.in_(sorted(ids)))
                for t, ids in sorted(by_type.items())
            )
        )
        conditions = []
        for inc in revincludes:
            cond = (
                REFERENCE.c.resource_type == inc.source_type
                if inc.source_type != "*"
                else REFERENCE.c.resource_type.is_not(None)
            )
            if not inc.wildcard:
                assert inc.param is not None
                cond = cond & (REFERENCE.c.param == inc.param.code)
            conditions.append(cond)
        r = RESOURCE
        rows = self.session.execute(
            select(r)
            .where(
                r.c.pk.in_(select(REFERENCE.c.resource_pk).where(targets, or_(*conditions))),
                r.c.deleted == false(),
            )
            .order_by(r.c.pk)
            .limit(limit)
        ).all()
        return [self.row_stored(row) for row in rows]

    def history(
        self,
        *,
        type_name: str | None = None,
        resource_id: str | None = None,
        since: datetime | None = None,
        at_most_seq: int | None = None,
        count: int = 20,
        offset: int = 0,
    ) -> tuple[list[Stored], int, int]:
        """History entries newest first, their total, and the snapshot seq bound to page with."""
        self.flush()
        conditions = []
        if type_name:
            conditions.append(VERSION.c.resource_type == type_name)
        else:  # audit records have their own trail; system history is the data's history
            conditions.append(VERSION.c.resource_type != "AuditEvent")
        if resource_id:
            conditions.append(VERSION.c.resource_id == resource_id)
        if since:
            conditions.append(VERSION.c.last_updated >= since)
        if at_most_seq is None:
            at_most_seq = int(
                self.session.execute(select(func.coalesce(func.max(VERSION.c.seq), 0))).scalar_one()
            )
        conditions.append(VERSION.c.seq <= at_most_seq)
        total = self.session.execute(
            select(func.count()).select_from(VERSION).where(*conditions)
        ).scalar_one()
        query: Select[Any] = (
            select(VERSION)
            .where(*conditions)
            .order_by(VERSION.c.seq.desc())
            .limit(count)
            .offset(offset)
        )
        rows = self.session.execute(query).all() if count else []
        return [self._stored_version(row) for row in rows], int(total), at_most_seq

    # -- row mapping --------------------------------------------------------------------------

    @staticmethod
    def row_stored(row: Any) -> Stored:
        """A row of the `resource` table (or of a statement selecting its columns)."""
        return Stored(
            row.pk,
            row.resource_type,
            row.resource_id,
            row.version_id,
            row.last_updated,
            row.deleted,
            row.content,
        )

    @staticmethod
    def _stored_version(row: Any) -> Stored:
        return Stored(
            row.resource_pk,
            row.resource_type,
            row.resource_id,
            row.version_id,
            row.last_updated,
            row.content is None,
            row.content,
            row.method,
        )
