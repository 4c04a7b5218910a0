"""ITI-68 Retrieve Document: a Binary read returns the document itself with its content type,
unless the client asks for a FHIR format."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient

PDF = b"%PDF-1.4\n% a report\n"


def _binary(client: TestClient) -> str:
    body = {
        "resourceType": "Binary",
        "contentType": "application/pdf",
        "data": base64.b64encode(PDF).decode(),
    }
    response = client.post("/fhir/Binary", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_the_document_comes_back_as_itself(client: TestClient) -> None:
    binary = _binary(client)
    for accept in ("application/pdf", "application/pdf, */*;q=0.1"):
        response = client.get(f"/fhir/Binary/{binary}", headers={"Accept": accept})
        assert response.status_code == 200, accept
        assert response.headers["content-type"] == "application/pdf"
        assert response.content == PDF


def test_a_fhir_format_gets_the_binary_resource(client: TestClient) -> None:
    binary = _binary(client)
    for accept in ("application/fhir+json", "*/*"):
        as_json = client.get(f"/fhir/Binary/{binary}", headers={"Accept": accept})
        assert as_json.json()["resourceType"] == "Binary"
    as_xml = client.get(f"/fhir/Binary/{binary}", params={"_format": "xml"})
    assert as_xml.headers["content-type"].startswith("application/fhir+xml")
    assert client.get("/fhir/Binary/nope", headers={"Accept": "application/pdf"}).status_code == 404
