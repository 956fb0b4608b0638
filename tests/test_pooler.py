"""ROTOR_DB_POOLER=transaction keeps nothing on a server connection between
transactions (CONTRACT 1): no prepared statement left behind, no SET. Checked
on PostgreSQL itself, so the same checks can show the default mode does keep
both (through a real PgBouncer: tests/test_scaleout.py)."""

from __future__ import annotations

import pytest

from service.db.pool import Database


async def session_state(database_url: str, pooler: str) -> tuple[int, str]:
    database = Database(database_url, timeout=5, max_size=1, pooler=pooler)
    await database.open()
    try:
        async with database.connection() as connection:
            for n in range(3):
                await connection.fetchval("SELECT $1::int + 1", n)
                await connection.fetchrow("SELECT $1::jsonb AS value", {"n": n})
            async with database.transaction():
                await connection.fetchval("SELECT $1::text", "in a transaction")
            prepared: int = await connection.fetchval("SELECT count(*) FROM pg_prepared_statements")
            plan_cache_mode: str = await connection.fetchval("SHOW plan_cache_mode")
    finally:
        await database.close()
    return prepared, plan_cache_mode


async def test_behind_a_transaction_pooler_no_statement_or_setting_stays_on_the_server(
    database_url: str,
) -> None:
    assert await session_state(database_url, "transaction") == (0, "auto")


async def test_without_a_pooler_statements_are_kept_prepared_under_one_generic_plan(
    database_url: str,
) -> None:
    prepared, plan_cache_mode = await session_state(database_url, "none")
    assert plan_cache_mode == "force_generic_plan"
    assert prepared >= 4


@pytest.mark.parametrize("pooler", ["none", "transaction"])
async def test_jsonb_comes_back_decoded_in_both_modes(database_url: str, pooler: str) -> None:
    database = Database(database_url, timeout=5, max_size=1, pooler=pooler)
    await database.open()
    try:
        async with database.connection() as connection:
            value = await connection.fetchval("SELECT $1::jsonb", {"a": [1, "b"]})
    finally:
        await database.close()
    assert value == {"a": [1, "b"]}
