"""RIX's CapabilityStatement covers what the IHE MHD actors it instantiates require: the
Document Responder's interactions and search parameters (ITI-66, ITI-67, ITI-68) and the
Document Recipient's transaction (ITI-65). Read from the published CapabilityStatements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

MHD = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "ihe" / "mhd"


def _required(name: str) -> dict[str, Any]:
    path = MHD / f"CapabilityStatement-IHE.MHD.{name}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: ../shared/conformance must sit beside the project")
    return dict(json.loads(path.read_text("utf-8")))


def _ours(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/fhir/metadata").json())


def test_the_document_responder_s_searches_are_supported(client: TestClient) -> None:
    ours = {r["type"]: r for r in _ours(client)["rest"][0]["resource"]}
    required = _required("DocumentResponder")
    for resource in required["rest"][0]["resource"]:
        mine = ours[resource["type"]]
        interactions = {i["code"] for i in mine["interaction"]}
        assert {i["code"] for i in resource.get("interaction", [])} <= interactions
        params = {p["name"].lower(): p for p in mine["searchParam"]}
        for wanted in resource.get("searchParam", []):
            head, _, chained = wanted["name"].partition(".")
            assert head.lower() in params, (resource["type"], wanted["name"])
            if chained:
                assert params[head.lower()]["type"] == "reference", wanted["name"]
                response = client.get(f"/fhir/{resource['type']}", params={wanted["name"]: "x"})
                assert response.status_code == 200, (wanted["name"], response.text)


def test_the_actors_are_declared(client: TestClient) -> None:
    instantiates = set(_ours(client)["instantiates"])
    for actor in ("DocumentRecipient.Comprehensive", "DocumentResponder"):
        assert _required(actor)["url"] in instantiates
    assert {"code": "transaction"} in _ours(client)["rest"][0]["interaction"]
