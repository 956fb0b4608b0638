"""Running the Alembic migrations from the CLI and knowing the latest revision."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory


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
