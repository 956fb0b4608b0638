"""The store of token families, their refresh tokens and revoked access-token jtis.

Every statement that reads or writes these tables is here, and so is the one
definition of a *live* family (CONTRACT section 2): not revoked, not past its
absolute expiry, its live refresh token not idled out, its user enabled. The
conditions are composed from the fragments below, never written out again.
All times are the database's (`now()`), so every Rotor process agrees.
"""

from __future__ import annotations

import uuid
from typing import Literal

import asyncpg

from service.db.events import INSERT_EVENT
from service.db.pool import Connection
from service.events import Caller

NOW = "now()"


def live_token(t: str, at: str = NOW) -> str:
    """Refresh token `t` is unspent and not idled out at `at`."""
    return f"{t}.spent_at IS NULL AND {t}.expires_at > {at}"


def has_live_token(f: str, at: str = NOW) -> str:
    return (
        f"EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family_id = {f}.id "
        f"AND {live_token('r', at)})"
    )


def family_open(f: str, u: str) -> str:
    """Family `f` (of user `u`) is live but for its refresh token's idle window:
    with a live token `t` of the family this is the whole live-family predicate,
    since at most one token of a family is live."""
    return f"{f}.revoked_at IS NULL AND {f}.expires_at > {NOW} AND NOT {u}.disabled"


def family_live(f: str, u: str) -> str:
    """The live-family predicate (CONTRACT section 2)."""
    return f"({family_open(f, u)} AND {has_live_token(f)})"


def family_expired(f: str, at: str = NOW) -> str:
    """Past its absolute limit, or its live refresh token idled out, at `at`."""
    return f"({f}.expires_at <= {at} OR NOT {has_live_token(f, at)})"


# CONTRACT 2: status reads revoked before expired before active.
FAMILY_STATUS = f"""
CASE
    WHEN f.revoked_at IS NOT NULL THEN 'revoked'
    WHEN {family_expired("f")} THEN 'expired'
    ELSE 'active'
END
"""

FAMILY_COLUMNS = f"""
f.id, f.user_id, f.client_id, f.scope, f.created_at, f.last_rotated_at, f.expires_at,
f.revoked_at, f.revoked_reason, {FAMILY_STATUS} AS status
"""

RevokeBy = Literal["family", "user", "client"]
_REVOKE_FILTERS: dict[RevokeBy, str] = {
    "family": "id = $4",
    "user": "user_id = $4",
    "client": "client_id = $4",
}
_OWNER_TABLES: dict[RevokeBy, str] = {
    "family": "token_families",
    "user": "users",
    "client": "clients",
}


# --- login -------------------------------------------------------------------


async def start(
    connection: Connection,
    *,
    family_id: uuid.UUID,
    user_id: uuid.UUID,
    client_id: uuid.UUID,
    scope: str,
    max_ttl: int,
    token_hash: bytes,
    idle_ttl: int,
    ip: str | None,
    user_agent: str | None,
    dpop_jkt: str | None = None,
) -> None:
    """A new family and its generation-1 refresh token, in one round trip. The
    token's idle window never reaches past the family's absolute limit. The
    login's IP and user agent are also the last use's, until the first rotation.
    `dpop_jkt` binds the family to a DPoP key (RFC 9449 §5), for good."""
    await connection.execute(
        """
        WITH family AS (
            INSERT INTO token_families (id, user_id, client_id, scope, expires_at,
                                        login_ip, login_user_agent, last_ip, last_user_agent,
                                        dpop_jkt)
            VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $8, $9, $8, $9, $10)
            RETURNING id, expires_at
        )
        INSERT INTO refresh_tokens (token_hash, family_id, generation, expires_at)
        SELECT $6, id, 1, least(now() + make_interval(secs => $7), expires_at) FROM family
        """,
        family_id,
        user_id,
        client_id,
        scope,
        max_ttl,
        token_hash,
        idle_ttl,
        ip,
        user_agent,
        dpop_jkt,
    )


# --- rotation (RFC 6749 section 6, RFC 9700 section 4.14) --------------------

