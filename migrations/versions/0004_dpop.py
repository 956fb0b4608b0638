"""DPoP (RFC 9449, CONTRACT 3.9): a family bound to a proof key, clients that
require it, and the proof jtis already seen.

- `token_families.dpop_jkt`: the RFC 7638 SHA-256 thumbprint of the key the
  family is bound to (RFC 9449 §5); NULL for an unbound family, which every
  family older than this migration is. Nullable with no default: no row is
  rewritten.
- `clients.require_dpop`: a client that cannot log in or refresh without a
  valid proof. `DEFAULT false` is a constant default, so PostgreSQL 11+ adds
  it without rewriting the table.
- `dpop_proof_jtis`: one row per accepted proof, keyed by (endpoint, jti), so a
  replay at the same endpoint is refused by any Rotor process (RFC 9449 §11.1);
  rows go once `expires_at` (the end of the proof's acceptance window) passes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("token_families", sa.Column("dpop_jkt", sa.Text(), nullable=True))
    op.add_column(
        "clients",
        sa.Column("require_dpop", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_table(
        "dpop_proof_jtis",
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("jti", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("endpoint", "jti", name="pk_dpop_proof_jtis"),
    )
    op.create_index("ix_dpop_proof_jtis_expires_at", "dpop_proof_jtis", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_dpop_proof_jtis_expires_at", table_name="dpop_proof_jtis")
    op.drop_table("dpop_proof_jtis")
    op.drop_column("clients", "require_dpop")
    op.drop_column("token_families", "dpop_jkt")
