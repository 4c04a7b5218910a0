"""The audit trail store: AuditEvents are resources (searchable by ITI-81) plus a keyed hash
chain (HMAC-SHA256 over each record and its predecessor) that `rix audit verify` checks.

The MAC key is RIX_AUDIT_KEY (required in production, shared by every process) or, in
development, a key generated under RIX_DATA_DIR. Without the key, nobody can rewrite the chain
to hide an altered, inserted or removed record.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import TextClause, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from app.auth.keys import create_secret_file
from app.config import Settings
from app.fhir.values import now_utc
from app.storage.repository import Repository, Stored, new_id
from app.storage.tables import (
    AUDIT_CHAIN,
    AUDIT_HEAD,
    AUDIT_INDEX,
    AUDIT_PENDING,
    INDEX_TABLES,
    RESOURCE,
    VERSION,
)

KEY_FILE = "audit-chain.key"


def load_key(settings: Settings) -> bytes:
    """The chain's MAC key."""
    if settings.audit_key:
        return settings.audit_key.encode("utf-8")
    if settings.env == "production":
        raise RuntimeError("RIX_AUDIT_KEY must be set in production (shared by every process)")
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        create_secret_file(path, secrets.token_hex(32).encode("ascii"))
    return path.read_text().strip().encode("utf-8")


