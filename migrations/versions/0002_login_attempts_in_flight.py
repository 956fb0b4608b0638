"""Login attempts in flight: a reserved row is `pending` until its password is
checked; only finished failures lock an account, and pending rows make a further
attempt wait instead of being refused (service/accounts/throttle.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "login_failures",
        sa.Column("pending", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("login_failures", "pending")