# The compare-and-set, for all the rotations of one moment together
# (service/db/batch.py): one row per rotated token, `i` its request's position.
# The same token twice in one batch matches once (a target row is updated by
# one join row); the other request finds it spent, as it would a moment later.
# $6 is the idle window; $7 and $8 the callers' IPs and user agents, the
# family's last use (CONTRACT 3.8), set in the same statement. A family is
# touched by one row at most: at most one of its tokens is live.
#
# `found` reads, for each presented hash, its token by primary key, then that
# token's family and the family's user by theirs, and evaluates the family's
# checks there: a materialized CTE, so the plan can only go from a presented
# hash to its token, family and user, one probe each, whatever the statistics
# say. The UPDATE then joins nothing but `found`. Two plans this replaced
# (issue 16): joined directly (f.id = t.family_id, f.client_id = q.client_id),
# the generic plan (service/db/pool.py) started from the client's families and
# probed each one's live token in the partial index, whose entries for spent
# tokens stay until vacuum: 933 buffers and 0.58 ms of PostgreSQL CPU per
# rotation, growing with the chains. With the token read first but the family
# still joined in the UPDATE, a plan made on a young store (no statistics yet)
# scanned every open family of the store through ix_token_families_expires_at
# for each batch and filtered the join (320 families: "Rows Removed by Join
# Filter: 2552" for a batch of 8), 0.25 ms of PostgreSQL CPU per rotation of
# the chain load against 0.09 for distinct families. $9 the
# thumbprints of the requests' verified DPoP proofs (NULL: none): a bound
# family rotates only with a proof by its key (RFC 9449 §5), an unbound one
# with or without a proof; the others are "look closer", nothing spent.
ROTATE_SQL = f"""
WITH input AS (
    SELECT * FROM unnest($1::bytea[], $2::uuid[], $3::bytea[], $4::bytea[], $5::text[],
                         $7::inet[], $8::text[], $9::text[])
        WITH ORDINALITY AS q(token_hash, client_id, box, successor_hash, requested,
                             ip, user_agent, jkt, i)
), found AS MATERIALIZED (
    SELECT q.*, t.family_id, f.client_id AS family_client_id, f.user_id, f.scope,
           f.expires_at AS family_expires_at, f.dpop_jkt,
           ({family_open("f", "u")}) AS family_open
    FROM input q
    JOIN refresh_tokens t ON t.token_hash = q.token_hash
    JOIN token_families f ON f.id = t.family_id
    JOIN users u ON u.id = f.user_id
), presented AS (
    UPDATE refresh_tokens t
    SET spent_at = now(), successor_box = q.box
    FROM found q
    WHERE t.token_hash = q.token_hash
      AND {live_token("t")}
      AND q.family_client_id = q.client_id
      AND q.family_open
      AND (q.requested IS NULL
           OR string_to_array(q.scope, ' ') @> string_to_array(q.requested, ' '))
      AND (q.dpop_jkt IS NULL OR q.dpop_jkt = q.jkt)
    RETURNING q.i, q.successor_hash, q.ip, q.user_agent, t.token_hash, t.family_id,
              t.generation, q.user_id, q.scope, q.family_expires_at AS expires_at, q.dpop_jkt
), successor AS (
    INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, generation, expires_at)
    SELECT successor_hash, family_id, token_hash, generation + 1,
           least(now() + make_interval(secs => $6), expires_at)
    FROM presented
), touched AS (
    UPDATE token_families f
    SET last_rotated_at = now(), last_ip = p.ip, last_user_agent = p.user_agent
    FROM presented p
    WHERE f.id = p.family_id
)
SELECT i, family_id, generation, user_id, scope, dpop_jkt FROM presented
"""


async def rotate(
    connection: Connection,
    *,
    token_hashes: list[bytes],
    client_ids: list[uuid.UUID],
    boxes: list[bytes | None],
    successor_hashes: list[bytes],
    requested: list[str | None],
    idle_ttl: int,
    ips: list[str | None],
    user_agents: list[str | None],
    jkts: list[str | None],
) -> list[asyncpg.Record | None]:
    """Spend each presented token that is live, issued to its client, of a live
    family whose scope covers the request, insert its successor, and record the
    family's last use: one statement. The answer per position: the rotated row,
    or None ("look closer")."""
    rows = await connection.fetch(
        ROTATE_SQL,
        token_hashes,
        client_ids,
        boxes,
        successor_hashes,
        requested,
        idle_ttl,
        ips,
        user_agents,
        jkts,
    )
    by_position = {row["i"]: row for row in rows}
    return [by_position.get(i) for i in range(1, len(token_hashes) + 1)]


