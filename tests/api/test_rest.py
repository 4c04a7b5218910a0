"""HTTP contract of the FHIR RESTful interactions (FHIR R4 http.html).

create, read, vread, update (and update-as-create), patch, delete, their conditional forms,
history (instance, type, system) with paging, Prefer, content negotiation, X-Request-Id and
the CapabilityStatement: status codes, headers and bodies as a FHIR client sees them.

Each test runs on SQLite and PostgreSQL with a fresh app, so closely related cases share a test
(looping over cases, naming the case in the assertion message) to keep the suite fast.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from app.fhir import models
from app.fhir.registry import SERVED_TYPES as REGISTERED_TYPES

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
BASE = "http://testserver/fhir"
SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
REQUEST_ID_URL = "https://fhir.rix.example/StructureDefinition/request-id"
SERVED_TYPES = set(REGISTERED_TYPES)
READ_INTERACTIONS = {"read", "vread", "history-instance", "history-type", "search-type"}
ALL_INTERACTIONS = READ_INTERACTIONS | {"create", "update", "patch", "delete"}


# -- helpers ----------------------------------------------------------------------------------


def patient(value: str | None = None, **fields: Any) -> dict[str, Any]:
    """A Patient, with an identifier in SYSTEM when `value` is given."""
    resource: dict[str, Any] = {"resourceType": "Patient", **fields}
    if value is not None:
        resource["identifier"] = [{"system": SYSTEM, "value": value}]
    return resource


def criteria(value: str) -> str:
    """The token search value matching patient(value)."""
    return f"{SYSTEM}|{value}"


def create(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    """POST a resource, expect 201 and return the stored representation."""
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def update(client: TestClient, resource: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """PUT a resource (it carries its id), expect `status` and return the stored body."""
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def delete(client: TestClient, type_name: str, resource_id: str) -> None:
    """DELETE a resource, expecting 204."""
    response = client.delete(f"/fhir/{type_name}/{resource_id}")
    assert response.status_code == 204, response.text


def patch(client: TestClient, url: str, operations: Any, **headers: str) -> httpx.Response:
    """PATCH `url` with a JSON Patch document."""
    headers = {"Content-Type": JSON_PATCH, **headers}
    return client.patch(url, content=json.dumps(operations), headers=headers)


def assert_fhir_json(response: httpx.Response, context: str = "") -> None:
    """The response is FHIR JSON."""
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    assert kind == FHIR_JSON, f"{context}: content-type {kind!r}"


def assert_outcome(response: httpx.Response, status: int, context: str = "") -> dict[str, Any]:
    """An OperationOutcome with `status`, carrying the response's request id."""
    assert response.status_code == status, f"{context}: {response.status_code} {response.text}"
    assert_fhir_json(response, context)
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome", context
    assert outcome["issue"], context
    ids = [e["valueString"] for e in outcome.get("extension", []) if e["url"] == REQUEST_ID_URL]
    assert ids == [response.headers["x-request-id"]], context
    return outcome


def count_patients(client: TestClient, value: str) -> int:
    """How many live Patients carry identifier `value`."""
    found = client.get("/fhir/Patient", params={"identifier": criteria(value)})
    assert found.status_code == 200, found.text
    total: int = found.json()["total"]
    return total


def history(client: TestClient, path: str, **params: str) -> dict[str, Any]:
    """GET a history Bundle (`path` under /fhir, without /_history)."""
    response = client.get(f"/fhir{path}/_history", params=params)
    assert response.status_code == 200, response.text
    assert_fhir_json(response)
    bundle: dict[str, Any] = response.json()
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "history")
    return bundle


def versions_stored(client: TestClient) -> int:
    """How many versions of Patients the server holds."""
    total: int = history(client, "/Patient", _count="0")["total"]
    return total


def link(bundle: dict[str, Any], relation: str) -> str | None:
    """The URL of a Bundle link relation, if present."""
    return next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == relation), None)


def entry_key(entry: dict[str, Any]) -> tuple[str, str]:
    """(fullUrl, ETag) of a history entry: one resource version."""
    return entry["fullUrl"], entry["response"]["etag"]


def version_of(entry: dict[str, Any]) -> int:
    """The version number a history entry records (from its ETag)."""
    return int(entry["response"]["etag"].removeprefix('W/"').rstrip('"'))


