"""audit trail: records awaiting their chain link (sealed in order by the sealer)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column("resource_pk", BIGINT, autoincrement=False, nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("resource_pk"),
    )


def downgrade() -> None:
    op.drop_table("audit_pending")