INSPECT_SQL = f"""
SELECT t.family_id, t.generation, t.successor_box,
       t.spent_at IS NOT NULL AS spent,
       t.expires_at > now() AS unexpired,
       extract(epoch FROM now() - t.spent_at)::float8 AS seconds_since_spent,
       f.client_id, f.user_id, f.scope, f.dpop_jkt,
       ({family_open("f", "u")}) AS family_open,
       c.token_hash AS child_hash,
       ({live_token("c")}) AS child_live
FROM refresh_tokens t
JOIN token_families f ON f.id = t.family_id
JOIN users u ON u.id = f.user_id
LEFT JOIN refresh_tokens c ON c.family_id = t.family_id AND c.generation = t.generation + 1
WHERE t.token_hash = $1
"""


async def inspect(connection: Connection, token_hash: bytes) -> asyncpg.Record | None:
    """Why a token did not rotate: its own state, its family's, its successor's."""
    row: asyncpg.Record | None = await connection.fetchrow(INSPECT_SQL, token_hash)
    return row


# Revoke the family (if still live) and record both events in one statement:
# it commits on its own, before the error is answered.
REVOKE_FOR_REUSE_SQL = f"""
WITH revoked AS (
    UPDATE token_families SET revoked_at = now(), revoked_reason = 'reuse_detected'
    WHERE id = $1 AND revoked_at IS NULL
    RETURNING id, user_id, client_id
), reuse_event AS (
    {INSERT_EVENT}
    VALUES ($2, 'reuse_detected', $4, $5, $1, $6::inet, $7, $8)
), revoked_event AS (
    {INSERT_EVENT}
    SELECT $3, 'family_revoked', user_id, client_id, id, $6::inet, $7,
           '{{"reason": "reuse_detected"}}'::jsonb
    FROM revoked
)
SELECT count(*) FROM revoked
"""


async def revoke_for_reuse(
    connection: Connection,
    *,
    family_id: uuid.UUID,
    user_id: uuid.UUID,
    client_id: uuid.UUID,
    caller: Caller,
    detail: dict[str, object],
) -> int:
    """Revoke the family for reuse and record the events; 1 if newly revoked."""
    count: int = await connection.fetchval(
        REVOKE_FOR_REUSE_SQL,
        family_id,
        uuid.uuid4(),
        uuid.uuid4(),
        user_id,
        client_id,
        caller.ip,
        caller.user_agent,
        detail,
    )
    return count


# --- revocation --------------------------------------------------------------

# Revoke every family the target matches and record one family_revoked event
# per family, in one statement. $1 reason, $2 ip, $3 user agent; from $4 on,
# the target's.
_REVOKE_TEMPLATE = f"""
WITH revoked AS (
    UPDATE token_families f SET revoked_at = now(), revoked_reason = $1
    {{target}}
    RETURNING f.id, f.user_id, f.client_id
), events AS (
    {INSERT_EVENT}
    SELECT gen_random_uuid(), 'family_revoked', user_id, client_id, id, $2::inet, $3,
           jsonb_build_object('reason', $1::text)
    FROM revoked
)
SELECT count(*) FROM revoked
"""
# Operators': every not yet revoked family of one family, user or client ($4).
_REVOKE_SQL = {
    by: _REVOKE_TEMPLATE.format(target=f"WHERE f.revoked_at IS NULL AND ({sql})")
    for by, sql in _REVOKE_FILTERS.items()
}

