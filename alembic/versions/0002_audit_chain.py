"""audit trail: hash-chain links, the chain head, the search-index watermark

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_chain",
        sa.Column("seq", BIGINT, autoincrement=False, nullable=False),
        sa.Column("resource_pk", BIGINT, nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_audit_chain_resource_pk", "audit_chain", ["resource_pk"], unique=False)
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", BIGINT, nullable=False),
        sa.Column("last_mac", sa.String(length=64), nullable=False),
        sa.Column("anchor_seq", BIGINT, nullable=False),
        sa.Column("anchor_mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_index",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("indexed_seq", BIGINT, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO audit_index (id, indexed_seq) VALUES (1, 0)")
    # The head row exists from the start, so concurrent first appends lock the same row.
    op.execute(
        "INSERT INTO audit_head (id, last_seq, last_mac, anchor_seq, anchor_mac) "
        "VALUES (1, 0, '', 0, '')"
    )


def downgrade() -> None:
    op.drop_table("audit_index")
    op.drop_table("audit_head")
    op.drop_index("ix_audit_chain_resource_pk", table_name="audit_chain")
    op.drop_table("audit_chain")
