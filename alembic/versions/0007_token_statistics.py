"""token search: the planner learns that a token's type, parameter, system and code go together

Without extended statistics PostgreSQL multiplies the selectivities of `resource_type`,
`param`, `system` and `code` as if independent: with 2.5M Consents it took "an active consent
kind" for 3,000 rows out of 45M instead of 2M, and answered the per-request probe "is some
active opposition stored?" (`app.services.facts`) with a parallel bitmap scan of every one of
them (100-130 ms) instead of stopping at the first row (0.1 ms). Dependencies and n-distinct
statistics over the four columns correct the estimate; ANALYZE computes them now rather than at
the next autovacuum. SQLite is unchanged.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 22:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE STATISTICS IF NOT EXISTS st_sp_token_keys (dependencies, ndistinct)"
        " ON resource_type, param, system, code FROM sp_token"
    )
    op.execute("ANALYZE sp_token")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP STATISTICS IF EXISTS st_sp_token_keys")
