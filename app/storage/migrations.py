"""Schema migrations through alembic (`alembic/` at the project root, shipped in the image)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def project_root() -> Path:
    """Where alembic.ini lives: the source tree (editable install) or the working directory
    (the container image copies it to its WORKDIR)."""
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (candidate / "alembic.ini").is_file():
            return candidate
    raise FileNotFoundError("alembic.ini not found beside the app package or in the cwd")


def alembic_config(database_url: str) -> Config:
    """The project's alembic configuration bound to `database_url`."""
    root = project_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply every pending migration."""
    command.upgrade(alembic_config(database_url), revision)