def instant(text: str) -> datetime:
    """A FHIR instant as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def http_date(response: httpx.Response) -> datetime:
    """The Last-Modified header as an aware datetime."""
    modified = parsedate_to_datetime(response.headers["last-modified"])
    assert modified.tzinfo is not None
    return modified.astimezone(UTC)


# -- create -----------------------------------------------------------------------------------


def test_create_assigns_id_version_and_headers(client: TestClient) -> None:
    sent = patient(
        "c-1",
        id="client-chosen",
        gender="female",
        meta={
            "versionId": "42",
            "lastUpdated": "2001-01-01T00:00:00Z",
            "tag": [{"system": "urn:example", "code": "x"}],
        },
    )
    response = client.post("/fhir/Patient", json=sent)
    assert response.status_code == 201, response.text
    assert_fhir_json(response)
    body = response.json()
    rid = body["id"]
    assert rid != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert body["meta"]["tag"] == [{"system": "urn:example", "code": "x"}]
    assert (body["gender"], body["identifier"]) == ("female", sent["identifier"])
    assert response.headers["location"] == f"{BASE}/Patient/{rid}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert http_date(response) == instant(body["meta"]["lastUpdated"]).replace(microsecond=0)
    assert client.get("/fhir/Patient/client-chosen").status_code == 404
    assert client.get(f"/fhir/Patient/{rid}").json() == body
    again = create(client, sent)
    assert again["id"] not in (rid, "client-chosen")


# -- read and vread ---------------------------------------------------------------------------


def test_read_returns_current_version_with_headers(client: TestClient) -> None:
    created = create(client, patient("r-1"))
    response = client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert_fhir_json(response)
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'
    assert http_date(response) == instant(created["meta"]["lastUpdated"]).replace(microsecond=0)


def test_read_unknown_is_404(client: TestClient) -> None:
    for path in ("/fhir/Patient/does-not-exist", "/fhir/Observation/1", "/fhir/NoSuchType/1"):
        assert_outcome(client.get(path), 404, path)


def test_deleted_resource_is_gone(client: TestClient) -> None:
    rid = create(client, patient())["id"]
    delete(client, "Patient", rid)
    outcome = assert_outcome(client.get(f"/fhir/Patient/{rid}"), 410, "read")
    assert outcome["issue"][0]["code"] == "deleted"
    assert_outcome(client.get(f"/fhir/Patient/{rid}/_history/2"), 410, "vread deletion")
    assert client.get(f"/fhir/Patient/{rid}/_history/1").status_code == 200


def test_vread_every_version(client: TestClient) -> None:
    v1 = create(client, patient("v", gender="male"))
    v2 = update(client, {**v1, "gender": "female"})
    v3 = update(client, {**v2, "gender": "other"})
    for number, expected in ((1, v1), (2, v2), (3, v3)):
        response = client.get(f"/fhir/Patient/{v1['id']}/_history/{number}")
        assert response.status_code == 200, response.text
        assert response.json() == expected
        assert response.json()["meta"]["versionId"] == str(number)
        assert response.headers["etag"] == f'W/"{number}"'


def test_vread_unknown_version_is_404(client: TestClient) -> None:
    rid = create(client, patient())["id"]
    for path in (
        f"{rid}/_history/2",
        f"{rid}/_history/0",
        f"{rid}/_history/abc",
        "nobody/_history/1",
    ):
        assert_outcome(client.get(f"/fhir/Patient/{path}"), 404, path)


def test_if_none_match(client: TestClient) -> None:
    created = create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    for etag in ('W/"1"', '"1"', '"3", W/"1"', "*"):
        response = client.get(url, headers={"If-None-Match": etag})
        assert response.status_code == 304, etag
        assert response.content == b"", etag
        assert response.headers["etag"] == 'W/"1"', etag
    update(client, {**created, "active": True})
    stale = client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert stale.status_code == 200
    assert stale.json()["meta"]["versionId"] == "2"
    assert client.get(f"{url}/_history/1", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"{url}/_history/1", headers={"If-None-Match": 'W/"2"'}).status_code == 200


# -- update -----------------------------------------------------------------------------------


def test_update_writes_new_version(client: TestClient) -> None:
    created = create(client, patient("u-1", gender="male"))
    sent = {**created, "gender": "female", "meta": {"versionId": "99"}}
    response = client.put(f"/fhir/Patient/{created['id']}", json=sent)
    assert response.status_code == 200, response.text
    assert_fhir_json(response)
    body = response.json()
    assert (body["id"], body["gender"]) == (created["id"], "female")
    assert body["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert instant(body["meta"]["lastUpdated"]) >= instant(created["meta"]["lastUpdated"])
    assert client.get(f"/fhir/Patient/{created['id']}").json() == body


def test_update_as_create_keeps_client_id(client: TestClient) -> None:
    response = client.put("/fhir/Patient/chosen-id.1", json=patient(id="chosen-id.1"))
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{BASE}/Patient/chosen-id.1/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert (response.json()["id"], response.json()["meta"]["versionId"]) == ("chosen-id.1", "1")
    assert client.get("/fhir/Patient/chosen-id.1").json() == response.json()


def test_update_of_deleted_resource_resurrects_it(client: TestClient) -> None:
    created = create(client, patient("z", gender="male"))
    rid = created["id"]
    delete(client, "Patient", rid)
    response = client.put(f"/fhir/Patient/{rid}", json={**created, "meta": {}})
    assert response.status_code == 201, response.text
    assert response.json()["meta"]["versionId"] == "3"
    assert response.headers["etag"] == 'W/"3"'
    assert client.get(f"/fhir/Patient/{rid}").json()["meta"]["versionId"] == "3"
    assert history(client, f"/Patient/{rid}")["total"] == 3


def test_update_body_id_must_match_url(client: TestClient) -> None:
    created = create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    outcome = assert_outcome(client.put(url, json={**created, "id": "other"}), 400, "mismatch")
    assert outcome["issue"][0]["expression"] == ["Patient.id"]
    assert_outcome(client.put(url, json=patient(gender="male")), 400, "no id in body")
    assert client.get(url).json() == created


def test_update_if_match(client: TestClient) -> None:
    created = create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    changed = {**created, "active": True}
    for etag in ('W/"2"', 'W/"0"', '"7"', "garbage"):
        assert_outcome(client.put(url, json=changed, headers={"If-Match": etag}), 412, etag)
    assert client.get(url).json() == created
    response = client.put(url, json=changed, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    new = client.put("/fhir/Patient/p-new", json=patient(id="p-new"), headers={"If-Match": 'W/"1"'})
    assert_outcome(new, 412, "update-as-create with If-Match")
    assert client.get("/fhir/Patient/p-new").status_code == 404


def test_update_with_same_content_writes_no_version(client: TestClient) -> None:
    created = create(client, patient("same", gender="male"))
    response = client.put(f"/fhir/Patient/{created['id']}", json=created)
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'
    stale_meta = {**created, "meta": {"versionId": "1", "lastUpdated": "2001-01-01T00:00:00Z"}}
    assert update(client, stale_meta)["meta"]["versionId"] == "1"
    assert history(client, f"/Patient/{created['id']}")["total"] == 1


# -- conditional create -----------------------------------------------------------------------


def conditional_create(
    client: TestClient, resource: dict[str, Any], search: str, form: str
) -> httpx.Response:
    """Conditional create with If-None-Exist (`header`) or fhirpy's query string (`query`)."""
    if form == "header":
        headers = {"If-None-Exist": f"identifier={search}"}
        return client.post("/fhir/Patient", json=resource, headers=headers)
    return client.post("/fhir/Patient", json=resource, params={"identifier": search})