def link_mac(key: bytes, seq: int, previous: str, content: str) -> str:
    """The MAC of one link: binds the record's exact content to its place in the chain."""
    message = f"{seq}\n{previous}\n{content}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class AuditTrail:
    """Appends AuditEvents with their chain links; verifies and purges the chain."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def append(
        self, repo: Repository, events: list[dict[str, Any]], *, durable: bool = True
    ) -> list[Stored]:
        """Store `events` in the caller's transaction: a write and its record commit together.

        `durable=False` (a read's records) lets the commit return before the WAL reaches the
        disk (PostgreSQL's `synchronous_commit = off`, this transaction only): the record is
        committed and visible to every process before the response leaves, and on disk within
        the WAL writer's delay (200 ms by default); only a database crash inside that window
        could lose it. Data writes never use it; SQLite (WAL, synchronous=NORMAL) always
        commits this way.

        One statement on PostgreSQL (the records and their pending marks), no lock: the chain
        links are added by `seal`, in commit order, moments later. Search-index rows come
        later still (`catch_up`).
        """
        if not events:
            return []
        session = repo.session
        now = now_utc()
        rows = []
        for event in events:
            resource_id = new_id()
            rows.append(
                {
                    "resource_type": "AuditEvent",
                    "resource_id": resource_id,
                    "version_id": 1,
                    "last_updated": now,
                    "deleted": False,
                    "content": Repository.stamp(event, resource_id, 1, now),
                }
            )
        if session.get_bind().dialect.name == "postgresql":
            params: dict[str, Any] = {"now": now}
            for i, row in enumerate(rows):
                params[f"id{i}"], params[f"c{i}"] = row["resource_id"], row["content"]
            statement = _append_statement(len(rows), durable)
            pks = sorted(session.execute(statement, params).scalars().all())
        else:
            stored = insert(RESOURCE).returning(RESOURCE.c.pk, sort_by_parameter_order=True)
            pks = list(session.execute(stored, rows).scalars().all())
            session.execute(
                insert(AUDIT_PENDING), [{"resource_pk": pk, "recorded": now} for pk in pks]
            )
        return [
            Stored(pk, "AuditEvent", str(row["resource_id"]), 1, now, False, str(row["content"]))
            for pk, row in zip(pks, rows, strict=True)
        ]

    @staticmethod
    def pending(session: Session) -> bool:
        """True when some committed record awaits its seal."""
        return session.execute(select(AUDIT_PENDING.c.resource_pk).limit(1)).first() is not None

    def seal(self, session: Session, batch: int = 2000) -> int:
        """Link every committed pending record into the chain; returns how many.

        Sealers of every process queue on the head lock, so the chain has one order: the order
        in which records were sealed.
        """
        if not self.pending(session):
            return 0
        head = self._lock_head(session)
        seq, previous = head["last_seq"], head["last_mac"]
        total = 0
        while True:
            pending = session.execute(
                select(AUDIT_PENDING.c.resource_pk, AUDIT_PENDING.c.recorded, RESOURCE.c.content)
                .select_from(
                    # A record removed before its seal is still linked (with no content), so
                    # that `verify` reports it.
                    AUDIT_PENDING.outerjoin(RESOURCE, RESOURCE.c.pk == AUDIT_PENDING.c.resource_pk)
                )
                .order_by(AUDIT_PENDING.c.resource_pk)
                .limit(batch)
            ).all()
            if not pending:
                break
            links = []
            for row in pending:
                seq += 1
                previous = link_mac(self.key, seq, previous, row.content or "")
                link = {"seq": seq, "resource_pk": row.resource_pk, "recorded": row.recorded}
                links.append({**link, "mac": previous})
            session.execute(insert(AUDIT_CHAIN), links)
            done = [row.resource_pk for row in pending]
            session.execute(delete(AUDIT_PENDING).where(AUDIT_PENDING.c.resource_pk.in_(done)))
            total += len(pending)
            if len(pending) < batch:
                break
        session.execute(
            update(AUDIT_HEAD).where(AUDIT_HEAD.c.id == 1).values(last_seq=seq, last_mac=previous)
        )
        return total

    def catch_up(self, repo: Repository) -> int:
        """Index the records appended since the last catch-up; returns how many.

        Seals first, so a search sees every committed record. Seals commit in chain order
        (they hold the head lock until commit), so every link up to the committed head is
        there to index.
        """
        session = repo.session
        self.seal(session)
        query = select(AUDIT_INDEX.c.indexed_seq).where(AUDIT_INDEX.c.id == 1)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        done = session.execute(query).scalar_one_or_none()
        if done is None:
            session.execute(insert(AUDIT_INDEX).values(id=1, indexed_seq=0))
            done = 0
        head = session.execute(select(AUDIT_HEAD.c.last_seq).where(AUDIT_HEAD.c.id == 1))
        last = head.scalar_one_or_none() or 0
        if last <= done:
            return 0
        rows = session.execute(
            select(AUDIT_CHAIN.c.seq, RESOURCE)
            .select_from(AUDIT_CHAIN.join(RESOURCE, RESOURCE.c.pk == AUDIT_CHAIN.c.resource_pk))
            .where(AUDIT_CHAIN.c.seq > done, AUDIT_CHAIN.c.seq <= last)
            .order_by(AUDIT_CHAIN.c.seq)
        ).all()
        for row in rows:
            repo.index(
                Stored(
                    row.pk, "AuditEvent", row.resource_id, 1, row.last_updated, False, row.content
                )
            )
        session.execute(update(AUDIT_INDEX).where(AUDIT_INDEX.c.id == 1).values(indexed_seq=last))
        return len(rows)

    @staticmethod
    def _lock_head(session: Session) -> dict[str, Any]:
        query = select(AUDIT_HEAD).where(AUDIT_HEAD.c.id == 1)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        row = session.execute(query).mappings().first()
        if row is None:
            session.execute(
                insert(AUDIT_HEAD).values(
                    id=1, last_seq=0, last_mac="", anchor_seq=0, anchor_mac=""
                )
            )
            row = session.execute(query).mappings().one()
        return dict(row)

    # -- verification ---------------------------------------------------------------------------

    def verify(self, session: Session) -> list[str]:
        """Every problem found in the chain (empty when intact)."""
        problems: list[str] = []
        head = session.execute(select(AUDIT_HEAD)).mappings().first()
        if head is None:
            return problems
        expected_seq, previous = head["anchor_seq"], head["anchor_mac"]
        rows = session.execute(
            select(
                AUDIT_CHAIN.c.seq,
                AUDIT_CHAIN.c.mac,
                AUDIT_CHAIN.c.resource_pk,
                RESOURCE.c.content,
                RESOURCE.c.version_id,
            )
            .select_from(
                AUDIT_CHAIN.outerjoin(RESOURCE, RESOURCE.c.pk == AUDIT_CHAIN.c.resource_pk)
            )
            .order_by(AUDIT_CHAIN.c.seq)
        )
        chained: set[int] = set()
        for row in rows:
            chained.add(row.resource_pk)
            if row.seq != expected_seq + 1:
                problems.append(f"records {expected_seq + 1}..{row.seq - 1} removed from the chain")
            if row.content is None:
                problems.append(f"record {row.seq}: AuditEvent removed or emptied")
            elif row.version_id != 1:
                problems.append(
                    f"record {row.seq}: AuditEvent was modified (version {row.version_id})"
                )
            elif link_mac(self.key, row.seq, previous, row.content) != row.mac:
                problems.append(f"record {row.seq}: content or chain link altered")
            expected_seq, previous = row.seq, row.mac
        if expected_seq != head["last_seq"] or previous != head["last_mac"]:
            problems.append(
                f"chain ends at record {expected_seq}, head says {head['last_seq']}: records lost"
            )
        unchained = session.execute(
            select(func.count())
            .select_from(RESOURCE)
            .where(
                RESOURCE.c.resource_type == "AuditEvent",
                RESOURCE.c.pk.not_in(select(AUDIT_CHAIN.c.resource_pk)),
                RESOURCE.c.pk.not_in(select(AUDIT_PENDING.c.resource_pk)),
            )
        ).scalar_one()
        if unchained:
            problems.append(f"{unchained} AuditEvent(s) inserted outside the chain")
        return problems

    # -- retention ------------------------------------------------------------------------------

    def purge(self, session: Session, retention_days: int) -> int:
        """Delete records older than the retention period, oldest first, moving the anchor so
        the remaining chain still verifies. Returns how many records went."""
        cutoff: datetime = now_utc() - timedelta(days=retention_days)
        self._lock_head(session)
        doomed = session.execute(
            select(AUDIT_CHAIN.c.seq, AUDIT_CHAIN.c.mac, AUDIT_CHAIN.c.resource_pk)
            .where(AUDIT_CHAIN.c.recorded < cutoff)
            .order_by(AUDIT_CHAIN.c.seq)
        ).all()
        # Only a prefix of the chain can go: the anchor must stay a link of the chain.
        head = session.execute(select(AUDIT_HEAD)).mappings().one()
        prefix = []
        expected = head["anchor_seq"] + 1
        for row in doomed:
            if row.seq != expected:
                break
            prefix.append(row)
            expected += 1
        if not prefix:
            return 0
        pks = [r.resource_pk for r in prefix]
        for chunk in _chunks(pks, 500):
            for table in INDEX_TABLES.values():
                session.execute(delete(table).where(table.c.resource_pk.in_(chunk)))
            session.execute(delete(VERSION).where(VERSION.c.resource_pk.in_(chunk)))
            session.execute(delete(AUDIT_CHAIN).where(AUDIT_CHAIN.c.resource_pk.in_(chunk)))
            session.execute(delete(RESOURCE).where(RESOURCE.c.pk.in_(chunk)))
        last = prefix[-1]
        session.execute(
            update(AUDIT_HEAD)
            .where(AUDIT_HEAD.c.id == 1)
            .values(anchor_seq=last.seq, anchor_mac=last.mac)
        )
        return len(prefix)

    def export(
        self, session: Session, since: datetime | None, until: datetime | None
    ) -> Iterator[str]:
        """The AuditEvents recorded in [since, until), oldest first, as JSON lines."""
        query = (
            select(RESOURCE.c.content)
            .select_from(AUDIT_CHAIN.join(RESOURCE, RESOURCE.c.pk == AUDIT_CHAIN.c.resource_pk))
            .order_by(AUDIT_CHAIN.c.seq)
        )
        if since:
            query = query.where(AUDIT_CHAIN.c.recorded >= since)
        if until:
            query = query.where(AUDIT_CHAIN.c.recorded < until)
        for (content,) in session.execute(query.execution_options(yield_per=500)):
            yield content


@lru_cache(maxsize=32)
def _append_statement(n: int, durable: bool) -> TextClause:
    """PostgreSQL: store n records and mark them pending in one round trip (a data-modifying
    CTE), as plain SQL text so the statement is built once per n; pk order is list order.
    Not durable: the same round trip relaxes the transaction's commit."""
    values = ", ".join(f"('AuditEvent', :id{i}, 1, :now, false, :c{i})" for i in range(n))
    relax = "" if durable else ", (SELECT set_config('synchronous_commit', 'off', true)) AS r"
    return text(
        "WITH records AS (INSERT INTO resource"
        " (resource_type, resource_id, version_id, last_updated, deleted, content)"
        f" VALUES {values} RETURNING pk)"
        f" INSERT INTO audit_pending (resource_pk, recorded) SELECT pk, :now FROM records{relax}"
        " RETURNING resource_pk"
    )


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
