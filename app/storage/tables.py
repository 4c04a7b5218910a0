"""SQLModel tables: one generic versioned resource store plus typed search-index tables.

Every resource type shares these tables, so registering a new type never needs a migration
(the HAPI / medplum / microsoft fhir-server layout).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

metadata = SQLModel.metadata


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_BIGINT = BigInteger().with_variant(Integer, "sqlite")


def _pk() -> Column[int]:
    return Column(_BIGINT, primary_key=True, autoincrement=True)


def _utc(*, nullable: bool = False) -> Column[datetime]:
    # Naive UTC on purpose: both databases compare and index it the same way.
    return Column(DateTime(timezone=False), nullable=nullable)


def _resource_fk() -> Column[int]:
    return Column(_BIGINT, ForeignKey("resource.pk", ondelete="CASCADE"), nullable=False)


class ResourceRow(SQLModel, table=True):
    """The current version of each resource (a tombstone when deleted).

    `pk` grows with creation order: search paging uses it as a snapshot cut-off so that
    resources created while a client pages never shift the pages it has not read yet.
    """

    __tablename__ = "resource"
    __table_args__ = (
        UniqueConstraint("resource_type", "resource_id", name="uq_resource_type_id"),
        Index("ix_resource_type_updated", "resource_type", "last_updated"),
    )

    pk: int | None = Field(default=None, sa_column=_pk())
    resource_type: str = Field(max_length=64)
    resource_id: str = Field(max_length=64)
    version_id: int
    last_updated: datetime = Field(sa_column=_utc())
    deleted: bool = False
    content: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class ResourceVersionRow(SQLModel, table=True):
    """Every version ever written (history); `seq` orders the whole server's history."""

    __tablename__ = "resource_version"
    __table_args__ = (
        UniqueConstraint("resource_type", "resource_id", "version_id", name="uq_version"),
        Index("ix_version_type_seq", "resource_type", "seq"),
        Index("ix_version_updated", "last_updated"),
    )

    seq: int | None = Field(default=None, sa_column=_pk())
    resource_pk: int = Field(sa_column=_resource_fk())
    resource_type: str = Field(max_length=64)
    resource_id: str = Field(max_length=64)
    version_id: int
    last_updated: datetime = Field(sa_column=_utc())
    method: str = Field(max_length=8)
    content: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class TokenIndex(SQLModel, table=True):
    """Token search values: codes, identifiers, booleans (and `:text` display text)."""

    __tablename__ = "sp_token"
    __table_args__ = (
        Index("ix_sp_token_code", "resource_type", "param", "code", "system"),
        Index("ix_sp_token_res", "resource_pk"),
        # Which identifier domains exist (PIXm: an unknown domain is an error, not "no match").
        Index("ix_sp_token_system", "resource_type", "param", "system"),
    )

    id: int | None = Field(default=None, sa_column=_pk())
    resource_pk: int = Field(sa_column=_resource_fk())
    resource_type: str = Field(max_length=64)
    param: str = Field(max_length=128)
    system: str | None = Field(default=None, max_length=512)
    code: str | None = Field(default=None, max_length=512)
    text: str | None = Field(default=None, max_length=1024)


class StringIndex(SQLModel, table=True):
    """String search values, normalised (case, accents, punctuation) plus the exact original."""

    __tablename__ = "sp_string"
    __table_args__ = (
        # Pattern operators on PostgreSQL: string search is a prefix match (`LIKE 'dupont%'`),
        # which a B-tree in a non-C collation (C.UTF-8 included) cannot serve.
        Index(
            "ix_sp_string_value",
            "resource_type",
            "param",
            "value",
            postgresql_ops={"value": "varchar_pattern_ops"},
        ),
        Index("ix_sp_string_res", "resource_pk"),
    )

    id: int | None = Field(default=None, sa_column=_pk())
    resource_pk: int = Field(sa_column=_resource_fk())
    resource_type: str = Field(max_length=64)
    param: str = Field(max_length=128)
    value: str = Field(max_length=1024)
    exact: str = Field(max_length=1024)


class DateIndex(SQLModel, table=True):
    """Date search values as a [low, high) UTC range carrying the value's precision."""

    __tablename__ = "sp_date"
    __table_args__ = (
        Index("ix_sp_date_range", "resource_type", "param", "low", "high"),
        Index("ix_sp_date_res", "resource_pk", "param"),
    )

    id: int | None = Field(default=None, sa_column=_pk())
    resource_pk: int = Field(sa_column=_resource_fk())
    resource_type: str = Field(max_length=64)
    param: str = Field(max_length=128)
    low: datetime = Field(sa_column=_utc())
    high: datetime = Field(sa_column=_utc())


class ReferenceIndex(SQLModel, table=True):
    """Reference search values: local targets (type/id), external URLs, logical identifiers."""

    __tablename__ = "sp_reference"
    __table_args__ = (
        Index("ix_sp_reference_target", "target_id", "target_type", "param", "resource_type"),
        Index("ix_sp_reference_res", "resource_pk", "param"),
    )

    id: int | None = Field(default=None, sa_column=_pk())
    resource_pk: int = Field(sa_column=_resource_fk())
    resource_type: str = Field(max_length=64)
    param: str = Field(max_length=128)
    target_type: str | None = Field(default=None, max_length=64)
    target_id: str | None = Field(default=None, max_length=64)
    url: str | None = Field(default=None, max_length=1024)
    identifier_system: str | None = Field(default=None, max_length=512)
    identifier_value: str | None = Field(default=None, max_length=512)