FORMS = pytest.mark.parametrize("form", ["header", "query"])


@FORMS
def test_conditional_create_without_match_creates(client: TestClient, form: str) -> None:
    create(client, patient("cc-other"))
    response = conditional_create(client, patient("cc-0"), criteria("cc-0"), form)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{BASE}/Patient/{response.json()['id']}/_history/1"
    assert count_patients(client, "cc-0") == 1


@FORMS
def test_conditional_create_with_one_match_returns_existing(client: TestClient, form: str) -> None:
    existing = create(client, patient("cc-1", gender="male"))
    response = conditional_create(client, patient("cc-1", gender="female"), criteria("cc-1"), form)
    assert response.status_code == 200, response.text
    assert response.json() == existing
    assert response.headers["etag"] == 'W/"1"'
    assert versions_stored(client) == 1


@FORMS
def test_conditional_create_with_several_matches_is_412(client: TestClient, form: str) -> None:
    create(client, patient("cc-2"))
    create(client, patient("cc-2"))
    assert_outcome(conditional_create(client, patient("cc-2"), criteria("cc-2"), form), 412)
    assert count_patients(client, "cc-2") == 2


def test_conditional_create_criteria(client: TestClient) -> None:
    create(client, patient("fmt"))
    plain = client.post("/fhir/Patient", json=patient("fmt"), params={"_format": "json"})
    assert plain.status_code == 201, "_format is not a criterion"
    assert count_patients(client, "fmt") == 2
    bad = client.post("/fhir/Patient", json=patient(), headers={"If-None-Exist": "shoe-size=1"})
    assert_outcome(bad, 400, "unknown search parameter")
    assert versions_stored(client) == 2


# -- conditional update -----------------------------------------------------------------------


