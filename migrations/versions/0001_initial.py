"""Initial schema: users, clients, token families, refresh tokens, signing keys,
revoked access tokens, security events, login-failure counters.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", _tz(), server_default=NOW, nullable=False),
        sa.Column("password_changed_at", _tz(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "clients",
        sa.Column("id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column(
            "grant_types", pg.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("scopes", pg.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("can_introspect", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", _tz(), server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "public = (secret_hash IS NULL)", name="ck_clients_public_has_no_secret"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_clients"),
    )
    op.create_table(
        "token_families",
        sa.Column("id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("client_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("created_at", _tz(), server_default=NOW, nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
        sa.Column("last_rotated_at", _tz(), nullable=True),
        sa.Column("revoked_at", _tz(), nullable=True),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "revoked_reason IS NULL OR revoked_reason IN ('reuse_detected', 'logout', 'admin', "
            "'user_disabled', 'client_revoked', 'password_changed')",
            name="ck_token_families_revoked_reason_known",
        ),
        sa.CheckConstraint(
            "(revoked_at IS NULL) = (revoked_reason IS NULL)",
            name="ck_token_families_revoked_has_reason",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], ondelete="CASCADE", name="fk_token_families_user_id_users"
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            ondelete="CASCADE",
            name="fk_token_families_client_id_clients",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_token_families"),
    )
    op.create_index(
        "ix_token_families_user_id_created_at", "token_families", ["user_id", "created_at"]
    )
    op.create_index("ix_token_families_client_id", "token_families", ["client_id"])
    op.create_index(
        "ix_token_families_revoked_at",
        "token_families",
        ["revoked_at"],
        postgresql_where=sa.text("revoked_at IS NOT NULL"),
    )
    op.create_index("ix_token_families_expires_at", "token_families", ["expires_at"])

    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("family_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("parent_hash", sa.LargeBinary(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("issued_at", _tz(), server_default=NOW, nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
        sa.Column("spent_at", _tz(), nullable=True),
        sa.Column("successor_box", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint("generation >= 1", name="ck_refresh_tokens_generation_positive"),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["token_families.id"],
            ondelete="CASCADE",
            name="fk_refresh_tokens_family_id_token_families",
        ),
        sa.PrimaryKeyConstraint("token_hash", name="pk_refresh_tokens"),
    )
    op.create_index(
        "uq_refresh_tokens_family_id_generation",
        "refresh_tokens",
        ["family_id", "generation"],
        unique=True,
    )
    op.create_index(
        "uq_refresh_tokens_live_family_id",
        "refresh_tokens",
        ["family_id"],
        unique=True,
        postgresql_where=sa.text("spent_at IS NULL"),
    )

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text(), nullable=False),
        sa.Column("alg", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("public_jwk", pg.JSONB(), nullable=False),
        sa.Column("private_box", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _tz(), server_default=NOW, nullable=False),
        sa.Column("activated_at", _tz(), nullable=True),
        sa.Column("retired_at", _tz(), nullable=True),
        sa.Column("revoked_at", _tz(), nullable=True),
        sa.Column("removed_at", _tz(), nullable=True),
        sa.CheckConstraint(
            "state IN ('next', 'active', 'retired', 'removed', 'revoked')",
            name="ck_signing_keys_state_known",
        ),
        sa.CheckConstraint("alg IN ('ES256', 'EdDSA', 'RS256')", name="ck_signing_keys_alg_known"),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )
    op.create_index(
        "uq_signing_keys_active",
        "signing_keys",
        ["state"],
        unique=True,
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_index(
        "uq_signing_keys_next",
        "signing_keys",
        ["state"],
        unique=True,
        postgresql_where=sa.text("state = 'next'"),
    )

    op.create_table(
        "revoked_access_tokens",
        sa.Column("jti", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
        sa.Column("revoked_at", _tz(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_revoked_access_tokens"),
    )

    op.create_table(
        "security_events",
        sa.Column("id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("at", _tz(), server_default=NOW, nullable=False),
        sa.Column("user_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("client_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("family_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("ip", pg.INET(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("detail", pg.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_security_events"),
        sa.UniqueConstraint("seq", name="uq_security_events_seq"),
    )
    op.create_index("ix_security_events_type_seq", "security_events", ["type", "seq"])
    op.create_index("ix_security_events_user_id_seq", "security_events", ["user_id", "seq"])
    op.create_index("ix_security_events_family_id_seq", "security_events", ["family_id", "seq"])

    op.create_table(
        "login_failures",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("subject_kind", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("at", _tz(), server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "subject_kind IN ('username', 'ip')", name="ck_login_failures_subject_kind_known"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_login_failures"),
    )
    op.create_index(
        "ix_login_failures_subject_kind_subject_at",
        "login_failures",
        ["subject_kind", "subject", "at"],
    )


def downgrade() -> None:
    for table in (
        "login_failures",
        "security_events",
        "revoked_access_tokens",
        "signing_keys",
        "refresh_tokens",
        "token_families",
        "clients",
        "users",
    ):
        op.drop_table(table)