# The user's own (CONTRACT 3.8): live families only, and only the user's ($4):
# the one family $5, or every other one. An expired family is already dead and
# is left as it is: not revoked, not counted (a DELETE of it is a 404).
OwnRevoke = Literal["one", "others"]
_OWN_REVOKE_FILTERS: dict[OwnRevoke, str] = {"one": "f.id = $5", "others": "f.id <> $5"}
_OWN_REVOKE_SQL = {
    which: _REVOKE_TEMPLATE.format(
        target=(
            f"FROM users u WHERE u.id = f.user_id AND f.user_id = $4 AND {sql} "
            f"AND {family_live('f', 'u')}"
        )
    )
    for which, sql in _OWN_REVOKE_FILTERS.items()
}


async def revoke(
    connection: Connection, by: RevokeBy, owner: uuid.UUID, reason: str, caller: Caller | None
) -> int:
    """Revoke the live families of one family, user or client: the number newly revoked."""
    count: int = await connection.fetchval(
        _REVOKE_SQL[by],
        reason,
        caller.ip if caller else None,
        caller.user_agent if caller else None,
        owner,
    )
    return count


async def revoke_own(
    connection: Connection,
    which: OwnRevoke,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    reason: str,
    caller: Caller,
) -> int:
    """Revoke the user's live family `family_id` (`which="one"`), or every live
    family of the user but that one (`"others"`): the number revoked."""
    count: int = await connection.fetchval(
        _OWN_REVOKE_SQL[which], reason, caller.ip, caller.user_agent, user_id, family_id
    )
    return count


async def owner_exists(connection: Connection, by: RevokeBy, owner: uuid.UUID) -> bool:
    exists: bool = await connection.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {_OWNER_TABLES[by]} WHERE id = $1)", owner
    )
    return exists


async def family_of_token(connection: Connection, token_hash: bytes) -> asyncpg.Record | None:
    """(family_id, client_id) of a refresh token, live or spent."""
    row: asyncpg.Record | None = await connection.fetchrow(
        "SELECT t.family_id, f.client_id FROM refresh_tokens t "
        "JOIN token_families f ON f.id = t.family_id WHERE t.token_hash = $1",
        token_hash,
    )
    return row


async def revoke_jti(connection: Connection, jti: uuid.UUID, expires_at: float) -> None:
    """An access token's jti, revoked until the token expires."""
    await connection.execute(
        "INSERT INTO revoked_access_tokens (jti, expires_at) "
        "VALUES ($1, to_timestamp($2)) ON CONFLICT (jti) DO NOTHING",
        jti,
        expires_at,
    )


# --- introspection (RFC 7662) -------------------------------------------------

# Live state of verified access tokens (one row per token, `i` its position):
# key state, jti revoked, and the family (if any) live.
ACCESS_STATE_SQL = f"""
SELECT
    q.i,
    (SELECT state FROM signing_keys WHERE kid = q.kid) AS key_state,
    EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = q.jti) AS jti_revoked,
    f.id IS NOT NULL AS family_found,
    {family_live("f", "u")} AS family_live,
    u.username
FROM unnest($1::text[], $2::uuid[], $3::uuid[]) WITH ORDINALITY AS q(kid, jti, family_id, i)
LEFT JOIN token_families f ON f.id = q.family_id
LEFT JOIN users u ON u.id = f.user_id
"""


async def access_token_states(
    connection: Connection,
    kids: list[str],
    jtis: list[uuid.UUID],
    family_ids: list[uuid.UUID | None],
) -> list[asyncpg.Record]:
    """One row per access token, in the order given."""
    rows = await connection.fetch(ACCESS_STATE_SQL, kids, jtis, family_ids)
    by_position = {row["i"]: row for row in rows}
    return [by_position[i] for i in range(1, len(kids) + 1)]


# Live refresh tokens among these hashes (`i` their position; absent: inactive).
# As in ROTATE_SQL, the checks are evaluated in a materialized CTE that goes
# from each hash to its token, family and user by primary key: with them in
# the WHERE clause, the generic plan made on a young store read every live
# token of the store through uq_refresh_tokens_live_family_id for each batch
# (320 families: "Rows Removed by Join Filter: 2552" for a batch of 8).
REFRESH_STATE_SQL = f"""
WITH found AS MATERIALIZED (
    SELECT q.i, t.family_id, f.client_id, f.user_id, f.scope, f.dpop_jkt, u.username,
           floor(extract(epoch FROM t.issued_at))::bigint AS iat,
           floor(extract(epoch FROM least(t.expires_at, f.expires_at)))::bigint AS exp,
           ({live_token("t")} AND {family_open("f", "u")}) AS live
    FROM unnest($1::bytea[]) WITH ORDINALITY AS q(token_hash, i)
    JOIN refresh_tokens t ON t.token_hash = q.token_hash
    JOIN token_families f ON f.id = t.family_id
    JOIN users u ON u.id = f.user_id
)
SELECT i, family_id, client_id, user_id, scope, dpop_jkt, username, iat, exp
FROM found WHERE live
"""


