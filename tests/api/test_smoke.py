"""First contact: the service answers, the core interactions round-trip."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["database"] == "ok"


def test_create_read_search(client: TestClient) -> None:
    created = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Martin", "given": ["Éléonore"]}]},
    )
    assert created.status_code == 201
    pid = created.json()["id"]
    assert created.headers["location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    read = client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200
    assert read.headers["content-type"].startswith("application/fhir+json")
    found = client.get("/fhir/Patient", params={"name": "ELEONORE"}).json()
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["id"] == pid
