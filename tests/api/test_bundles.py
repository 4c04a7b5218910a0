"""Batch and transaction Bundles: POST [base] (FHIR R4 http.html#transaction).

A transaction is all or nothing: a failing entry leaves no resource and no version behind (checked
through search, read and history), and its OperationOutcome names the entry. `urn:uuid:` full
URLs and conditional references are resolved wherever they appear; entries run DELETE, POST,
PUT/PATCH, GET; the response has one entry per request, in the request's order. In a batch every
entry stands alone.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

SYS = "urn:oid:1.2.3.4"
PATIENT_URN = "urn:uuid:5f3c3b4e-0c1a-4d8e-9a55-1b7e0d1b7a01"
BINARY_URN = "urn:uuid:0b3a4c1e-7b2d-4f61-8c3e-2d8f5a6b9c02"
STUDY_URN = "urn:uuid:a7e1c2d3-4b5f-4a6e-9d7c-3e2f1a0b8c03"


def entry(
    method: str,
    url: str,
    resource: dict[str, Any] | None = None,
    full_url: str | None = None,
    **request: str,
) -> dict[str, Any]:
    """One Bundle.entry; `request` adds ifMatch, ifNoneExist..."""
    out: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if full_url:
        out["fullUrl"] = full_url
    if resource is not None:
        out["resource"] = resource
    return out


def send(
    client: TestClient, entries: list[dict[str, Any]], kind: str = "transaction", **headers: str
) -> Response:
    """POST a Bundle of `kind` to the base."""
    bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return client.post("/fhir", json=bundle, headers=headers)


def patient(value: str, **more: Any) -> dict[str, Any]:
    """A Patient with the identifier SYS|value."""
    return {"resourceType": "Patient", "identifier": [{"system": SYS, "value": value}], **more}


def study(subject: str, uid: str = "1.2.826.0.1.3680043.2.1125.1") -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "status": "available",
        "subject": {"reference": subject},
    }


def json_patch(operations: list[dict[str, Any]]) -> dict[str, Any]:
    """The Binary a PATCH entry carries (FHIR R4 http.html#patch)."""
    data = base64.b64encode(json.dumps(operations).encode()).decode()
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


def put(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    """Store `resource` under its own id."""
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text
    stored: dict[str, Any] = response.json()
    return stored


def total(client: TestClient, url: str, **params: str) -> int:
    """The total of a search or history Bundle."""
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    count: int = response.json()["total"]
    return count


def state(client: TestClient) -> dict[str, Any]:
    """What a transaction could have changed: every version (id, ETag) of each type."""
    out: dict[str, Any] = {}
    for type_name in ("Patient", "ImagingStudy", "DocumentReference", "Binary"):
        history = client.get(f"/fhir/{type_name}/_history", params={"_count": "100"}).json()
        out[type_name] = sorted(
            (e["fullUrl"], e["response"]["etag"]) for e in history.get("entry", [])
        )
        out[f"{type_name} total"] = history["total"]
    return out


def outcome_of(response: Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def ids(response: Response) -> list[str]:
    """`Type/id` of each write entry of a response Bundle (from its location)."""
    return ["/".join(e["response"]["location"].split("/")[:2]) for e in response.json()["entry"]]


# -- transaction: references ------------------------------------------------------------------


def test_urn_uuid_references_resolve_everywhere(client: TestClient) -> None:
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": PATIENT_URN},
        "content": [{"attachment": {"contentType": "text/plain", "url": BINARY_URN}}],
        "context": {"related": [{"reference": STUDY_URN}, {"reference": PATIENT_URN}]},
    }
    response = send(
        client,
        [
            entry("POST", "DocumentReference", document),  # refers forward to later entries
            entry("POST", "Patient", patient("u1", photo=[{"url": BINARY_URN}]), PATIENT_URN),
            entry("POST", "ImagingStudy", study(PATIENT_URN), STUDY_URN),
            entry(
                "POST",
                "Binary",
                {"resourceType": "Binary", "contentType": "text/plain", "data": "aGk="},
                BINARY_URN,
            ),
        ],
    )
    assert response.status_code == 200, response.text
    doc, pat, img, binary = ids(response)
    stored = client.get(f"/fhir/{doc}").json()
    assert stored["subject"] == {"reference": pat}
    assert stored["content"][0]["attachment"]["url"] == binary
    assert stored["context"]["related"] == [{"reference": img}, {"reference": pat}]
    assert client.get(f"/fhir/{img}").json()["subject"] == {"reference": pat}
    assert client.get(f"/fhir/{pat}").json()["photo"] == [{"url": binary}]
    for ref in (doc, pat, img, binary):
        assert client.get(f"/fhir/{ref}").status_code == 200
    assert "urn:uuid" not in json.dumps(response.json())
    # the index holds the resolved references too
    found = client.get("/fhir/DocumentReference", params={"subject": pat}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [doc.split("/")[1]]


def test_conditional_reference_is_resolved(client: TestClient) -> None:
    put(client, {**patient("c1"), "id": "cond-1"})
    put(client, {**patient("c2"), "id": "cond-2"})
    response = send(client, [entry("POST", "ImagingStudy", study(f"Patient?identifier={SYS}|c2"))])
    assert response.status_code == 200, response.text
    [ref] = ids(response)
    assert client.get(f"/fhir/{ref}").json()["subject"] == {"reference": "Patient/cond-2"}


@pytest.mark.parametrize("matches", [0, 2])
def test_conditional_reference_must_match_exactly_one(client: TestClient, matches: int) -> None:
    for n in range(matches):
        put(client, {**patient("twin"), "id": f"twin-{n}"})
    before = state(client)
    response = send(
        client,
        [
            entry("POST", "Patient", patient("bystander")),
            entry("POST", "ImagingStudy", study(f"Patient?identifier={SYS}|twin")),
        ],
    )
    assert response.status_code == 412, response.text
    assert "Bundle.entry[1]" in outcome_of(response)["issue"][0]["diagnostics"]
    assert state(client) == before


def test_if_none_exist_reuses_the_existing_resource(client: TestClient) -> None:
    put(client, {**patient("known"), "id": "known"})
    response = send(
        client,
        [
            entry(
                "POST",
                "Patient",
                patient("known"),
                PATIENT_URN,
                ifNoneExist=f"identifier={SYS}|known",
            ),
            entry("POST", "Patient", patient("unknown"), ifNoneExist=f"identifier={SYS}|unknown"),
            entry("POST", "ImagingStudy", study(PATIENT_URN)),
        ],
    )
    assert response.status_code == 200, response.text
    first, second, third = response.json()["entry"]
    assert first["response"]["status"] == "200 OK"
    assert first["response"]["location"] == "Patient/known/_history/1"
    assert second["response"]["status"] == third["response"]["status"] == "201 Created"
    img = third["response"]["location"].rsplit("/_history/", 1)[0]
    assert client.get(f"/fhir/{img}").json()["subject"] == {"reference": "Patient/known"}
    assert total(client, "/fhir/Patient", identifier=f"{SYS}|known") == 1
    assert total(client, "/fhir/Patient/known/_history") == 1


# -- transaction: atomicity -------------------------------------------------------------------

# The last entry of a transaction that would otherwise create, update and delete resources.
FAILING = [
    pytest.param(
        entry("POST", "Patient", patient("bad", gender="robot")),
        400,
        ["Bundle.entry[3].resource.gender"],
        id="invalid-resource",
    ),
    pytest.param(
        entry("POST", "Patient", patient("bad", active="yes")),
        400,
        ["Bundle.entry[3].resource.active"],
        id="wrong-datatype",
    ),
    pytest.param(
        entry("PUT", f"Patient?identifier={SYS}|dup", patient("dup")),
        412,
        None,
        id="conditional-update-two-matches",
    ),
    pytest.param(
        entry("POST", "Patient", patient("dup"), ifNoneExist=f"identifier={SYS}|dup"),
        412,
        None,
        id="if-none-exist-two-matches",
    ),
    pytest.param(
        entry("PUT", "Patient/keep-2", {**patient("k2"), "id": "keep-2"}, ifMatch='W/"7"'),
        412,
        None,
        id="if-match-mismatch",
    ),
    pytest.param(
        entry("DELETE", "Patient/keep-2", ifMatch='W/"2"'),
        412,
        None,
        id="if-match-mismatch-delete",
    ),
    pytest.param(
        entry("POST", "ImagingStudy", study(f"Patient?identifier={SYS}|nobody")),
        412,
        None,
        id="unresolvable-conditional-reference",
    ),
    pytest.param(
        entry("GET", "Patient/never-was"),
        404,
        None,
        id="failing-read",
    ),
]


@pytest.mark.parametrize(("failing", "status", "expression"), FAILING)
def test_failing_entry_leaves_nothing_behind(
    client: TestClient, failing: dict[str, Any], status: int, expression: list[str] | None
) -> None:
    put(client, {**patient("keep"), "id": "keep"})
    put(client, {**patient("k2"), "id": "keep-2"})
    put(client, {**patient("gone"), "id": "gone"})
    for n in range(2):
        put(client, {**patient("dup"), "id": f"dup-{n}"})
    before = state(client)
    response = send(
        client,
        [
            entry("POST", "Patient", patient("new"), PATIENT_URN),
            entry("PUT", "Patient/keep", {**patient("keep"), "id": "keep", "active": False}),
            entry("DELETE", "Patient/gone"),
            failing,
            entry("POST", "ImagingStudy", study(PATIENT_URN)),
        ],
    )
    assert response.status_code == status, response.text
    issue = outcome_of(response)["issue"][0]
    assert issue["diagnostics"].startswith("Bundle.entry[3]"), issue
    if expression:
        assert issue["expression"] == expression
    assert state(client) == before
    assert total(client, "/fhir/Patient", identifier=f"{SYS}|new") == 0
    assert total(client, "/fhir/ImagingStudy") == 0
    assert client.get("/fhir/Patient/gone").status_code == 200
    kept = client.get("/fhir/Patient/keep").json()
    assert kept["meta"]["versionId"] == "1" and "active" not in kept


def test_successful_transaction_commits_every_entry(client: TestClient) -> None:
    """The same Bundle as above without the failing entry: all of it is written."""
    put(client, {**patient("keep"), "id": "keep"})
    put(client, {**patient("gone"), "id": "gone"})
    response = send(
        client,
        [
            entry("POST", "Patient", patient("new"), PATIENT_URN),
            entry("PUT", "Patient/keep", {**patient("keep"), "id": "keep", "active": False}),
            entry("DELETE", "Patient/gone"),
            entry("POST", "ImagingStudy", study(PATIENT_URN)),
        ],
    )
    assert response.status_code == 200, response.text
    assert total(client, "/fhir/Patient", identifier=f"{SYS}|new") == 1
    assert total(client, "/fhir/ImagingStudy") == 1
    assert client.get("/fhir/Patient/gone").status_code == 410
    assert client.get("/fhir/Patient/keep").json()["meta"]["versionId"] == "2"


# -- transaction: conditional update and replay -------------------------------------------------


def test_conditional_put_creates_then_replay_writes_no_version(client: TestClient) -> None:
    uid = "1.2.826.0.1.3680043.2.1125.77"
    entries = [
        entry("PUT", f"Patient?identifier={SYS}|cp", patient("cp", gender="female"), PATIENT_URN),
        entry(
            "PUT", f"ImagingStudy?identifier=urn:dicom:uid|urn:oid:{uid}", study(PATIENT_URN, uid)
        ),
    ]
    first = send(client, entries)
    assert first.status_code == 200, first.text
    assert [e["response"]["status"] for e in first.json()["entry"]] == ["201 Created"] * 2
    pat, img = ids(first)
    assert client.get(f"/fhir/{img}").json()["subject"] == {"reference": pat}
    before = state(client)

    again = send(client, entries)
    assert again.status_code == 200, again.text
    assert [e["response"]["status"] for e in again.json()["entry"]] == ["200 OK"] * 2
    assert ids(again) == [pat, img]
    assert [e["response"]["etag"] for e in again.json()["entry"]] == ['W/"1"'] * 2
    assert state(client) == before

    changed = [
        entry("PUT", f"Patient?identifier={SYS}|cp", patient("cp", gender="male"), PATIENT_URN)
    ]
    updated = send(client, changed)
    assert updated.json()["entry"][0]["response"]["location"] == f"{pat}/_history/2"
    assert total(client, f"/fhir/{pat}/_history") == 2


def test_conditional_put_updates_the_match(client: TestClient) -> None:
    put(client, {**patient("cu"), "id": "cu"})
    response = send(
        client, [entry("PUT", f"Patient?identifier={SYS}|cu", patient("cu", active=True))]
    )
    assert response.status_code == 200, response.text
    result = response.json()["entry"][0]
    assert result["response"]["status"] == "200 OK"
    assert result["response"]["location"] == "Patient/cu/_history/2"
    assert client.get("/fhir/Patient/cu").json()["active"] is True


# -- transaction: processing order and response ------------------------------------------------


def test_entries_run_delete_post_put_get(client: TestClient) -> None:
    put(client, {**patient("old", name=[{"family": "Ordering"}]), "id": "old"})
    response = send(
        client,
        [
            entry("GET", "Patient?family=Ordering"),  # runs last: sees the new, not the old
            entry(
                "PUT",
                "Patient/later",
                {
                    "resourceType": "Patient",
                    "id": "later",
                    "link": [{"other": {"reference": PATIENT_URN}, "type": "seealso"}],
                },
            ),
            entry("POST", "Patient", patient("new", name=[{"family": "Ordering"}]), PATIENT_URN),
            entry("DELETE", "Patient/old"),  # runs first
        ],
    )
    assert response.status_code == 200, response.text
    searched, updated, created, deleted = response.json()["entry"]
    new_id = created["response"]["location"].split("/")[1]
    matches = [e["resource"]["id"] for e in searched["resource"]["entry"]]
    assert matches == [new_id]
    assert searched["response"]["status"] == "200 OK"
    assert updated["response"]["status"] == "201 Created"
    assert deleted["response"]["status"] == "204 No Content"
    later = client.get("/fhir/Patient/later").json()
    assert later["link"][0]["other"]["reference"] == f"Patient/{new_id}"
    assert client.get("/fhir/Patient/old").status_code == 410


def test_transaction_response_has_one_entry_per_request_in_order(client: TestClient) -> None:
    put(client, {**patient("upd"), "id": "upd"})
    put(client, {**patient("del"), "id": "del"})
    put(client, {**patient("read"), "id": "read"})
    response = send(
        client,
        [
            entry("GET", "Patient/read"),
            entry("DELETE", "Patient/del"),
            entry("PUT", "Patient/upd", {**patient("upd"), "id": "upd", "active": True}),
            entry("POST", "Patient", patient("created")),
            entry("PUT", "Patient/fresh", {**patient("fresh"), "id": "fresh"}),
        ],
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction-response"
    read, deleted, updated, created, fresh = bundle["entry"]
    assert read["response"]["status"] == "200 OK"
    assert read["response"]["etag"] == 'W/"1"'
    assert read["resource"]["id"] == "read"
    assert deleted["response"] == {"status": "204 No Content"}
    assert updated["response"]["status"] == "200 OK"
    assert updated["response"]["location"] == "Patient/upd/_history/2"
    assert updated["response"]["etag"] == 'W/"2"'
    assert updated["resource"]["active"] is True
    assert created["response"]["status"] == "201 Created"
    new_id = created["resource"]["id"]
    assert created["response"]["location"] == f"Patient/{new_id}/_history/1"
    assert created["response"]["etag"] == 'W/"1"'
    assert created["fullUrl"].endswith(f"/fhir/Patient/{new_id}")
    assert fresh["response"]["status"] == "201 Created"
    assert fresh["response"]["location"] == "Patient/fresh/_history/1"
    for written in (updated, created, fresh):
        assert written["response"]["lastModified"].endswith("Z")


def test_prefer_return_minimal_and_outcome(client: TestClient) -> None:
    entries = [entry("POST", "Patient", patient("min")), entry("GET", "Patient?identifier=x")]
    minimal = send(client, entries, prefer="return=minimal")
    assert minimal.status_code == 200
    created, searched = minimal.json()["entry"]
    assert "resource" not in created
    assert created["response"]["status"] == "201 Created"
    assert created["response"]["location"].startswith("Patient/")
    assert created["response"]["etag"] == 'W/"1"'
    assert searched["resource"]["type"] == "searchset"  # a read's result is its content

    with_outcome = send(client, entries[:1], prefer="return=OperationOutcome")
    [created] = with_outcome.json()["entry"]
    assert "resource" not in created
    assert created["response"]["outcome"]["resourceType"] == "OperationOutcome"

    representation = send(client, entries[:1], prefer="return=representation")
    assert representation.json()["entry"][0]["resource"]["resourceType"] == "Patient"


# -- PATCH entries -------------------------------------------------------------------------------


def test_patch_entries(client: TestClient) -> None:
    put(client, {**patient("p1"), "id": "p1", "active": False})
    put(client, {**patient("p2"), "id": "p2"})
    response = send(
        client,
        [
            entry(
                "PATCH",
                "Patient/p1",
                json_patch([{"op": "replace", "path": "/active", "value": True}]),
            ),
            entry(
                "PATCH",
                f"Patient?identifier={SYS}|p2",
                json_patch([{"op": "add", "path": "/gender", "value": "other"}]),
                ifMatch='W/"1"',
            ),
        ],
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"] == "200 OK"
    assert first["response"]["etag"] == 'W/"2"'
    assert client.get("/fhir/Patient/p1").json()["active"] is True
    assert second["response"]["location"] == "Patient/p2/_history/2"
    assert client.get("/fhir/Patient/p2").json()["gender"] == "other"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(
            json_patch([{"op": "test", "path": "/active", "value": True}]), 422, id="test-op-fails"
        ),
        pytest.param(
            json_patch([{"op": "add", "path": "/gender", "value": "robot"}]),
            400,
            id="invalid-result",
        ),
        pytest.param(patient("not-a-binary"), 400, id="not-a-binary"),
        pytest.param({**json_patch([]), "data": "!!!"}, 400, id="not-base64"),
    ],
)
def test_failing_patch_entry_rolls_back(
    client: TestClient, body: dict[str, Any], status: int
) -> None:
    put(client, {**patient("p1"), "id": "p1", "active": False})
    before = state(client)
    response = send(
        client,
        [entry("POST", "Patient", patient("with-patch")), entry("PATCH", "Patient/p1", body)],
    )
    assert response.status_code == status, response.text
    assert "Bundle.entry[1]" in outcome_of(response)["issue"][0]["diagnostics"]
    assert state(client) == before


# -- batch ---------------------------------------------------------------------------------------


def test_batch_entries_succeed_or_fail_alone(client: TestClient) -> None:
    put(client, {**patient("b1"), "id": "b1"})
    response = send(
        client,
        [
            entry("POST", "Patient", patient("ok")),
            entry("POST", "Patient", patient("bad", gender="robot")),
            entry("GET", "Patient/missing"),
            entry(
                "PUT", "Patient/b1", {**patient("b1"), "id": "b1", "active": True}, ifMatch='W/"9"'
            ),
            entry("GET", "Unicorn/1"),
            entry("PUT", "Patient/b1", {**patient("b1"), "id": "b1", "active": False}),
            entry("POST", "Patient", patient("bad", active="yes")),
        ],
        kind="batch",
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "batch-response"
    ok, invalid, missing, conflict, unknown, updated, wrong_type = bundle["entry"]
    assert ok["response"]["status"] == "201 Created"
    assert (
        client.get(f"/fhir/{ok['response']['location'].rsplit('/_history', 1)[0]}").status_code
        == 200
    )
    expected = [
        (invalid, "400", "Patient.gender"),
        (missing, "404", None),
        (conflict, "412", None),
        (unknown, "4", None),
        (wrong_type, "400", "Patient.active"),
    ]
    for failed, status, expression in expected:
        assert failed["response"]["status"].startswith(status), failed
        outcome = failed["response"]["outcome"]
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["severity"] == "error"
        if expression:
            assert outcome["issue"][0]["expression"] == [expression]
        assert "resource" not in failed
    assert updated["response"]["status"] == "200 OK"
    assert client.get("/fhir/Patient/b1").json()["meta"]["versionId"] == "2"
    assert total(client, "/fhir/Patient", identifier=f"{SYS}|bad") == 0


# -- invalid Bundles -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        pytest.param(
            {"resourceType": "Bundle", "type": "collection", "entry": []},
            "Bundle.type",
            id="collection",
        ),
        pytest.param(
            {"resourceType": "Bundle", "type": "searchset"}, "Bundle.type", id="searchset"
        ),
        pytest.param({"resourceType": "Bundle"}, None, id="no-type"),
        pytest.param({"resourceType": "Patient"}, None, id="not-a-bundle"),
        pytest.param([], None, id="not-an-object"),
        pytest.param(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": patient("x")}],
            },
            "Bundle.entry[0].request",
            id="transaction-without-request",
        ),
        pytest.param(
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [entry("GET", "Patient"), {"resource": patient("x")}],
            },
            "Bundle.entry[1].request",
            id="batch-without-request",
        ),
        pytest.param(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [entry("POST", "Unicorn", {"resourceType": "Patient"})],
            },
            "Bundle.entry[0].request.url",
            id="unknown-type-in-url",
        ),
        pytest.param(
            {"resourceType": "Bundle", "type": "transaction", "entry": [entry("FETCH", "Patient")]},
            "Bundle.entry[0].request.method",
            id="unknown-method",
        ),
        pytest.param(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    entry("POST", "Patient", patient("a"), PATIENT_URN),
                    entry("POST", "Patient", patient("b"), PATIENT_URN),
                ],
            },
            None,
            id="duplicate-fullUrl",
        ),
        pytest.param(
            {"resourceType": "Bundle", "type": "transaction", "entry": "many"},
            "Bundle.entry",
            id="entry-not-a-list",
        ),
    ],
)
def test_invalid_bundle_is_a_400(client: TestClient, body: Any, expression: str | None) -> None:
    before = state(client)
    response = client.post("/fhir", json=body)
    assert response.status_code == 400, response.text
    issues = outcome_of(response)["issue"]
    assert issues[0]["severity"] == "error"
    if expression:
        assert expression in issues[0].get("expression", []), issues
    assert state(client) == before


def test_empty_transaction_answers_an_empty_response(client: TestClient) -> None:
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction"})
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["type"] == "transaction-response"
    assert bundle.get("entry", []) == []


def test_unresolvable_urn_reference_fails_the_transaction(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "ImagingStudy",
                    "status": "available",
                    "subject": {"reference": "urn:uuid:0f6b0a3e-0000-4000-8000-000000000000"},
                },
                "request": {"method": "POST", "url": "ImagingStudy"},
            }
        ],
    }
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 400
    assert "matches no fullUrl" in response.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/ImagingStudy").json()["total"] == 0