def conditional_update(
    client: TestClient, resource: dict[str, Any], value: str, **headers: str
) -> httpx.Response:
    """PUT /fhir/Patient?identifier=SYSTEM|value."""
    params = {"identifier": criteria(value)}
    return client.put("/fhir/Patient", json=resource, params=params, headers=headers)


def test_conditional_update_without_match_creates(client: TestClient) -> None:
    create(client, patient("cu-other"))
    response = conditional_update(client, patient("cu-0", gender="male"), "cu-0")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert response.headers["location"] == f"{BASE}/Patient/{body['id']}/_history/1"
    assert count_patients(client, "cu-0") == 1


def test_conditional_update_with_one_match_updates_it(client: TestClient) -> None:
    existing = create(client, patient("cu-1", gender="male"))
    other = create(client, patient("cu-other"))
    response = conditional_update(client, patient("cu-1", gender="female"), "cu-1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["gender"]) == (existing["id"], "female")
    assert body["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert count_patients(client, "cu-1") == 1
    assert client.get(f"/fhir/Patient/{other['id']}").json() == other
    same_id = conditional_update(client, {**body, "active": True}, "cu-1")
    assert same_id.status_code == 200, same_id.text
    assert same_id.json()["meta"]["versionId"] == "3"


def test_conditional_update_with_other_body_id_is_400(client: TestClient) -> None:
    existing = create(client, patient("cu-bad"))
    response = conditional_update(client, patient("cu-bad", id="someone-else"), "cu-bad")
    assert_outcome(response, 400)
    assert client.get(f"/fhir/Patient/{existing['id']}").json() == existing


def test_conditional_update_with_several_matches_is_412(client: TestClient) -> None:
    first = create(client, patient("cu-2"))
    create(client, patient("cu-2"))
    assert_outcome(conditional_update(client, patient("cu-2", active=True), "cu-2"), 412)
    assert client.get(f"/fhir/Patient/{first['id']}").json() == first


def test_conditional_update_if_match(client: TestClient) -> None:
    existing = create(client, patient("cu-m"))
    changed = patient("cu-m", active=True)
    assert_outcome(conditional_update(client, changed, "cu-m", **{"If-Match": 'W/"9"'}), 412)
    fresh = conditional_update(client, changed, "cu-m", **{"If-Match": 'W/"1"'})
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["id"] == existing["id"]


# -- conditional delete -----------------------------------------------------------------------


def conditional_delete(client: TestClient, value: str) -> httpx.Response:
    """DELETE /fhir/Patient?identifier=SYSTEM|value."""
    return client.delete("/fhir/Patient", params={"identifier": criteria(value)})


def test_conditional_delete_without_match_deletes_nothing(client: TestClient) -> None:
    other = create(client, patient("cd-other"))
    response = conditional_delete(client, "cd-0")
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "information"
    assert_outcome(client.delete("/fhir/Patient"), 400, "no criteria")
    assert client.get(f"/fhir/Patient/{other['id']}").json() == other


def test_conditional_delete_with_one_match_deletes_it(client: TestClient) -> None:
    target = create(client, patient("cd-1"))
    other = create(client, patient("cd-other"))
    response = conditional_delete(client, "cd-1")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert response.headers["etag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{target['id']}").status_code == 410
    assert client.get(f"/fhir/Patient/{other['id']}").status_code == 200


def test_conditional_delete_with_several_matches_is_412(client: TestClient) -> None:
    create(client, patient("cd-2"))
    create(client, patient("cd-2"))
    assert_outcome(conditional_delete(client, "cd-2"), 412)
    assert count_patients(client, "cd-2") == 2


# -- patch ------------------------------------------------------------------------------------


def test_json_patch_writes_new_version(client: TestClient) -> None:
    created = create(client, patient("jp", gender="male"))
    url = f"/fhir/Patient/{created['id']}"
    ops = [
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/active", "value": True},
    ]
    response = patch(client, url, ops)
    assert response.status_code == 200, response.text
    assert_fhir_json(response)
    body = response.json()
    assert (body["gender"], body["active"]) == ("female", True)
    assert body["identifier"] == created["identifier"]
    assert body["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert client.get(url).json() == body


def test_json_patch_that_cannot_apply_is_422(client: TestClient) -> None:
    created = create(client, patient(gender="male"))
    url = f"/fhir/Patient/{created['id']}"
    cases = {
        "unknown op": {"op": "frobnicate", "path": "/gender", "value": "male"},
        "missing path": {"op": "remove", "path": "/birthDate"},
        "failed test": {"op": "test", "path": "/gender", "value": "female"},
        "change id": {"op": "replace", "path": "/id", "value": "another-id"},
        "change type": {"op": "replace", "path": "/resourceType", "value": "Practitioner"},
        "replace all": {"op": "replace", "path": "", "value": []},
    }
    for case, op in cases.items():
        assert_outcome(patch(client, url, [op]), 422, case)
    assert client.get(url).json() == created


def test_json_patch_that_is_malformed_is_400(client: TestClient) -> None:
    created = create(client, patient(gender="male"))
    url = f"/fhir/Patient/{created['id']}"
    invalid = patch(client, url, [{"op": "replace", "path": "/gender", "value": "robot"}])
    outcome = assert_outcome(invalid, 400, "patched resource is invalid")
    assert outcome["issue"][0]["expression"] == ["Patient.gender"]
    assert_outcome(patch(client, url, {"op": "remove", "path": "/id"}), 400, "not an array")
    assert client.get(url).json() == created


def test_json_patch_needs_json_patch_media_type(client: TestClient) -> None:
    created = create(client, patient())
    ops = [{"op": "add", "path": "/active", "value": True}]
    for kind in (FHIR_JSON, "application/json", "text/plain"):
        response = patch(client, f"/fhir/Patient/{created['id']}", ops, **{"Content-Type": kind})
        assert_outcome(response, 415, kind)
    assert versions_stored(client) == 1


def test_json_patch_if_match(client: TestClient) -> None:
    created = create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    ops = [{"op": "add", "path": "/active", "value": True}]
    assert_outcome(patch(client, url, ops, **{"If-Match": 'W/"5"'}), 412)
    response = patch(client, url, ops, **{"If-Match": 'W/"1"'})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'


def test_json_patch_unknown_or_deleted(client: TestClient) -> None:
    ops = [{"op": "add", "path": "/active", "value": True}]
    assert_outcome(patch(client, "/fhir/Patient/nobody", ops), 404)
    rid = create(client, patient())["id"]
    delete(client, "Patient", rid)
    assert_outcome(patch(client, f"/fhir/Patient/{rid}", ops), 410)


def test_conditional_patch(client: TestClient) -> None:
    ops = [{"op": "add", "path": "/active", "value": True}]

    def by_identifier(value: str) -> httpx.Response:
        return patch(client, f"/fhir/Patient?identifier={criteria(value)}", ops)

    assert_outcome(by_identifier("cp-0"), 404, "no match")
    one = create(client, patient("cp-1"))
    response = by_identifier("cp-1")
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["active"]) == (one["id"], True)
    assert response.json()["meta"]["versionId"] == "2"
    create(client, patient("cp-2"))
    create(client, patient("cp-2"))
    assert_outcome(by_identifier("cp-2"), 412, "several matches")
    assert count_patients(client, "cp-2") == 2


# -- delete -----------------------------------------------------------------------------------


def test_delete_then_read_gone_and_history_records_it(client: TestClient) -> None:
    created = create(client, patient())
    rid = created["id"]
    response = client.delete(f"/fhir/Patient/{rid}")
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["etag"] == 'W/"2"'
    assert_outcome(client.get(f"/fhir/Patient/{rid}"), 410)
    bundle = history(client, f"/Patient/{rid}")
    assert bundle["total"] == 2
    deletion, creation = bundle["entry"]
    assert deletion["request"] == {"method": "DELETE", "url": f"Patient/{rid}"}
    assert "resource" not in deletion
    assert deletion["response"]["etag"] == 'W/"2"'
    assert creation["resource"] == created
    assert client.get("/fhir/Patient", params={"_id": rid}).json()["total"] == 0


def test_delete_twice_is_fine_and_unknown_is_404(client: TestClient) -> None:
    rid = create(client, patient())["id"]
    delete(client, "Patient", rid)
    delete(client, "Patient", rid)
    assert history(client, f"/Patient/{rid}")["total"] == 2
    assert_outcome(client.delete("/fhir/Patient/never-was"), 404)


def test_delete_if_match(client: TestClient) -> None:
    rid = create(client, patient())["id"]
    assert_outcome(client.delete(f"/fhir/Patient/{rid}", headers={"If-Match": 'W/"3"'}), 412)
    assert client.get(f"/fhir/Patient/{rid}").status_code == 200
    response = client.delete(f"/fhir/Patient/{rid}", headers={"If-Match": 'W/"1"'})
    assert response.status_code == 204


# -- history ----------------------------------------------------------------------------------


def test_instance_history_newest_first(client: TestClient) -> None:
    v1 = create(client, patient("h", gender="male"))
    v2 = update(client, {**v1, "gender": "female"})
    create(client, patient("noise"))
    bundle = history(client, f"/Patient/{v1['id']}")
    assert bundle["total"] == 2
    assert [version_of(e) for e in bundle["entry"]] == [2, 1]
    newest, oldest = bundle["entry"]
    assert newest["fullUrl"] == f"{BASE}/Patient/{v1['id']}"
    assert newest["resource"] == v2
    assert newest["request"] == {"method": "PUT", "url": f"Patient/{v1['id']}"}
    assert newest["response"]["status"].startswith("200")
    assert newest["response"]["lastModified"] == v2["meta"]["lastUpdated"]
    assert oldest["resource"] == v1
    assert oldest["request"]["method"] == "POST"
    assert oldest["response"]["status"].startswith("201")
    assert_outcome(client.get("/fhir/Patient/nobody/_history"), 404, "unknown instance")


def test_type_history_only_that_type(client: TestClient) -> None:
    p = create(client, patient())
    update(client, {**p, "active": True})
    create(client, {"resourceType": "Organization", "name": "Clinique"})
    bundle = history(client, "/Patient")
    assert bundle["total"] == 2
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Patient"}
    assert [version_of(e) for e in bundle["entry"]] == [2, 1]


def test_system_history_spans_types_newest_first(client: TestClient) -> None:
    p = create(client, patient())
    org = create(client, {"resourceType": "Organization", "name": "Clinique"})
    delete(client, "Patient", p["id"])
    bundle = history(client, "")
    assert bundle["total"] == 3
    assert [e["fullUrl"] for e in bundle["entry"]] == [
        f"{BASE}/Patient/{p['id']}",
        f"{BASE}/Organization/{org['id']}",
        f"{BASE}/Patient/{p['id']}",
    ]
    assert [e["request"]["method"] for e in bundle["entry"]] == ["DELETE", "POST", "POST"]


def walk(client: TestClient, first_url: str, between: Callable[[], object]) -> list[Any]:
    """Follow `next` links from `first_url`, calling `between()` before each further page."""
    entries: list[Any] = []
    url: str | None = first_url
    for _ in range(50):
        response = client.get(url)
        assert response.status_code == 200, response.text
        page = response.json()
        entries.extend(page.get("entry", []))
        url = link(page, "next")
        if url is None:
            return entries
        assert url.startswith(f"{BASE}/"), f"next link is not absolute: {url}"
        between()
    raise AssertionError("paging does not terminate")


@pytest.mark.parametrize("path", ["", "/Patient"], ids=["system", "type"])
def test_history_paging_is_stable_while_writes_happen(client: TestClient, path: str) -> None:
    first = create(client, patient("pg-0"))
    for i in range(1, 5):
        create(client, patient(f"pg-{i}"))
    update(client, {**first, "active": True})
    expected = [entry_key(e) for e in history(client, path, _count="100")["entry"]]
    assert len(expected) == 6

    def write_more() -> None:
        create(client, patient("pg-late"))

    entries = walk(client, f"{BASE}{path}/_history?_count=2", write_more)
    assert [entry_key(e) for e in entries] == expected
    assert history(client, path)["total"] == 6 + 2


def test_history_page_links(client: TestClient) -> None:
    for i in range(3):
        create(client, patient(f"ln-{i}"))
    bundle = history(client, "/Patient", _count="2")
    assert (len(bundle["entry"]), bundle["total"]) == (2, 3)
    assert link(bundle, "self") is not None
    assert link(bundle, "previous") is None
    nxt = link(bundle, "next")
    assert nxt is not None
    assert parse_qs(urlsplit(nxt).query)["_count"] == ["2"]
    last = client.get(nxt).json()
    assert len(last["entry"]) == 1
    assert link(last, "next") is None
    assert link(last, "previous") is not None
    counted = history(client, "/Patient", _count="0")
    assert counted["total"] == 3
    assert "entry" not in counted


def test_history_since(client: TestClient) -> None:
    v1 = create(client, patient("s"))
    v2 = update(client, {**v1, "active": True})
    update(client, {**v2, "active": False})
    path = f"/Patient/{v1['id']}"
    everything = history(client, path)["entry"]
    since = v2["meta"]["lastUpdated"]
    expected = [
        entry_key(e) for e in everything if instant(e["response"]["lastModified"]) >= instant(since)
    ]
    assert 2 <= len(expected) <= 3
    found = history(client, path, _since=since)
    assert [entry_key(e) for e in found["entry"]] == expected
    assert found["total"] == len(expected)
    assert history(client, path, _since="2000-01-01")["total"] == 3
    assert history(client, path, _since="2999-01-01T00:00:00Z")["total"] == 0


def test_history_bad_parameters_are_400(client: TestClient) -> None:
    for params in ({"_since": "yesterday"}, {"name": "x"}, {"_count": "many"}):
        assert_outcome(client.get("/fhir/Patient/_history", params=params), 400, str(params))


# -- Prefer -----------------------------------------------------------------------------------


def test_prefer_return_minimal(client: TestClient) -> None:
    for prefer in ("return=minimal", "handling=strict, return=minimal"):
        response = client.post("/fhir/Patient", json=patient(), headers={"Prefer": prefer})
        assert response.status_code == 201
        assert response.content == b"", prefer
        assert response.headers["etag"] == 'W/"1"'
    rid = response.headers["location"].split("/Patient/")[1].split("/")[0]
    current = client.get(f"/fhir/Patient/{rid}").json()
    updated = client.put(
        f"/fhir/Patient/{rid}",
        json={**current, "active": True},
        headers={"Prefer": "return=minimal"},
    )
    assert updated.status_code == 200
    assert updated.content == b""
    assert updated.headers["etag"] == 'W/"2"'


def test_prefer_return_representation_is_the_default(client: TestClient) -> None:
    for headers in ({"Prefer": "return=representation"}, {}):
        response = client.post("/fhir/Patient", json=patient(), headers=headers)
        assert response.status_code == 201
        assert response.json()["resourceType"] == "Patient", headers
        assert response.json()["meta"]["versionId"] == "1"


def test_prefer_return_operation_outcome(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"}
    )
    assert response.status_code == 201
    assert "location" in response.headers
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "information"


# -- content negotiation ----------------------------------------------------------------------


def test_json_body_media_types_are_accepted(client: TestClient) -> None:
    for kind in (
        FHIR_JSON,
        f"{FHIR_JSON}; charset=utf-8",
        "application/json",
        "application/json; charset=UTF-8",
        "application/json+fhir",
    ):
        response = client.post(
            "/fhir/Patient",
            content=json.dumps(patient(gender="other")),
            headers={"Content-Type": kind},
        )
        assert response.status_code == 201, f"{kind}: {response.text}"
        assert_fhir_json(response, kind)
        assert response.json()["gender"] == "other"


def test_unsupported_body_media_type_is_415(client: TestClient) -> None:
    body = json.dumps(patient(id="x1"))
    for kind in ("text/plain", "application/fhir+turtle", "application/x-www-form-urlencoded"):
        headers = {"Content-Type": kind}
        assert_outcome(client.post("/fhir/Patient", content=body, headers=headers), 415, kind)
        assert_outcome(client.put("/fhir/Patient/x1", content=body, headers=headers), 415, kind)
    assert versions_stored(client) == 0


def test_json_is_negotiated(client: TestClient) -> None:
    rid = create(client, patient())["id"]
    url = f"/fhir/Patient/{rid}"
    for accept in (FHIR_JSON, "application/json", "application/json+fhir", "*/*", "application/*"):
        response = client.get(url, headers={"Accept": accept})
        assert response.status_code == 200, accept
        assert_fhir_json(response, accept)
    for fmt in ("json", FHIR_JSON, "application/json"):
        response = client.get(url, params={"_format": fmt})
        assert response.status_code == 200, fmt
        assert_fhir_json(response, fmt)


def test_unsupported_formats_are_not_acceptable(client: TestClient) -> None:
    """XML is served too (tests/api/test_xml.py); anything else is a 406, before any write."""
    rid = create(client, patient())["id"]
    requests: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"_format": "html"}, {}),
        ({"_format": "application/fhir+turtle"}, {}),
        ({}, {"Accept": "text/html"}),
        ({}, {"Accept": "application/fhir+turtle"}),
        ({"_format": "ttl"}, {"Accept": FHIR_JSON}),
    ]
    for params, headers in requests:
        for path in (f"/fhir/Patient/{rid}", "/fhir/Patient", "/fhir/metadata"):
            response = client.get(path, params=params, headers=headers)
            assert_outcome(response, 406, f"{path} {params} {headers}")
    response = client.post("/fhir/Patient", json=patient(), headers={"Accept": "text/html"})
    assert_outcome(response, 406, "create")
    assert versions_stored(client) == 1


