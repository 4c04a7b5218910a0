"""The `rix` command as an operator runs it: a real subprocess of the installed console script.

`rix db upgrade` must build, from an empty database, exactly the schema the SQLModel tables
describe (a model change without a migration fails here); `rix demo` is idempotent;
`rix openapi` writes the API description; a bare `rix` prints its usage.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, create_engine, func, select, text
from sqlalchemy.engine import make_url

from app.demo.loader import PATIENTS
from app.storage.migrations import alembic_config
from app.storage.tables import VERSION, metadata
from tests.server import rix_env, rix_executable, run_rix

RESOURCE = metadata.tables["resource"]


def _schema_diff(url: str, target: MetaData = metadata) -> list[Any]:
    """What autogenerate would put in a new migration for `target` against the database."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff: list[Any] = compare_metadata(context, target)
            return diff
    finally:
        engine.dispose()


def _describe(diff: list[Any]) -> list[str]:
    """Autogenerate's diff entries as short readable lines (for assertion messages)."""

    def name(item: Any) -> str:
        return str(getattr(item, "name", None) or item)

    lines = []
    for entry in diff:
        ops = entry if isinstance(entry, list) else [entry]  # modify_* come grouped in lists
        lines += [f"{op[0]} " + " ".join(name(x) for x in op[1:] if x is not None) for op in ops]
    return lines


def _head_revision(url: str) -> tuple[str | None, str | None]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current, ScriptDirectory.from_config(alembic_config(url)).get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server_url: str = request.getfixturevalue("pg_database")  # skips (or fails in CI) without PG
    name = f"rix_cli_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_db_upgrade_from_empty_matches_the_models(empty_database_url: str, tmp_path: Path) -> None:
    env = rix_env(empty_database_url, tmp_path / "data")
    done = run_rix(["db", "upgrade"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "database at head" in done.stdout

    current, head = _head_revision(empty_database_url)
    assert current == head is not None
    diff = _describe(_schema_diff(empty_database_url))
    assert diff == [], f"the models changed without a migration: {diff}"

    again = run_rix(["db", "upgrade"], env, tmp_path)  # at head: nothing to do, no error
    assert again.returncode == 0, again.stderr

    # the comparison can fail: a column added to the models without a migration shows up
    changed = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["resource"].append_column(Column("not_migrated", String(10)))
    assert _describe(_schema_diff(empty_database_url, changed)) == [
        "add_column resource not_migrated"
    ]


def _data(url: str) -> dict[str, tuple[int, int]]:
    """Per resource type: how many resources and how many versions (AuditEvents excluded: every
    load is an auditable event, so a second load rightly records its own)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            resources = conn.execute(
                select(RESOURCE.c.resource_type, func.count()).group_by(RESOURCE.c.resource_type)
            ).all()
            versions: dict[str, int] = dict(
                conn.execute(
                    select(VERSION.c.resource_type, func.count()).group_by(VERSION.c.resource_type)
                ).all()
            )
    finally:
        engine.dispose()
    return {t: (int(n), int(versions[t])) for t, n in resources if t != "AuditEvent"}


def test_demo_twice_is_idempotent(database_url: str, tmp_path: Path) -> None:
    env = rix_env(database_url, tmp_path / "data")
    first = run_rix(["demo"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "demo data loaded" in first.stdout
    loaded = _data(database_url)
    assert loaded.get("Patient", (0, 0))[0] > 0
    assert all(n == v for n, v in loaded.values())  # one version each after the first load

    second = run_rix(["demo"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert _data(database_url) == loaded  # same resources, no new version of any of them


def test_openapi_writes_the_fhir_api(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "openapi.json"
    env = rix_env(f"sqlite:///{tmp_path / 'rix.db'}", tmp_path / "data")
    done = run_rix(["openapi", "--output", str(out)], env, tmp_path)
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "RIX"
    paths = document["paths"]
    for path in (
        "/fhir/metadata",
        "/fhir",
        "/fhir/Patient",
        "/fhir/Patient/{id}",
        "/fhir/Patient/{id}/_history/{vid}",
        "/fhir/ImagingStudy",
    ):
        assert path in paths, path
    assert set(paths["/fhir/Patient/{id}"]) >= {"get", "put", "delete"}
    assert "application/fhir+json" in paths["/fhir/Patient"]["get"]["responses"]["200"]["content"]


def test_no_arguments_prints_usage_and_exits_2(tmp_path: Path) -> None:
    done = run_rix([], rix_env(f"sqlite:///{tmp_path / 'rix.db'}", tmp_path / "data"), tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: rix")
    assert "serve" in done.stderr
    assert done.stdout == ""


def test_processes_starting_together_migrate_once(empty_database_url: str, tmp_path: Path) -> None:
    """Replicas started at the same time on an empty database all come up at head."""
    env = rix_env(empty_database_url, tmp_path / "data")
    upgrades = [
        subprocess.Popen(
            [rix_executable(), "db", "upgrade"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in upgrades:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "database at head" in out
    current, head = _head_revision(empty_database_url)
    assert current == head is not None


def test_db_reindex_rebuilds_search_indexes(database_url: str, tmp_path: Path) -> None:
    """`rix db reindex` rebuilds every index row, and the identity state of Patients, from the
    stored resources."""
    env = rix_env(database_url, tmp_path / "data")
    assert run_rix(["demo"], env, tmp_path).returncode == 0
    engine = create_engine(database_url)
    identity = "SELECT patient_id, person_id FROM identity_record ORDER BY patient_id"
    with engine.begin() as conn:
        before = conn.execute(text("SELECT count(*) FROM sp_token")).scalar_one()
        persons = conn.execute(text(identity)).all()
        conn.execute(text("DELETE FROM sp_token WHERE resource_type = 'Patient'"))
        conn.execute(text("DELETE FROM identity_link"))
        conn.execute(text("DELETE FROM identity_record"))
    done = run_rix(["db", "reindex", "--type", "Patient"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"reindexed {len(PATIENTS)} resources" in done.stdout
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM sp_token")).scalar_one() == before
        assert conn.execute(text(identity)).all() == persons  # the INS link is back
    engine.dispose()
    refused = run_rix(["db", "reindex", "--type", "Nope"], env, tmp_path)
    assert refused.returncode == 2 and "Nope" in refused.stderr
