"""The Alembic migrations: they build exactly the declared schema, go down and up again,
stand alone (no import of `service`), and the template database is at head."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from service.config import sqlalchemy_url
from service.db.migrate import downgrade, head_revision, upgrade
from service.db.tables import metadata

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
TABLES = set(metadata.tables)


async def schema_diff(url: str) -> list[Any]:
    """What autogenerate would write to bring the database to `metadata` (types and
    server defaults compared too)."""
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync, opts={"compare_type": True, "compare_server_default": True}
                    ),
                    metadata,
                )
            )
    finally:
        await engine.dispose()


async def public_tables(connection: asyncpg.Connection) -> set[str]:
    rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


# --- (a) the declared tables and the migrations agree ------------------------------------


async def test_models_match_migrations_at_head(database_url: str) -> None:
    assert await schema_diff(database_url) == []


async def test_schema_diff_sees_a_drifted_database(
    database_url: str, db: asyncpg.Connection
) -> None:
    """Control for the test above: a column the models do not declare is reported."""
    await db.execute("ALTER TABLE users ADD COLUMN nickname text")
    diff = await schema_diff(database_url)
    assert [(op[0], op[2], op[3].name) for op in diff] == [("remove_column", "users", "nickname")]


async def test_schema_diff_sees_a_changed_server_default(
    database_url: str, db: asyncpg.Connection
) -> None:
    await db.execute("ALTER TABLE clients ALTER COLUMN is_admin SET DEFAULT true")
    diff = await schema_diff(database_url)
    assert [(change[0][0], change[0][2], change[0][3]) for change in diff] == [
        ("modify_default", "clients", "is_admin")
    ]


# --- (b) up, down, up ----------------------------------------------------------------------


async def test_upgrade_downgrade_upgrade_on_an_empty_database(
    empty_database_url: str,
) -> None:
    connection = await asyncpg.connect(empty_database_url)
    try:
        before = await public_tables(connection)
        # Alembic's env runs its own event loop: call it from a worker thread.
        await asyncio.to_thread(upgrade, empty_database_url)
        after_upgrade = (
            await public_tables(connection),
            await connection.fetchval("SELECT version_num FROM alembic_version"),
        )
        await asyncio.to_thread(downgrade, empty_database_url, "base")
        after_downgrade = (
            await public_tables(connection),
            await connection.fetchval("SELECT count(*) FROM alembic_version"),
        )
        await asyncio.to_thread(upgrade, empty_database_url)
        after_second_upgrade = (
            await public_tables(connection),
            await connection.fetchval("SELECT version_num FROM alembic_version"),
        )
    finally:
        await connection.close()
    assert (before, after_upgrade, after_downgrade, after_second_upgrade) == (
        set(),
        (TABLES | {"alembic_version"}, head_revision()),
        ({"alembic_version"}, 0),
        (TABLES | {"alembic_version"}, head_revision()),
    )


async def test_second_upgrade_after_down_and_up_matches_models(
    empty_database_url: str,
) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    await asyncio.to_thread(downgrade, empty_database_url, "base")
    await asyncio.to_thread(upgrade, empty_database_url)
    assert await schema_diff(empty_database_url) == []


async def test_upgrade_at_head_is_a_no_op(database_url: str, db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO login_failures (subject_kind, subject) VALUES ('ip', 'x')")
    await asyncio.to_thread(upgrade, database_url)
    rows = await db.fetch("SELECT version_num FROM alembic_version")
    count = await db.fetchval("SELECT count(*) FROM login_failures")
    assert ([row["version_num"] for row in rows], count) == ([head_revision()], 1)


async def _rotor_migrate(url: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTOR_")}
    env["DATABASE_URL"] = url
    process = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "rotor"),
        "migrate",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, stdout.decode()


async def test_concurrent_migrate_processes_do_not_race(empty_database_url: str) -> None:
    """Several `rotor migrate` started together on an empty database: all succeed, the
    schema is built once (the migration takes an advisory lock)."""
    results = await asyncio.gather(*(_rotor_migrate(empty_database_url) for _ in range(2)))
    connection = await asyncpg.connect(empty_database_url)
    try:
        rows = await connection.fetch("SELECT version_num FROM alembic_version")
        tables = await public_tables(connection)
    finally:
        await connection.close()
    expected_output = json.dumps({"revision": head_revision()}) + "\n"
    assert (results, [row["version_num"] for row in rows], tables) == (
        [(0, expected_output)] * 2,
        [head_revision()],
        TABLES | {"alembic_version"},
    )


# --- (c) revisions stand alone -------------------------------------------------------------


MIGRATION_FILES = sorted(
    [*MIGRATIONS.glob("*.py"), *MIGRATIONS.glob("*.mako"), *MIGRATIONS.glob("versions/*.py")]
)


def test_migration_files_are_found() -> None:
    names = {path.relative_to(MIGRATIONS).as_posix() for path in MIGRATION_FILES}
    assert {"env.py", "script.py.mako", "versions/0001_initial.py"} <= names


def _imports_service_module(module: str | None) -> bool:
    return module is not None and (module == "service" or module.startswith("service."))


@pytest.mark.parametrize(
    "path", MIGRATION_FILES, ids=[p.relative_to(MIGRATIONS).as_posix() for p in MIGRATION_FILES]
)
def test_migration_imports_nothing_from_service(path: Path) -> None:
    text = path.read_text()
    if path.suffix == ".py":
        offenders = []
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                offenders += [a.name for a in node.names if _imports_service_module(a.name)]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                offenders += [node.module] if _imports_service_module(node.module) else []
    else:
        pattern = re.compile(r"^\s*(?:from|import)\s+service(?:\.|\s|$)", re.MULTILINE)
        offenders = pattern.findall(text)
    assert offenders == []


# --- (d) the template is at head -----------------------------------------------------------


async def test_template_database_is_at_head_revision(db: asyncpg.Connection) -> None:
    rows = await db.fetch("SELECT version_num FROM alembic_version")
    assert [row["version_num"] for row in rows] == [head_revision()]


def test_head_revision_is_the_last_revision_file() -> None:
    revisions = {}
    for path in MIGRATIONS.glob("versions/*.py"):
        tree = ast.parse(path.read_text())
        values = {
            target.id: node.value
            for node in tree.body
            if isinstance(node, ast.AnnAssign | ast.Assign)
            for target in ([node.target] if isinstance(node, ast.AnnAssign) else node.targets)
            if isinstance(target, ast.Name)
        }
        revision = ast.literal_eval(values["revision"])
        revisions[revision] = ast.literal_eval(values["down_revision"])
    parents = set(revisions.values())
    heads = [revision for revision in revisions if revision not in parents]
    assert heads == [head_revision()]
