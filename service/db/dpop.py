"""The store of seen DPoP proof jtis (RFC 9449 §11.1): a proof is accepted once
per endpoint within its window, by whichever Rotor process sees it first.

The primary key (endpoint, jti) makes the single use a fact of the database:
of two processes inserting the same jti, one inserts and the other finds the
row (after the first commits, if it is still in its transaction). Rows go once
their window has ended (service/tokens/pruning.py).
"""

from __future__ import annotations

from service.db.pool import Connection

# $1 endpoint, $2 jti, $3 the end of the proof's window (epoch seconds).
RECORD_JTI_SQL = """
INSERT INTO dpop_proof_jtis (endpoint, jti, expires_at)
VALUES ($1, $2, to_timestamp($3))
ON CONFLICT (endpoint, jti) DO NOTHING
RETURNING 1
"""


async def record_jti(connection: Connection, endpoint: str, jti: str, expires_at: float) -> bool:
    """True if the jti is new at this endpoint (now recorded), False if it was seen."""
    inserted = await connection.fetchval(RECORD_JTI_SQL, endpoint, jti, expires_at)
    return inserted is not None


# The jtis of the bound refreshes of the same moment, in one statement (the
# rotations' Batcher does the same): $1 endpoints, $2 jtis, $3 window ends.
RECORD_JTIS_SQL = """
INSERT INTO dpop_proof_jtis (endpoint, jti, expires_at)
SELECT p.endpoint, p.jti, to_timestamp(p.expires_at)
FROM unnest($1::text[], $2::text[], $3::float8[]) AS p(endpoint, jti, expires_at)
ON CONFLICT (endpoint, jti) DO NOTHING
RETURNING endpoint, jti
"""


async def record_jtis(connection: Connection, proofs: list[tuple[str, str, float]]) -> list[bool]:
    """For each (endpoint, jti, expires_at): True if new there (now recorded).
    Of the same jti twice in one batch, the first is new and the second seen."""
    rows = await connection.fetch(
        RECORD_JTIS_SQL,
        [endpoint for endpoint, _, _ in proofs],
        [jti for _, jti, _ in proofs],
        [expires_at for _, _, expires_at in proofs],
    )
    inserted = {(row["endpoint"], row["jti"]) for row in rows}
    answers = []
    for endpoint, jti, _ in proofs:
        answers.append((endpoint, jti) in inserted)
        inserted.discard((endpoint, jti))
    return answers


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def delete_expired_jtis(connection: Connection) -> int:
    """Proof jtis whose window has ended: a replay of them fails on its iat."""
    return _count(await connection.execute("DELETE FROM dpop_proof_jtis WHERE expires_at < now()"))
