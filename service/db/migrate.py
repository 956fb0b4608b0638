"""Running the Alembic migrations, knowing the latest revision, and reading the
revision a database is at."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from service.db.pool import Connection


def _locate() -> tuple[Path, Path]:
    """The migrations folder: shipped inside the wheel, or beside the source tree."""
    package = Path(__file__).resolve().parent.parent
    for folder in (package / "_migrations", package.parent / "migrations"):
        if (folder / "env.py").is_file():
            return folder, package.parent / "alembic.ini"
    raise RuntimeError("Alembic migrations folder not found")


def alembic_config(url: str) -> Config:
    folder, ini = _locate()
    config = Config(str(ini)) if ini.is_file() else Config()
    config.set_main_option("script_location", str(folder))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


@cache
def head_revision() -> str:
    folder, _ = _locate()
    config = Config()
    config.set_main_option("script_location", str(folder))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError("no Alembic revision found")
    return head


async def schema_revision(connection: Connection) -> str | None:
    """The revision the database is at; None before the first migration."""
    if not await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
        return None
    revision: str | None = await connection.fetchval("SELECT version_num FROM alembic_version")
    return revision