async def live_refresh_tokens(
    connection: Connection, token_hashes: list[bytes]
) -> list[asyncpg.Record | None]:
    """The state of each refresh token that is live, else None."""
    rows = await connection.fetch(REFRESH_STATE_SQL, token_hashes)
    by_position = {row["i"]: row for row in rows}
    return [by_position.get(i) for i in range(1, len(token_hashes) + 1)]


# --- operators' views --------------------------------------------------------


# A page of one user's families ($1): newest first, after the ($2 created_at,
# $3 id) position, at most $4 rows.
_PAGE_OF_USER = """
    ($2::timestamptz IS NULL OR (f.created_at, f.id) < ($2, $3::uuid))
    ORDER BY f.created_at DESC, f.id DESC
    LIMIT $4
"""


async def families_of_user(
    connection: Connection,
    user_id: uuid.UUID,
    *,
    after: tuple[object, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """A user's families, newest first, after the (created_at, id) position."""
    rows: list[asyncpg.Record] = await connection.fetch(
        f"""
        SELECT {FAMILY_COLUMNS} FROM token_families f
        WHERE f.user_id = $1 AND {_PAGE_OF_USER}
        """,
        user_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def family(connection: Connection, family_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {FAMILY_COLUMNS} FROM token_families f WHERE f.id = $1", family_id
    )
    return row


async def chain(connection: Connection, family_id: uuid.UUID) -> list[asyncpg.Record]:
    """The family's refresh tokens, oldest first (never the tokens themselves)."""
    rows: list[asyncpg.Record] = await connection.fetch(
        "SELECT generation, issued_at, spent_at, expires_at FROM refresh_tokens "
        "WHERE family_id = $1 ORDER BY generation",
        family_id,
    )
    return rows


# --- the user's own view (CONTRACT 3.8) ---------------------------------------


async def live_families_of_user(
    connection: Connection,
    user_id: uuid.UUID,
    *,
    after: tuple[object, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """A user's live families with their client's name, newest first, after the
    (created_at, id) position."""
    rows: list[asyncpg.Record] = await connection.fetch(
        f"""
        SELECT f.id, f.client_id, c.name AS client_name, f.created_at, f.last_rotated_at,
               f.expires_at, f.login_ip, f.login_user_agent, f.last_ip, f.last_user_agent
        FROM token_families f
        JOIN users u ON u.id = f.user_id
        JOIN clients c ON c.id = f.client_id
        WHERE f.user_id = $1 AND {family_live("f", "u")} AND {_PAGE_OF_USER}
        """,
        user_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


# --- pruning -----------------------------------------------------------------

# Prunable: revoked, or expired (the predicate above, evaluated at the cutoff),
# longer ago than the retention period ($1 seconds).
_CUTOFF = "(now() - make_interval(secs => $1))"
DELETE_FAMILIES_SQL = f"""
WITH doomed AS (
    SELECT f.id FROM token_families f
    WHERE f.revoked_at < {_CUTOFF} OR {family_expired("f", _CUTOFF)}
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM token_families WHERE id IN (SELECT id FROM doomed)
"""


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def delete_dead_families(connection: Connection, retention: int, batch: int) -> int:
    """One batch of dead families, with their refresh tokens (ON DELETE CASCADE)."""
    return _count(await connection.execute(DELETE_FAMILIES_SQL, retention, batch))


async def delete_expired_jtis(connection: Connection) -> int:
    return _count(
        await connection.execute("DELETE FROM revoked_access_tokens WHERE expires_at < now()")
    )
