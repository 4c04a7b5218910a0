"""Fixtures of the MHD tests: like tests/conftest.py's, every test runs on SQLite and on
PostgreSQL, but one RIX application per database kind serves the whole folder (starting an
application costs more than most of these tests).

- `client` / `token`: the shared application, its database emptied before each test (an
  administrator's client; tokens signed for that application).
- `dataset`: the ITI-66/ITI-67 search data set, registered once per database kind in a database
  of its own and only read afterwards.

On PostgreSQL each application has a schema of its own in the session's test database, so the
per-test truncation of that database's public schema by other tests never reaches it."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from app.auth.tokens import issue_dev_token
from app.config import Settings
from app.main import create_app
from app.storage.migrations import upgrade
from app.storage.tables import metadata
from tests.conftest import Token
from tests.mhd.support import Dataset, register_find_dataset


@contextmanager
def own_database(
    request: pytest.FixtureRequest, kind: str, tmp: pytest.TempPathFactory
) -> Iterator[str]:
    """The URL of a migrated, empty database of `kind` that only its caller uses."""
    if kind == "sqlite":
        path = tmp.mktemp("mhd-db") / "rix.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    host = make_url(request.getfixturevalue("pg_database"))
    schema = f"mhd_{uuid.uuid4().hex[:12]}"
    admin = create_engine(host, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # Commits need not wait for the disk: these databases are thrown away.
        options = f"-csearch_path={schema} -csynchronous_commit=off"
        url = host.update_query_dict({"options": options})
        rendered = url.render_as_string(hide_password=False)
        upgrade(rendered)
        yield rendered
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Server:
    """A running RIX application and an administrator's client on it."""

    settings: Settings
    client: TestClient

    @property
    def engine(self) -> Engine:
        engine: Engine = self.client.app.state.rix.engine  # type: ignore[attr-defined]
        return engine

    def token(self, role: str, *, sub: str | None = None, org: str | None = None) -> dict[str, str]:
        jwt = issue_dev_token(
            self.settings,
            subject=sub or f"test-{role}",
            name=f"Test {role}",
            role=role,
            organization_id=org,
        )
        return {"Authorization": f"Bearer {jwt}"}

    def empty(self) -> None:
        """Delete every row (the migrated schema stays). DELETE, not TRUNCATE: on tables this
        small PostgreSQL's TRUNCATE, which makes new files for every table and index, is the
        slower by far."""
        with self.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


@contextmanager
def serve(
    request: pytest.FixtureRequest, tmp: pytest.TempPathFactory, name: str
) -> Iterator[Server]:
    with own_database(request, request.param, tmp) as url:
        settings = Settings(
            env="test", database_url=url, data_dir=tmp.mktemp(name), audit_seal_interval=60
        )
        app = create_app(settings)
        jwt = issue_dev_token(settings, subject="test-admin", name="Test admin", role="admin")
        try:
            with TestClient(
                app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {jwt}"}
            ) as client:
                yield Server(settings, client)
        finally:
            app.state.rix.engine.dispose()


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The application the MHD tests share, on each kind of database."""
    with serve(request, tmp_path_factory, "mhd-data") as running:
        yield running


@pytest.fixture
def client(server: Server) -> TestClient:
    """An administrator's client on the shared application, its database empty."""
    server.empty()
    return server.client


@pytest.fixture
def token(server: Server) -> Token:
    """`token(role, sub=, org=)` -> Authorization header the shared application accepts."""
    return server.token


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def dataset(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dataset]:
    """The ITI-66/ITI-67 data set (`register_find_dataset`) on each kind of database, read
    through an administrator's client."""
    with serve(request, tmp_path_factory, "mhd-dataset") as running:
        yield Dataset(running.client, register_find_dataset(running.client))