class UriIndex(SQLModel, table=True):
    """URI search values (and canonical references, `_profile`)."""

    __tablename__ = "sp_uri"
    __table_args__ = (
        Index("ix_sp_uri_value", "resource_type", "param", "value"),
        Index("ix_sp_uri_res", "resource_pk"),
    )

    id: int | None = Field(default=None, sa_column=_pk())
    resource_pk: int = Field(sa_column=_resource_fk())
    resource_type: str = Field(max_length=64)
    param: str = Field(max_length=128)
    value: str = Field(max_length=1024)


class NumberIndex(SQLModel, table=True):
    """Number search values as a [low, high] interval given by the value's precision."""

    __tablename__ = "sp_number"
    __table_args__ = (
        Index("ix_sp_number_value", "resource_type", "param", "low"),
        Index("ix_sp_number_res", "resource_pk"),
    )

    id: int | None = Field(default=None, sa_column=_pk())
    resource_pk: int = Field(sa_column=_resource_fk())
    resource_type: str = Field(max_length=64)
    param: str = Field(max_length=128)
    low: float
    high: float


class AuditChainRow(SQLModel, table=True):
    """The tamper-evidence chain of AuditEvents: each link MACs its record and the previous link."""

    __tablename__ = "audit_chain"

    seq: int = Field(sa_column=Column(_BIGINT, primary_key=True, autoincrement=False))
    resource_pk: int = Field(sa_column=Column(_BIGINT, nullable=False, index=True))
    recorded: datetime = Field(sa_column=_utc())
    mac: str = Field(max_length=64)


class AuditPendingRow(SQLModel, table=True):
    """AuditEvents committed but not yet linked into the chain.

    A request stores its records here in one statement and never waits for the chain's lock;
    the sealer (every process, every RIX_AUDIT_SEAL_INTERVAL seconds, and before any audit
    search, verification or export) links them in commit order.
    """

    __tablename__ = "audit_pending"

    resource_pk: int = Field(sa_column=Column(_BIGINT, primary_key=True, autoincrement=False))
    recorded: datetime = Field(sa_column=_utc())


class AuditHeadRow(SQLModel, table=True):
    """The chain's single head row: last link, and the anchor left by retention purges.

    Appending locks this row, which orders concurrent writers (every process) into one chain.
    """

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    last_seq: int = Field(default=0, sa_column=Column(_BIGINT, nullable=False))
    last_mac: str = Field(default="", max_length=64)
    anchor_seq: int = Field(default=0, sa_column=Column(_BIGINT, nullable=False))
    anchor_mac: str = Field(default="", max_length=64)


class AuditIndexRow(SQLModel, table=True):
    """How far the search index of AuditEvents has caught up with the chain (ITI-81 search).

    Appending a record stores it and its chain link only; its search-index rows are written
    later, before any AuditEvent search and by `rix maintenance`, so that auditing a read costs
    a few statements instead of a dozen. A row of its own, so catching up never blocks appends.
    """

    __tablename__ = "audit_index"

    id: int = Field(default=1, primary_key=True)
    indexed_seq: int = Field(default=0, sa_column=Column(_BIGINT, nullable=False))


class IdentityRecordRow(SQLModel, table=True):
    """Identity vigilance: one row per live Patient record, with what matching compares and
    the person it belongs to (`person_id`: the component of its links)."""

    __tablename__ = "identity_record"

    patient_id: str = Field(primary_key=True, max_length=64)
    person_id: str = Field(max_length=64, index=True)
    birth_date: str | None = Field(default=None, max_length=10, index=True)
    names: str = Field(default="", max_length=2000)
    ins: str | None = Field(default=None, max_length=200, index=True)
    ins_trusted: bool = False
    systems: str = Field(default="", max_length=4000)
    homonym: bool = False


class IdentityLinkRow(SQLModel, table=True):
    """A decision about two records (`a` < `b`): `linked` (one person) or `distinct` (two
    people), on what basis (`ins`, `operator`, `site`), by whom and why."""

    __tablename__ = "identity_link"

    a: str = Field(primary_key=True, max_length=64)
    b: str = Field(primary_key=True, max_length=64, index=True)
    state: str = Field(max_length=16)
    basis: str = Field(max_length=16)
    author: str = Field(default="", max_length=256)
    reason: str = Field(default="", max_length=2000)
    at: datetime = Field(sa_column=_utc())


class SiteHealthRow(SQLModel, table=True):
    """The last contacts with a site's PACS endpoint: when it last answered, its last error."""

    __tablename__ = "site_health"

    endpoint_id: str = Field(primary_key=True, max_length=64)
    last_success: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_error_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_error: str | None = Field(default=None, max_length=2000)


def table_of(model: type[SQLModel]) -> Table:
    """The Core table behind a SQLModel class (for set-based SQL)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


RESOURCE = table_of(ResourceRow)
VERSION = table_of(ResourceVersionRow)
AUDIT_CHAIN = table_of(AuditChainRow)
AUDIT_HEAD = table_of(AuditHeadRow)
AUDIT_PENDING = table_of(AuditPendingRow)
IDENTITY_RECORD = table_of(IdentityRecordRow)
IDENTITY_LINK = table_of(IdentityLinkRow)
SITE_HEALTH = table_of(SiteHealthRow)
AUDIT_INDEX = table_of(AuditIndexRow)
# Index tables by search-parameter type.
INDEX_TABLES: dict[str, Table] = {
    "token": table_of(TokenIndex),
    "string": table_of(StringIndex),
    "date": table_of(DateIndex),
    "reference": table_of(ReferenceIndex),
    "uri": table_of(UriIndex),
    "number": table_of(NumberIndex),
}
