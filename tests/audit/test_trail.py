"""The tamper-evident audit trail: `rix audit verify` catches edits, insertions and removals;
`rix maintenance` purges past retention and leaves a chain that still verifies; export."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, delete, func, select, text, update

from app.audit.sealer import Sealer
from app.cli import main
from app.config import Settings
from app.fhir.values import now_utc
from app.storage.tables import AUDIT_CHAIN, AUDIT_PENDING, RESOURCE


@pytest.fixture
def audited(client: TestClient) -> TestClient:
    """A database with a few audited requests in it."""
    for family in ("Martin", "Durand", "Petit"):
        client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]})
    client.get("/fhir/Patient")
    _seal(client)
    return client


def _seal(client: TestClient) -> int:
    """What the background sealer does every RIX_AUDIT_SEAL_INTERVAL seconds."""
    rt = client.app.state.rix  # type: ignore[attr-defined]
    return Sealer(rt.sessions, rt.trail, 1.0).seal_once()


def _cli(settings: Settings, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("RIX_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RIX_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RIX_ENV", "test")
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        return main(list(args))
    finally:
        get_settings.cache_clear()


def _engine(settings: Settings) -> Engine:
    return create_engine(settings.database_url)


def test_intact_chain_verifies(
    audited: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _cli(settings, "audit", "verify", monkeypatch=monkeypatch) == 0
    assert "intact" in capsys.readouterr().out


def test_edited_record_is_caught(
    audited: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = _engine(settings)
    with engine.begin() as conn:
        pk, content = conn.execute(
            select(RESOURCE.c.pk, RESOURCE.c.content)
            .where(RESOURCE.c.resource_type == "AuditEvent")
            .order_by(RESOURCE.c.pk)
            .limit(1)
        ).one()
        edited = content.replace('"outcome":"0"', '"outcome":"4"')
        assert edited != content
        conn.execute(update(RESOURCE).where(RESOURCE.c.pk == pk).values(content=edited))
    engine.dispose()
    assert _cli(settings, "audit", "verify", monkeypatch=monkeypatch) == 1
    assert "altered" in capsys.readouterr().out


def test_deleted_record_is_caught(
    audited: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = _engine(settings)
    with engine.begin() as conn:
        seq, pk = conn.execute(
            select(AUDIT_CHAIN.c.seq, AUDIT_CHAIN.c.resource_pk)
            .order_by(AUDIT_CHAIN.c.seq)
            .offset(1)
            .limit(1)
        ).one()
        conn.execute(delete(AUDIT_CHAIN).where(AUDIT_CHAIN.c.seq == seq))
        conn.execute(text("DELETE FROM resource_version WHERE resource_pk = :pk"), {"pk": pk})
        conn.execute(text("DELETE FROM sp_token WHERE resource_pk = :pk"), {"pk": pk})
        for table in ("sp_string", "sp_date", "sp_reference", "sp_uri", "sp_number"):
            conn.execute(text(f"DELETE FROM {table} WHERE resource_pk = :pk"), {"pk": pk})
        conn.execute(delete(RESOURCE).where(RESOURCE.c.pk == pk))
    engine.dispose()
    assert _cli(settings, "audit", "verify", monkeypatch=monkeypatch) == 1
    assert "removed" in capsys.readouterr().out


def test_removed_tail_and_inserted_record_are_caught(
    audited: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = _engine(settings)
    with engine.begin() as conn:
        last = conn.execute(select(func.max(AUDIT_CHAIN.c.seq))).scalar_one()
        conn.execute(delete(AUDIT_CHAIN).where(AUDIT_CHAIN.c.seq == last))
    engine.dispose()
    assert _cli(settings, "audit", "verify", monkeypatch=monkeypatch) == 1
    out = capsys.readouterr().out
    assert "records lost" in out  # the head remembers where the chain ended
    assert "outside the chain" in out  # and the orphaned record is reported


def test_retention_purge_keeps_the_chain_verifiable(
    audited: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = _engine(settings)
    with engine.begin() as conn:
        total = conn.execute(select(func.count()).select_from(AUDIT_CHAIN)).scalar_one()
        old = now_utc() - timedelta(days=800)
        conn.execute(update(AUDIT_CHAIN).where(AUDIT_CHAIN.c.seq <= 2).values(recorded=old))
    assert _cli(settings, "maintenance", monkeypatch=monkeypatch) == 0
    assert "purged 2 " in capsys.readouterr().out
    with engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(AUDIT_CHAIN)).scalar_one() == total - 2
    engine.dispose()
    assert _cli(settings, "audit", "verify", monkeypatch=monkeypatch) == 0
    audited.get("/fhir/Patient")  # the chain goes on after the anchor
    assert _cli(settings, "audit", "verify", monkeypatch=monkeypatch) == 0


def test_export_writes_ndjson(
    audited: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "audit.ndjson"
    assert (
        _cli(
            settings,
            "audit",
            "export",
            "--since",
            "2000",
            "--output",
            str(out),
            monkeypatch=monkeypatch,
        )
        == 0
    )
    lines = out.read_text("utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert events and all(e["resourceType"] == "AuditEvent" for e in events)
    assert {e["subtype"][0]["code"] for e in events} >= {"create", "search-type"}
    future = tmp_path / "none.ndjson"
    assert (
        _cli(
            settings,
            "audit",
            "export",
            "--since",
            "2999",
            "--output",
            str(future),
            monkeypatch=monkeypatch,
        )
        == 0
    )
    assert future.read_text("utf-8") == ""


def test_the_sealer_links_new_records_in_the_background(settings: Settings) -> None:
    from app.main import create_app

    fast = settings.model_copy(update={"audit_seal_interval": 0.05})
    with TestClient(create_app(fast)) as client:
        client.get("/fhir/Patient")
        engine = _engine(settings)
        deadline = now_utc() + timedelta(seconds=10)
        with engine.connect() as conn:
            while conn.execute(select(func.count()).select_from(AUDIT_PENDING)).scalar_one():
                assert now_utc() < deadline, "pending audit records were never sealed"
                conn.rollback()
            assert conn.execute(select(func.count()).select_from(AUDIT_CHAIN)).scalar_one() > 0
        engine.dispose()


def test_record_removed_before_its_seal_is_caught(
    client: TestClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client.get("/fhir/Patient")
    engine = _engine(settings)
    with engine.begin() as conn:
        pk = conn.execute(select(AUDIT_PENDING.c.resource_pk).limit(1)).scalar_one()
        conn.execute(delete(RESOURCE).where(RESOURCE.c.pk == pk))
    engine.dispose()
    assert _cli(settings, "audit", "verify", monkeypatch=monkeypatch) == 1
    assert "removed" in capsys.readouterr().out
