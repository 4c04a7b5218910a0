"""Shared fixtures: every app-level test runs on SQLite and on PostgreSQL.

PostgreSQL comes from RIX_TEST_DATABASE_URL or the local server (127.0.0.1:5432, user postgres);
a throwaway database is created per test session and dropped at the end. In CI (CI=true) a
missing PostgreSQL is an error, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.auth.tokens import issue_dev_token
from app.config import Settings
from app.main import create_app
from app.storage.migrations import upgrade
from app.storage.tables import metadata

PG_ADMIN_URL = os.environ.get(
    "RIX_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SHARED = Path(__file__).resolve().parents[2] / "shared"


def _pg_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "rix.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database, migrated from empty by alembic."""
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_URL}")
        pytest.skip("PostgreSQL not reachable (set RIX_TEST_DATABASE_URL)")
    name = f"rix_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "rix.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _truncate(url)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings on the parametrised database. Audit records are sealed into the chain
    when a test says so (or a search, verify or shutdown does), not by the clock."""
    return Settings(
        env="test", database_url=database_url, data_dir=tmp_path / "data", audit_seal_interval=60
    )


Token = Callable[..., dict[str, str]]


@pytest.fixture
def token(settings: Settings) -> Token:
    """`token(role, sub=, name=, org=, purpose=, scopes=, patient=, npi=)` -> Authorization
    header with a development token the test app accepts."""

    def make(
        role: str,
        *,
        sub: str | None = None,
        name: str | None = None,
        org: str | None = None,
        purpose: str = "TREAT",
        scopes: list[str] | None = None,
        patient: str | None = None,
        npi: str | None = None,
    ) -> dict[str, str]:
        jwt = issue_dev_token(
            settings,
            subject=sub or f"test-{role}",
            name=name or f"Test {role}",
            role=role,
            organization_id=org,
            purpose=purpose,
            scopes=scopes,
            patient=patient,
            npi=npi,
        )
        return {"Authorization": f"Bearer {jwt}"}

    return make


@pytest.fixture
def client(settings: Settings, token: Token) -> Iterator[TestClient]:
    """An HTTP client on a fresh app, authenticated as an administrator unless a test sends its
    own Authorization header (server errors come back as responses, as in production)."""
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False, headers=token("admin")) as c:
        yield c
    app.state.rix.engine.dispose()


@contextmanager
def other_app(settings: Settings, token: Token, **update: Any) -> Iterator[TestClient]:
    """A second app on the test's database with other RIX_ settings (`update`), as admin."""
    app = create_app(settings.model_copy(update=update))
    with TestClient(app, raise_server_exceptions=False, headers=token("admin")) as c:
        yield c
    app.state.rix.engine.dispose()
