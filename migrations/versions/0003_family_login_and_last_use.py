"""Where each session was opened and last used (CONTRACT 3.8): the client IP and
user agent of a family's login and of its latest rotation.

Nullable, and NULL for the families that exist when this runs: their login and
rotations were never recorded, and nothing can recover them. Adding a nullable
column without a default rewrites no row, so this takes only a brief lock.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("login_ip", pg.INET),
    ("login_user_agent", sa.Text),
    ("last_ip", pg.INET),
    ("last_user_agent", sa.Text),
)


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("token_families", sa.Column(name, kind(), nullable=True))


def downgrade() -> None:
    for name, _kind in reversed(COLUMNS):
        op.drop_column("token_families", name)