# -- X-Request-Id -----------------------------------------------------------------------------


def test_request_id_is_echoed_and_in_every_outcome(client: TestClient) -> None:
    rid = create(client, patient())["id"]
    ok = client.get(f"/fhir/Patient/{rid}", headers={"X-Request-Id": "trace-123.abc"})
    assert ok.headers["x-request-id"] == "trace-123.abc"
    failures = {
        "GET": ("/fhir/Patient/nope", None),
        "POST": ("/fhir/Patient", b"not json"),
        "PUT": (f"/fhir/Patient/{rid}", b"not json"),
        "DELETE": ("/fhir/Patient/nope", None),
    }
    for method, (path, body) in failures.items():
        given = f"req-{method}"
        headers = {"X-Request-Id": given, "Content-Type": FHIR_JSON}
        response = client.request(method, path, content=body, headers=headers)
        assert response.headers["x-request-id"] == given
        outcome = assert_outcome(response, 400 if body else 404, method)
        assert outcome["extension"] == [{"url": REQUEST_ID_URL, "valueString": given}]


def test_request_id_is_generated_when_absent_or_unsafe(client: TestClient) -> None:
    ids = [client.get("/fhir/metadata").headers["x-request-id"] for _ in range(2)]
    assert all(uuid.UUID(i) for i in ids)
    assert ids[0] != ids[1]
    unsafe = "a b<script>" + "x" * 200
    response = client.get("/fhir/Patient/nope", headers={"X-Request-Id": unsafe})
    assert uuid.UUID(response.headers["x-request-id"])
    assert_outcome(response, 404)


