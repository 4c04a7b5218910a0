"""Every failure leaves as a FHIR OperationOutcome (FHIR R4 http.html, operationoutcome.html).

Bad bodies, bad ids, unknown endpoints, wrong methods, FastAPI's own validation errors and
unexpected exceptions: the right status, `application/fhir+json`, issues pointing at the
offending element, and the request's correlation id; never `{"detail": ...}` or a stack trace.

Each test runs on SQLite and PostgreSQL with a fresh app, so the cases of one kind share a test
(looping, naming the case in the assertion message) to keep the suite fast.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.services.resources import ResourceService

FHIR_JSON = "application/fhir+json"
REQUEST_ID_URL = "https://fhir.rix.example/StructureDefinition/request-id"


def assert_outcome(
    response: httpx.Response, status: int, context: str = "", *, code: str | None = None
) -> dict[str, Any]:
    """An error OperationOutcome with `status`, FHIR JSON, and the request id (body and header)."""
    assert response.status_code == status, f"{context}: {response.status_code} {response.text}"
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    assert kind == FHIR_JSON, f"{context}: content-type {kind!r}"
    outcome: dict[str, Any] = response.json()
    assert outcome.get("resourceType") == "OperationOutcome", f"{context}: {outcome}"
    assert "detail" not in outcome, context
    issues = outcome["issue"]
    assert issues, f"{context}: an OperationOutcome needs at least one issue"
    for issue in issues:
        assert issue["severity"] in ("fatal", "error"), context
        assert issue["code"], context
    if code is not None:
        assert code in [i["code"] for i in issues], f"{context}: {issues}"
    rid = response.headers["x-request-id"]
    assert outcome["extension"] == [{"url": REQUEST_ID_URL, "valueString": rid}], context
    return outcome


def expressions(outcome: dict[str, Any]) -> list[str]:
    """Every issue.expression of an OperationOutcome, flattened."""
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def send(client: TestClient, method: str, path: str, body: bytes | str) -> httpx.Response:
    """Send a raw body as FHIR JSON."""
    return client.request(method, path, content=body, headers={"Content-Type": FHIR_JSON})


def versions_stored(client: TestClient) -> int:
    """How many resource versions the server holds (system history total)."""
    response = client.get("/fhir/_history", params={"_count": "0"})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


# -- unparseable bodies -----------------------------------------------------------------------

UNPARSEABLE = {
    "invalid JSON": b'{"resourceType": "Patient",',
    "not UTF-8": b'{"resourceType": "Patient", "name": [{"family": "\xff\xfe"}]}',
    "JSON array": b'[{"resourceType": "Patient"}]',
    "JSON string": b'"Patient"',
    "JSON null": b"null",
    "empty": b"",
    "whitespace": b"  \n ",
}


def test_unparseable_body_is_400(client: TestClient) -> None:
    for case, body in UNPARSEABLE.items():
        for method, path in (("POST", "/fhir/Patient"), ("PUT", "/fhir/Patient/p1")):
            response = send(client, method, path, body)
            assert_outcome(response, 400, f"{method} {case}", code="invalid")
    created = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()
    response = client.patch(
        f"/fhir/Patient/{created['id']}",
        content=b"",
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert_outcome(response, 400, "empty patch")
    assert versions_stored(client) == 1


# -- invalid resources ------------------------------------------------------------------------

# case: (type, body, the expression the outcome must point at)
INVALID: dict[str, tuple[str, dict[str, Any], str]] = {
    "missing resourceType": ("Patient", {"name": [{"family": "X"}]}, "resourceType"),
    "resourceType of another endpoint": (
        "Patient",
        {"resourceType": "Practitioner"},
        "resourceType",
    ),
    "unknown resourceType": ("Patient", {"resourceType": "Nonsense"}, "resourceType"),
    "unknown element": ("Patient", {"resourceType": "Patient", "foo": 1}, "Patient.foo"),
    "unknown nested element": (
        "Patient",
        {"resourceType": "Patient", "name": [{"family": "X", "nick": "Y"}]},
        "Patient.name[0].nick",
    ),
    "string for a list": (
        "Patient",
        {"resourceType": "Patient", "name": [{"given": "Jean"}]},
        "Patient.name[0].given",
    ),
    "object for a list": (
        "Patient",
        {"resourceType": "Patient", "name": {"family": "X"}},
        "Patient.name",
    ),
    "number for a string": (
        "Patient",
        {"resourceType": "Patient", "name": [{"family": 42}]},
        "Patient.name[0].family",
    ),
    "string for a boolean": (
        "Patient",
        {"resourceType": "Patient", "active": "yes"},
        "Patient.active",
    ),
    "number for a boolean": ("Patient", {"resourceType": "Patient", "active": 1}, "Patient.active"),
    "string for an integer": (
        "Patient",
        {"resourceType": "Patient", "multipleBirthInteger": "2"},
        "Patient.multipleBirthInteger",
    ),
    "impossible date": (
        "Patient",
        {"resourceType": "Patient", "birthDate": "1980-13-45"},
        "Patient.birthDate",
    ),
    "date in a local format": (
        "Patient",
        {"resourceType": "Patient", "birthDate": "12/03/1980"},
        "Patient.birthDate",
    ),
    "Patient.gender code": (
        "Patient",
        {"resourceType": "Patient", "gender": "M"},
        "Patient.gender",
    ),
    "ImagingStudy.status code": (
        "ImagingStudy",
        {"resourceType": "ImagingStudy", "status": "done", "subject": {"reference": "Patient/p"}},
        "ImagingStudy.status",
    ),
    "DocumentReference.status code": (
        "DocumentReference",
        {
            "resourceType": "DocumentReference",
            "status": "final",
            "content": [{"attachment": {"url": "http://example.org/report.pdf"}}],
        },
        "DocumentReference.status",
    ),
    "Consent.status code": (
        "Consent",
        {
            "resourceType": "Consent",
            "status": "granted",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "category": [{"coding": [{"code": "59284-0"}]}],
        },
        "Consent.status",
    ),
}


def test_invalid_resource_is_400_pointing_at_the_element(client: TestClient) -> None:
    for case, (type_name, body, expression) in INVALID.items():
        for method, path, sent in (
            ("POST", f"/fhir/{type_name}", body),
            ("PUT", f"/fhir/{type_name}/x1", {**body, "id": "x1"}),
        ):
            response = send(client, method, path, json.dumps(sent))
            outcome = assert_outcome(response, 400, f"{method} {case}")
            assert expression in expressions(outcome), f"{method} {case}: {outcome}"
    assert versions_stored(client) == 0


def test_every_problem_is_reported(client: TestClient) -> None:
    body = {"resourceType": "Patient", "gender": "M", "birthDate": "soon", "foo": True}
    outcome = assert_outcome(send(client, "POST", "/fhir/Patient", json.dumps(body)), 400)
    assert {"Patient.gender", "Patient.birthDate", "Patient.foo"} <= set(expressions(outcome))


def test_valid_codes_and_types_are_accepted(client: TestClient) -> None:
    """The control for the cases above: only the bad values are rejected."""
    for body in (
        {"resourceType": "Patient", "gender": "unknown", "birthDate": "1980-03-12", "active": True},
        {"resourceType": "Patient", "multipleBirthInteger": 2, "name": [{"given": ["Jean"]}]},
        {"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "P/p"}},
    ):
        response = send(client, "POST", f"/fhir/{body['resourceType']}", json.dumps(body))
        assert response.status_code == 201, response.text


# -- ids --------------------------------------------------------------------------------------


def test_invalid_id_is_400(client: TestClient) -> None:
    for bad_id in ("bad_id", "a*b", "é", "a" * 65):
        body = json.dumps({"resourceType": "Patient", "id": bad_id})
        response = send(client, "PUT", f"/fhir/Patient/{bad_id}", body)
        assert_outcome(response, 400, bad_id, code="value")
    body = json.dumps({"resourceType": "Patient", "id": "no_good"})
    response = client.put(
        "/fhir/Patient",
        params={"identifier": "urn:x|1"},
        content=body,
        headers={"Content-Type": FHIR_JSON},
    )
    assert_outcome(response, 400, "conditional update")
    assert versions_stored(client) == 0
    longest = "A-b.9" + "x" * 59
    body = json.dumps({"resourceType": "Patient", "id": longest})
    response = send(client, "PUT", f"/fhir/Patient/{longest}", body)
    assert response.status_code == 201, response.text
    assert response.json()["id"] == longest


def test_long_values_are_stored_not_a_server_error(client: TestClient) -> None:
    """Valid resources with values wider than the index columns (PostgreSQL enforces widths)."""
    long_id = "a" * 65
    for body in (
        {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "v" * 600}]},
        {"resourceType": "Patient", "identifier": [{"system": "urn:" + "s" * 600, "value": "v"}]},
        {
            "resourceType": "Patient",
            "generalPractitioner": [{"reference": f"Practitioner/{long_id}"}],
        },
        {
            "resourceType": "Patient",
            "generalPractitioner": [{"identifier": {"system": "urn:x", "value": "v" * 600}}],
        },
    ):
        response = send(client, "POST", "/fhir/Patient", json.dumps(body))
        assert response.status_code == 201, response.text
    found = client.get("/fhir/Patient", params={"identifier": "urn:x|" + "v" * 600})
    assert found.status_code == 200, found.text


# -- routing and the status vocabulary --------------------------------------------------------


def test_unknown_endpoint_is_404(client: TestClient) -> None:
    for path in (
        "/fhir/NoSuchType",
        "/fhir/NoSuchType/1",
        "/fhir/Patient/1/_history/1/extra",
        "/nope",
    ):
        assert_outcome(client.get(path), 404, path, code="not-found")


def test_wrong_method_is_405(client: TestClient) -> None:
    for method, path in (
        ("PATCH", "/fhir/metadata"),
        ("DELETE", "/fhir/metadata"),
        ("POST", "/fhir/Patient/1"),
        ("PUT", "/fhir/_history"),
        ("GET", "/fhir"),
        ("DELETE", "/fhir/Patient/1/_history/1"),
    ):
        response = client.request(method, path)
        assert_outcome(response, 405, f"{method} {path}", code="not-supported")
        assert response.headers["allow"], f"{method} {path}"


def test_status_vocabulary(client: TestClient) -> None:
    text = client.post(
        "/fhir/Patient", content=b"resourceType=Patient", headers={"Content-Type": "text/plain"}
    )
    assert_outcome(text, 415, "text/plain body", code="not-supported")
    html = client.get("/fhir/metadata", headers={"Accept": "text/html"})
    assert_outcome(html, 406, "HTML wanted", code="not-supported")
    anonymous = client.get("/fhir/Patient", headers={"Authorization": ""})
    assert_outcome(anonymous, 401, "no bearer token", code="login")
    unknown = client.get("/fhir/Patient", params={"shoe-size": "42"})
    assert_outcome(unknown, 400, "unknown search parameter")
    created = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()
    url = f"/fhir/Patient/{created['id']}"
    stale = client.put(url, json={**created, "active": True}, headers={"If-Match": 'W/"9"'})
    assert_outcome(stale, 412, "stale If-Match", code="conflict")
    assert client.delete(url).status_code == 204
    assert_outcome(client.get(url), 410, "deleted", code="deleted")
    assert_outcome(client.get("/fhir/Patient/nobody"), 404, "unknown id", code="not-found")


# -- framework errors and crashes -------------------------------------------------------------


def test_framework_validation_errors_are_operation_outcomes(client: TestClient) -> None:
    """FastAPI's own request validation (on a probe route) renders as an OperationOutcome."""

    async def probe(count: int) -> dict[str, int]:
        return {"count": count}

    app = client.app
    assert isinstance(app, FastAPI)
    app.add_api_route("/fhir/_probe", probe, methods=["GET"])
    assert client.get("/fhir/_probe", params={"count": "3"}).json() == {"count": 3}
    for params in ({"count": "three"}, {}):
        response = client.get("/fhir/_probe", params=params)
        outcome = assert_outcome(response, 400, str(params), code="invalid")
        assert "count" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("given_id", ["crash-42", None])
def test_unexpected_exception_is_500_without_internals(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, given_id: str | None
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret-internal-detail in /srv/rix/app.py")

    monkeypatch.setattr(ResourceService, "read", explode)
    headers = {"X-Request-Id": given_id} if given_id else {}
    response = client.get("/fhir/Patient/any", headers=headers)
    outcome = assert_outcome(response, 500, code="exception")
    rid = response.headers["x-request-id"]
    if given_id:
        assert rid == given_id
    else:
        assert uuid.UUID(rid)
    for leak in ("secret-internal-detail", "Traceback", "RuntimeError", "/srv/rix"):
        assert leak not in response.text
    assert outcome["issue"][0]["severity"] in ("fatal", "error")
    assert client.get("/fhir/metadata").status_code == 200, "the server keeps serving"
