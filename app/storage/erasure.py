"""Erasure: the content of deleted resources removed from every version the store keeps.

A FHIR delete leaves a tombstone and keeps every earlier version for history and vread (FHIR R4
http.html#delete). A patient's deletion request (GDPR right to erasure, carried out by
`app.services.deletion`) needs more: once the exam is withdrawn, nothing of what it said may be
read back. `erase` blanks the content of every version of the given tombstoned resources: their
history rows keep type, id, version, method and timestamp only (a vread of an erased version
answers 410 like a deletion, since the repository reads a version without content as one), and
their search-index rows are removed, so that no search by identifier, UID or date can reach
them.

It works on the tables directly, in the caller's transaction: whatever the caller has queued
(the repository's pending history rows) must be flushed first, or the rows written after this
call would bring the content back. Physical erasure follows the database's own reclaiming: on
SQLite the freed cells are zeroed at once (`secure_delete`, for the erasure), on
PostgreSQL the old row versions go at the next (auto)vacuum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select, text, tuple_, update
from sqlalchemy.orm import Session

from app.storage.tables import INDEX_TABLES, RESOURCE, VERSION

# Keys per statement: well under SQLite's bound-parameter limit and PostgreSQL's comfort zone.
_BATCH = 200


@dataclass(frozen=True)
class Erased:
    """What `erase` removed: the resources and how many of their versions lost their content."""

    resources: tuple[tuple[str, str], ...]
    versions: int


class LiveResourceError(RuntimeError):
    """Erasing a resource that is not deleted: refused, the current row would keep a content
    its history no longer has (a programming error, never a client's)."""


def erase(session: Session, targets: Iterable[tuple[str, str]]) -> Erased:
    """Remove the content of every version of each (type, id) in `targets`, and their index
    rows. Every target must already be a tombstone (deleted); unknown ones are skipped."""
    keys = sorted(set(targets))
    found: list[tuple[str, str]] = []
    versions = 0
    # SQLite: zero the freed cells now rather than leave them until the page is reused; the
    # connection's own setting (a build may default to on) comes back afterwards.
    previous = None
    if keys and session.get_bind().dialect.name == "sqlite":
        previous = int(session.execute(text("PRAGMA secure_delete")).scalar_one())
        session.execute(text("PRAGMA secure_delete = 1"))
    try:
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            rows = session.execute(
                select(
                    RESOURCE.c.pk,
                    RESOURCE.c.resource_type,
                    RESOURCE.c.resource_id,
                    RESOURCE.c.deleted,
                ).where(tuple_(RESOURCE.c.resource_type, RESOURCE.c.resource_id).in_(chunk))
            ).all()
            live = sorted(f"{r.resource_type}/{r.resource_id}" for r in rows if not r.deleted)
            if live:
                raise LiveResourceError(f"Not deleted, so not erased: {', '.join(live)}")
            pks = [r.pk for r in rows]
            if not pks:
                continue
            found.extend((r.resource_type, r.resource_id) for r in rows)
            result = session.execute(
                update(VERSION)
                .where(
                    tuple_(VERSION.c.resource_type, VERSION.c.resource_id).in_(chunk),
                    VERSION.c.content.is_not(None),
                )
                .values(content=None)
            )
            versions += int(result.rowcount)  # type: ignore[attr-defined]
            session.execute(update(RESOURCE).where(RESOURCE.c.pk.in_(pks)).values(content=None))
            for table in INDEX_TABLES.values():
                session.execute(delete(table).where(table.c.resource_pk.in_(pks)))
    finally:
        if previous is not None:
            session.execute(text(f"PRAGMA secure_delete = {1 if previous else 0}"))
    return Erased(tuple(sorted(found)), versions)