# -- capabilities -----------------------------------------------------------------------------


def test_capability_statement(client: TestClient) -> None:
    response = client.get("/fhir/metadata", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert_fhir_json(response)
    cs = response.json()
    models.validate(cs, "CapabilityStatement")
    assert (cs["status"], cs["kind"], cs["fhirVersion"]) == ("active", "instance", "4.0.1")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", cs["date"])
    assert "json" in cs["format"] or FHIR_JSON in cs["format"]
    assert JSON_PATCH in cs["patchFormat"]
    assert cs["implementation"]["url"] == BASE
    (rest,) = cs["rest"]
    assert rest["mode"] == "server"
    assert {"transaction", "batch", "history-system"} <= {i["code"] for i in rest["interaction"]}
    by_type = {r["type"]: r for r in rest["resource"]}
    assert set(by_type) == SERVED_TYPES
    assert len(rest["resource"]) == len(SERVED_TYPES)
    for name, resource in by_type.items():
        interactions = {i["code"] for i in resource["interaction"]}
        assert {"read", "search-type", "create"} <= interactions <= ALL_INTERACTIONS, name
        assert resource["updateCreate"] is ("update" in interactions), name
        deletes = "single" if "delete" in interactions else "not-supported"
        assert resource["conditionalDelete"] == deletes, name
        assert resource["conditionalRead"] in ("not-match", "full-support"), name
        assert resource["versioning"] in ("versioned", "versioned-update"), name
        assert resource["readHistory"] is ("vread" in interactions), name
        assert {"_id", "_lastUpdated"} <= {p["name"] for p in resource["searchParam"]}, name
    assert {i["code"] for i in by_type["Patient"]["interaction"]} == ALL_INTERACTIONS
    patient_params = {p["name"]: p["type"] for p in by_type["Patient"]["searchParam"]}
    assert patient_params["identifier"] == "token"
    assert patient_params["name"] == "string"
    assert patient_params["birthdate"] == "date"
    study_params = {p["name"]: p["type"] for p in by_type["ImagingStudy"]["searchParam"]}
    assert study_params["patient"] == "reference"
    assert "ImagingStudy:patient" in by_type["ImagingStudy"]["searchInclude"]


def test_decimals_keep_their_precision(client: TestClient) -> None:
    """FHIR R4 json.html: a decimal's precision is part of its value (1.50 is not 1.5)."""
    body = (
        '{"resourceType":"Provenance","target":[{"reference":"Patient/x"}],'
        '"recorded":"2024-01-01T00:00:00Z","agent":[{"who":{"display":"a"}}],'
        '"location":{"display":"here"},'
        '"extension":[{"url":"http://example.org/weight","valueDecimal":1.50},'
        '{"url":"http://example.org/big","valueDecimal":2.000000000000000000001}]}'
    )
    created = client.post("/fhir/Provenance", content=body, headers={"Content-Type": FHIR_JSON})
    assert created.status_code == 201, created.text
    text = client.get(f"/fhir/Provenance/{created.json()['id']}").text
    assert '"valueDecimal":1.50' in text
    assert '"valueDecimal":2.000000000000000000001' in text
    again = json.loads(text)
    again["extension"][0]["valueDecimal"] = 1.5
    updated = client.put(f"/fhir/Provenance/{again['id']}", json=again)
    assert updated.headers["etag"] == 'W/"2"'  # 1.5 is a change from 1.50
