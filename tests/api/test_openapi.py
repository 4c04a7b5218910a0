"""The committed OpenAPI description matches the app (regenerate with `rix openapi`)."""

from __future__ import annotations

import json
from pathlib import Path

from app.cli import openapi_text
from app.config import Settings

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_openapi_is_current(tmp_path: Path) -> None:
    settings = Settings(env="test", database_url=f"sqlite:///{tmp_path / 'o.db'}")
    assert json.loads(COMMITTED.read_text("utf-8")) == json.loads(openapi_text(settings)), (
        "openapi/openapi.json is stale: run `rix openapi` and commit the result"
    )


def test_fhir_media_types_are_declared() -> None:
    spec = json.loads(COMMITTED.read_text("utf-8"))
    read = spec["paths"]["/fhir/Patient/{id}"]["get"]
    assert "application/fhir+json" in read["responses"]["200"]["content"]
    assert "application/fhir+json" in read["responses"]["404"]["content"]
    create = spec["paths"]["/fhir/Patient"]["post"]
    assert "application/fhir+json" in create["requestBody"]["content"]
