"""The official R4 `Bundle-xds` example (npm hl7.fhir.r4.examples@4.0.1), an XDS-style
transaction of a DocumentReference with its Patient, two author Practitioners and its Binary
(absolute fullUrls, relative references, a conditional create), is registered as published and
its DocumentReference points at what the transaction created."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.mhd.support import read
from tests.npm_packages import npm_package


@pytest.fixture(scope="session")
def bundle_xds() -> bytes:
    return (npm_package("hl7.fhir.r4.examples@4.0.1") / "Bundle-xds.json").read_bytes()


def created(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, logical id) of each response entry, in entry order."""
    out = []
    for entry in body["entry"]:
        type_name, id_ = entry["response"]["location"].split("/_history/")[0].split("/")[-2:]
        out.append((type_name, id_))
    return out


def post(client: TestClient, raw: bytes) -> list[tuple[str, str]]:
    response = client.post("/fhir", content=raw, headers={"content-type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    assert all(e["response"]["status"].startswith("201") for e in body["entry"]), body
    return created(body)


def test_bundle_xds_registers(client: TestClient, bundle_xds: bytes) -> None:
    entries = post(client, bundle_xds)
    published = [e["resource"]["resourceType"] for e in json.loads(bundle_xds)["entry"]]
    assert [t for t, _ in entries] == published


def test_document_points_at_what_the_transaction_created(
    client: TestClient, bundle_xds: bytes
) -> None:
    entries = post(client, bundle_xds)
    ids: dict[str, list[str]] = {}
    for type_name, id_ in entries:
        ids.setdefault(type_name, []).append(id_)
    (doc_id,), (patient_id,), (binary_id,) = (
        ids["DocumentReference"],
        ids["Patient"],
        ids["Binary"],
    )
    document = read(client, f"DocumentReference/{doc_id}")
    assert document["subject"] == {"reference": f"Patient/{patient_id}"}
    assert document["author"] == [
        {"reference": f"Practitioner/{id_}"} for id_ in ids["Practitioner"]
    ]
    url = document["content"][0]["attachment"]["url"]
    assert url == f"Binary/{binary_id}", url
    assert read(client, f"Patient/{patient_id}")["name"][0]["family"] == "Doe"
    families = [read(client, f"Practitioner/{i}")["name"][0]["family"] for i in ids["Practitioner"]]
    assert families == ["Smitty", "Dopplemeyer"]
    assert read(client, f"Binary/{binary_id}")["data"] == "YXNkYXNkYXNkYXNkYXNk"


def test_document_is_found_through_its_created_patient(
    client: TestClient, bundle_xds: bytes
) -> None:
    entries = dict((t, i) for t, i in reversed(post(client, bundle_xds)))
    response = client.get(
        "/fhir/DocumentReference",
        params={"patient": f"Patient/{entries['Patient']}", "author.family": "Smitty"},
    )
    assert response.status_code == 200, response.text
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [entries["DocumentReference"]]
