"""The schema, declared once with SQLAlchemy Core.

The runtime talks to PostgreSQL with hand-written SQL over asyncpg (the hot
paths cannot afford an ORM); these declarations are what the migrations are
checked against (`tests/test_migrations.py` autogenerates against them).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

NOW = text("now()")

users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("username", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("password_changed_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

clients = Table(
    "clients",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    # SHA-256 of the generated 256-bit secret; NULL for a public client.
    Column("secret_hash", LargeBinary, nullable=True),
    Column("public", Boolean, nullable=False),
    Column("grant_types", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("scopes", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("can_introspect", Boolean, nullable=False, server_default=text("false")),
    Column("is_admin", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # Cannot log in or refresh without a valid DPoP proof (CONTRACT 3.9).
    Column("require_dpop", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint("public = (secret_hash IS NULL)", name="public_has_no_secret"),
)

# One family = one login session. Its state lives on this row, so revoking a
# family (or all of a user's) is one UPDATE, never a walk over its tokens.
token_families = Table(
    "token_families",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "user_id", UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    Column(
        "client_id",
        UUID(as_uuid=True),
        ForeignKey("clients.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("scope", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_rotated_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", Text, nullable=True),
    # Where the session was opened (the password login) and last used (its
    # latest rotation; the login's until the first): CONTRACT 3.8. NULL for the
    # families older than migration 0003, and where the caller had no address.
    Column("login_ip", INET, nullable=True),
    Column("login_user_agent", Text, nullable=True),
    Column("last_ip", INET, nullable=True),
    Column("last_user_agent", Text, nullable=True),
    # The RFC 7638 thumbprint of the DPoP key the family is bound to (RFC 9449
    # §5, CONTRACT 3.9); NULL for an unbound family. Migration 0004.
    Column("dpop_jkt", Text, nullable=True),
    CheckConstraint(
        "revoked_reason IS NULL OR revoked_reason IN ('reuse_detected', 'logout', 'admin', "
        "'user_disabled', 'client_revoked', 'password_changed')",
        name="revoked_reason_known",
    ),
    CheckConstraint("(revoked_at IS NULL) = (revoked_reason IS NULL)", name="revoked_has_reason"),
    Index("ix_token_families_user_id_created_at", "user_id", "created_at"),
    Index("ix_token_families_client_id", "client_id"),
    Index(
        "ix_token_families_revoked_at",
        "revoked_at",
        postgresql_where=text("revoked_at IS NOT NULL"),
    ),
    Index("ix_token_families_expires_at", "expires_at"),
)

# Refresh tokens are keyed by their SHA-256 fingerprint: the store never holds a
# usable token. The unique (family_id, generation) and the partial unique index
# on live tokens make "no second branch" and "at most one live token per
# family" facts of the database, whatever the application does.
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column(
        "family_id",
        UUID(as_uuid=True),
        ForeignKey("token_families.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("parent_hash", LargeBinary, nullable=True),
    Column("generation", Integer, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("spent_at", DateTime(timezone=True), nullable=True),
    # The successor token, encrypted under a key derived from this (parent)
    # token, which the store never has: lets a retry within the grace window
    # receive the same successor (CONTRACT 3.3).
    Column("successor_box", LargeBinary, nullable=True),
    CheckConstraint("generation >= 1", name="generation_positive"),
    Index("uq_refresh_tokens_family_id_generation", "family_id", "generation", unique=True),
    Index(
        "uq_refresh_tokens_live_family_id",
        "family_id",
        unique=True,
        postgresql_where=text("spent_at IS NULL"),
    ),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    Column("alg", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("public_jwk", JSONB, nullable=False),
    # The private JWK, AES-256-GCM under a key derived from ROTOR_SECRET.
    Column("private_box", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("activated_at", DateTime(timezone=True), nullable=True),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("removed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(
        "state IN ('next', 'active', 'retired', 'removed', 'revoked')", name="state_known"
    ),
    CheckConstraint("alg IN ('ES256', 'EdDSA', 'RS256')", name="alg_known"),
    Index(
        "uq_signing_keys_active", "state", unique=True, postgresql_where=text("state = 'active'")
    ),
    Index("uq_signing_keys_next", "state", unique=True, postgresql_where=text("state = 'next'")),
)

# Access tokens revoked before their expiry (RFC 7009); rows go once expired.
revoked_access_tokens = Table(
    "revoked_access_tokens",
    metadata,
    Column("jti", UUID(as_uuid=True), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# The jti of every accepted DPoP proof, per endpoint, until its acceptance
# window ends: a replay is refused by any process (RFC 9449 §11.1). Pruned.
dpop_proof_jtis = Table(
    "dpop_proof_jtis",
    metadata,
    Column("endpoint", Text, primary_key=True),
    Column("jti", Text, primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_dpop_proof_jtis_expires_at", "expires_at"),
)

security_events = Table(
    "security_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("seq", BigInteger, Identity(), nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("user_id", UUID(as_uuid=True), nullable=True),
    Column("client_id", UUID(as_uuid=True), nullable=True),
    Column("family_id", UUID(as_uuid=True), nullable=True),
    Column("ip", INET, nullable=True),
    Column("user_agent", Text, nullable=True),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Index("ix_security_events_type_seq", "type", "seq"),
    Index("ix_security_events_user_id_seq", "user_id", "seq"),
    Index("ix_security_events_family_id_seq", "family_id", "seq"),
)

# One row per counted password attempt: per username (known or not) and per
# client IP. Rows older than the window no longer count and are pruned. A
# username row is `pending` while its attempt's password is being checked.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("subject_kind", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("pending", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint("subject_kind IN ('username', 'ip')", name="subject_kind_known"),
    Index("ix_login_failures_subject_kind_subject_at", "subject_kind", "subject", "at"),
)
