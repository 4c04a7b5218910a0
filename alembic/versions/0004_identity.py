"""identity vigilance: per-record matching traits and person, link decisions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 15:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity_record",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=False),
        sa.Column("birth_date", sa.String(length=10), nullable=True),
        sa.Column("names", sa.String(length=2000), nullable=False),
        sa.Column("ins", sa.String(length=200), nullable=True),
        sa.Column("ins_trusted", sa.Boolean(), nullable=False),
        sa.Column("systems", sa.String(length=4000), nullable=False),
        sa.Column("homonym", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("patient_id"),
    )
    op.create_index("ix_identity_record_person_id", "identity_record", ["person_id"])
    op.create_index("ix_identity_record_birth_date", "identity_record", ["birth_date"])
    op.create_index("ix_identity_record_ins", "identity_record", ["ins"])
    op.create_table(
        "identity_link",
        sa.Column("a", sa.String(length=64), nullable=False),
        sa.Column("b", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("a", "b"),
    )
    op.create_index("ix_identity_link_b", "identity_link", ["b"])
    op.create_index("ix_sp_token_system", "sp_token", ["resource_type", "param", "system"])


def downgrade() -> None:
    op.drop_index("ix_sp_token_system", table_name="sp_token")
    op.drop_index("ix_identity_link_b", table_name="identity_link")
    op.drop_table("identity_link")
    op.drop_index("ix_identity_record_ins", table_name="identity_record")
    op.drop_index("ix_identity_record_birth_date", table_name="identity_record")
    op.drop_index("ix_identity_record_person_id", table_name="identity_record")
    op.drop_table("identity_record")
