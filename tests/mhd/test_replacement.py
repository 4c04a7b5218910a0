"""IHE MHD ITI-65 document replacement: a DocumentReference that `replaces` another makes the old
one `superseded` (a new version of it), in the same transaction; a replacement of a document RIX
does not know is refused and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.mhd.support import (
    MADO_PATIENT,
    binary,
    counts,
    provide,
    provide_bundle,
    provided,
    put_mado_patient,
    read,
    search,
    submission_set,
    text_document,
)


@pytest.fixture
def client(client: TestClient) -> TestClient:
    """The administrator's client, with the MADO Patient registered."""
    put_mado_patient(client)
    return client


def replacing(old_id: str, subject: str = f"Patient/{MADO_PATIENT}") -> dict[str, Any]:
    target = {"reference": f"DocumentReference/{old_id}"}
    return text_document(subject, relatesTo=[{"code": "replaces", "target": target}])


def register(client: TestClient, document: dict[str, Any], data: bytes) -> str:
    subject = document["subject"]["reference"]
    bundle = provide_bundle([(document, binary(data))], submission_set(subject))
    (doc_id,) = provided(client, bundle)["DocumentReference"]
    return doc_id


def test_replacement_supersedes_the_old_document(client: TestClient) -> None:
    old = register(client, text_document(), b"report v1")
    new = register(client, replacing(old), b"report v2")
    replaced = read(client, f"DocumentReference/{old}")
    assert replaced["status"] == "superseded"
    assert replaced["meta"]["versionId"] == "2"
    first = client.get(f"/fhir/DocumentReference/{old}/_history/1").json()
    assert first["status"] == "current"
    replacement = read(client, f"DocumentReference/{new}")
    assert replacement["status"] == "current"
    assert replacement["relatesTo"][0]["target"]["reference"] == f"DocumentReference/{old}"


def test_only_the_replacement_is_current(client: TestClient) -> None:
    old = register(client, text_document(), b"report v1")
    new = register(client, replacing(old), b"report v2")
    current = search(
        client, "DocumentReference", {"patient": f"Patient/{MADO_PATIENT}", "status": "current"}
    )
    assert [d["id"] for d in current] == [new]
    found = search(client, "DocumentReference", {"relatesto": f"DocumentReference/{old}"})
    assert [d["id"] for d in found] == [new]


def test_replacement_chain(client: TestClient) -> None:
    v1 = register(client, text_document(), b"v1")
    v2 = register(client, replacing(v1), b"v2")
    v3 = register(client, replacing(v2), b"v3")
    statuses = {d: read(client, f"DocumentReference/{d}")["status"] for d in (v1, v2, v3)}
    assert statuses == {v1: "superseded", v2: "superseded", v3: "current"}


def test_replacing_an_unknown_document_is_refused(client: TestClient) -> None:
    register(client, text_document(), b"report v1")
    before = counts(client)
    bundle = provide_bundle([(replacing("no-such-document"), binary(b"v2"))])
    response = provide(client, bundle)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert counts(client) == before


def test_replacing_a_document_of_another_patient_is_refused(client: TestClient) -> None:
    """XDS: a replacement is about the same patient as the document it replaces (the registry
    answers XDSPatientIdDoesNotMatch; NIST XDS test 11998); the other patient's document stays
    current and nothing is stored."""
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "OTHER"}]}
    )
    other = f"Patient/{response.json()['id']}"
    theirs = register(client, text_document(other), b"their report")
    before = counts(client)
    response = provide(client, provide_bundle([(replacing(theirs), binary(b"mine"))]))
    assert response.status_code in (400, 422), response.text
    assert counts(client) == before
    assert read(client, f"DocumentReference/{theirs}")["status"] == "current"


def test_replacement_named_by_absolute_url_supersedes(client: TestClient) -> None:
    """An absolute reference on RIX's own base names the same document as the relative one
    (FHIR R4 references.html): the replacement may not be ignored."""
    old = register(client, text_document(), b"report v1")
    document = text_document(
        relatesTo=[
            {
                "code": "replaces",
                "target": {"reference": f"http://testserver/fhir/DocumentReference/{old}"},
            }
        ]
    )
    new = register(client, document, b"report v2")
    assert read(client, f"DocumentReference/{old}")["status"] == "superseded"
    assert read(client, f"DocumentReference/{new}")["status"] == "current"
