"""Nominative access (issue: IUA bearer tokens, the policy seam, the BALP audit trail).

Bad tokens, the role x interaction matrix, organisation boundaries, patient tokens, and the
AuditEvent each request leaves behind, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from jose import jwt

from app.auth.keys import DEV_KID, dev_private_pem
from app.config import Settings
from app.fhir.naming import ipp_system
from tests.server import running_servers

Token = Callable[..., dict[str, str]]
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SUBJECT = "https://fhir.rix.example/sid/subject"


def _patient(site: str, ipp: str, family: str = "Martin") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": ipp_system(site), "value": ipp}],
        "name": [{"family": family, "given": ["Alice"]}],
    }


def _study(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": f"Patient/{patient_id}"},
        "started": "2024-03-01T10:00:00Z",
    }


def _create(client: TestClient, resource: dict[str, Any], headers: dict[str, str]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _audit(client: TestClient, token: Token, **params: str) -> list[dict[str, Any]]:
    response = client.get("/fhir/AuditEvent", params=params, headers=token("dpo"))
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


# -- authentication ---------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forged(settings: Settings, case: str) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": f"intruder-{case}",
        "exp": now + 600,
        "nbf": now,
        "extensions": {"ihe_iua": {"subject_name": "X", "subject_role": "admin"}},
        "scope": "system/*.cruds",
    }
    pem = dev_private_pem(settings.data_dir).decode()
    if case == "expired":
        claims.update(exp=now - 3600, nbf=now - 7200)
    elif case == "not-yet-valid":
        claims.update(nbf=now + 3600, exp=now + 7200)
    elif case == "wrong-aud":
        claims["aud"] = "another-service"
    elif case == "wrong-iss":
        claims["iss"] = "https://issuer.invalid"
    elif case == "missing-claims":
        claims["extensions"] = {}
    elif case == "alg-none":
        return f"{_b64({'alg': 'none'})}.{_b64(claims)}."
    elif case == "tampered":
        header, _, signature = jwt.encode(claims, pem, "RS256", {"kid": DEV_KID}).split(".")
        claims["sub"] = "someone-else"
        return f"{header}.{_b64(claims)}.{signature}"
    kid = "unknown" if case == "unknown-kid" else DEV_KID
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})


BAD_TOKENS = [
    "expired",
    "not-yet-valid",
    "wrong-aud",
    "wrong-iss",
    "unknown-kid",
    "alg-none",
    "tampered",
    "missing-claims",
]


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_bad_tokens_get_401_and_are_audited(
    client: TestClient, settings: Settings, token: Token, case: str
) -> None:
    pid = _create(client, _patient("423", f"P-{case}"), token("admin"))
    response = client.get(
        f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {_forged(settings, case)}"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert pid not in response.text and "Martin" not in response.text
    assert case not in body["issue"][0]["diagnostics"]  # the reason is not detailed
    events = _audit(client, token, type=f"{DCM}|110114")
    assert any(e["outcome"] == "4" for e in events)


def test_missing_and_malformed_authorization_get_401(client: TestClient) -> None:
    for value in ("", "Basic Zm9vOmJhcg==", "Bearer x", "Bearer"):
        headers = {"Authorization": value}  # "" removes the client's default admin token
        response = client.get("/fhir/Patient", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["resourceType"] == "OperationOutcome"


def test_public_endpoints_need_no_token(client: TestClient) -> None:
    for path in ("/fhir/metadata", "/healthz", "/readyz", "/openapi.json", "/docs"):
        assert client.get(path, headers={"Authorization": ""}).status_code == 200, path
    jwks = client.get("/.well-known/jwks.json").json()
    assert jwks["keys"][0]["kid"] == DEV_KID


# -- roles and scopes -------------------------------------------------------------------------

MATRIX = [
    # role, method, path, allowed
    ("radiologist", "GET", "/fhir/ImagingStudy", True),
    ("radiologist", "POST", "/fhir/ImagingStudy", False),
    ("radiologist", "GET", "/fhir/AuditEvent", False),
    ("clinician", "GET", "/fhir/Patient", True),
    ("clinician", "DELETE", "/fhir/Patient/x", False),
    ("gp", "GET", "/fhir/DocumentReference", True),
    ("gp", "GET", "/fhir/Consent", False),
    ("registry", "GET", "/fhir/Consent", True),
    ("registry", "GET", "/fhir/ImagingStudy", False),
    ("dpo", "GET", "/fhir/AuditEvent", True),
    ("dpo", "POST", "/fhir/Patient", False),
    ("admin", "POST", "/fhir/Organization", True),
    ("admin", "POST", "/fhir/AuditEvent", False),
    ("site-system", "POST", "/fhir/Organization", False),
    ("site-system", "GET", "/fhir/AuditEvent", False),
    ("site-system", "GET", "/fhir/_history", False),
    ("dpo", "GET", "/fhir/_history", True),
]


@pytest.mark.parametrize(("role", "method", "path", "allowed"), MATRIX)
def test_role_matrix(
    client: TestClient, token: Token, role: str, method: str, path: str, allowed: bool
) -> None:
    body = None
    if method == "POST":
        body = {"resourceType": path.rsplit("/", 1)[-1]}
        if body["resourceType"] == "ImagingStudy":
            body["status"] = "available"
    response = client.request(method, path, json=body, headers=token(role, org="423"))
    if allowed:
        assert response.status_code in (200, 201), response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["issue"][0]["code"] == "forbidden"


def test_scopes_narrow_the_role(client: TestClient, token: Token) -> None:
    read_only = token("radiologist", scopes=["user/ImagingStudy.rs"])
    assert client.get("/fhir/ImagingStudy", headers=read_only).status_code == 200
    assert client.get("/fhir/Patient", headers=read_only).status_code == 403


def test_audit_events_are_immutable(client: TestClient, token: Token) -> None:
    client.get("/fhir/Patient", headers=token("radiologist"))
    event = _audit(client, token, subtype="search-type")[0]
    for method in ("PUT", "DELETE", "PATCH"):
        response = client.request(
            method, f"/fhir/AuditEvent/{event['id']}", json=event, headers=token("admin")
        )
        assert response.status_code == 405, method


# -- organisation boundaries --------------------------------------------------------------------


def test_site_system_writes_only_its_own_namespace(client: TestClient, token: Token) -> None:
    romorantin, tours = token("site-system", org="423"), token("site-system", org="401")
    own = _create(client, _patient("423", "R-1"), romorantin)
    other = client.post("/fhir/Patient", json=_patient("401", "T-1"), headers=romorantin)
    assert other.status_code == 403
    mixed = _patient("423", "R-2")
    mixed["identifier"].append({"system": ipp_system("401"), "value": "T-2"})
    assert client.post("/fhir/Patient", json=mixed, headers=romorantin).status_code == 403
    assert client.post("/fhir/ImagingStudy", json=_study(own), headers=tours).status_code == 403
    assert (
        client.post("/fhir/ImagingStudy", json=_study(own), headers=romorantin).status_code == 201
    )
    hijack = _patient("401", "T-3")
    hijack["id"] = own
    assert client.put(f"/fhir/Patient/{own}", json=hijack, headers=tours).status_code == 403
    assert client.delete(f"/fhir/Patient/{own}", headers=tours).status_code == 403


# -- patient tokens -----------------------------------------------------------------------------


def test_patient_sees_only_own_records_and_who_looked(client: TestClient, token: Token) -> None:
    admin = token("admin")
    alice = _create(client, _patient("423", "R-10", "Alice"), admin)
    bob = _create(client, _patient("423", "R-11", "Bob"), admin)
    alice_study = _create(client, _study(alice), admin)
    _create(client, _study(bob), admin)
    doctor = token("radiologist", sub="rpps-42", name="Dr Who", org="423")  # Alice's site
    assert client.get(f"/fhir/ImagingStudy/{alice_study}", headers=doctor).status_code == 200

    me = token("patient", patient=alice)
    assert client.get(f"/fhir/Patient/{alice}", headers=me).status_code == 200
    hidden = client.get(f"/fhir/Patient/{bob}", headers=me)
    missing = client.get("/fhir/Patient/does-not-exist", headers=me)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["issue"][0]["diagnostics"].replace(bob, "X") == missing.json()["issue"][0][
        "diagnostics"
    ].replace("does-not-exist", "X")
    studies = client.get("/fhir/ImagingStudy", headers=me).json()
    assert [e["resource"]["id"] for e in studies["entry"]] == [alice_study]
    assert studies["total"] == 1

    # "Who looked at my exams": one query with the patient's own token.
    log = client.get("/fhir/AuditEvent", params={"_sort": "-date"}, headers=me).json()
    who = {
        a["who"]["display"]
        for e in log["entry"]
        for a in e["resource"]["agent"]
        if a.get("requestor")
    }
    assert "Dr Who" in who
    for entry in log["entry"]:
        refs = [x.get("what", {}).get("reference") for x in entry["resource"].get("entity", [])]
        assert f"Patient/{alice}" in refs
        assert f"Patient/{bob}" not in refs


# -- the audit trail ----------------------------------------------------------------------------


def test_every_access_leaves_a_balp_event(client: TestClient, token: Token) -> None:
    admin = token("admin")
    pid = _create(client, _patient("401", "R-20"), admin)  # known at the doctor's site
    study = _create(client, _study(pid), admin)
    doctor = token("radiologist", sub="rpps-7", name="Dr Seven", org="401")
    headers = {**doctor, "X-Request-Id": "req-read-1"}
    assert client.get(f"/fhir/ImagingStudy/{study}", headers=headers).status_code == 200
    assert (
        client.get(
            "/fhir/ImagingStudy", params={"patient": f"Patient/{pid}"}, headers=doctor
        ).status_code
        == 200
    )
    assert client.get("/fhir/ImagingStudy/nope", headers=doctor).status_code == 404

    events = _audit(client, token, patient=f"Patient/{pid}")
    by_subtype = {e["subtype"][0]["code"]: e for e in events if e.get("subtype")}
    read = by_subtype["read"]
    assert read["action"] == "R" and read["outcome"] == "0"
    user = next(a for a in read["agent"] if a.get("requestor"))
    assert user["who"]["identifier"]["value"] == "rpps-7"
    assert user["who"]["display"] == "Dr Seven"
    assert user["role"][0]["coding"][0]["code"] == "radiologist"
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    assert any(a["who"].get("identifier", {}).get("value") == "401" for a in read["agent"])
    entities = {x.get("what", {}).get("reference") for x in read["entity"]}
    assert f"Patient/{pid}" in entities
    assert any(r and r.startswith(f"ImagingStudy/{study}") for r in entities)
    assert any(
        x.get("what", {}).get("identifier", {}).get("value") == "req-read-1" for x in read["entity"]
    )
    query = by_subtype["search-type"]
    assert query["action"] == "E"
    assert any(x["role"]["code"] == "24" and x.get("query") for x in query["entity"] if "role" in x)
    assert "create" in by_subtype  # the admin's writes, same patient
    failed = _audit(client, token, outcome="4", **{"agent:identifier": f"{SUBJECT}|rpps-7"})
    assert any("ImagingStudy/nope" in json.dumps(e) for e in failed)


def test_refusals_are_audited(client: TestClient, token: Token) -> None:
    response = client.get("/fhir/AuditEvent", headers=token("radiologist", sub="curious"))
    assert response.status_code == 403
    events = _audit(client, token, outcome="4")
    assert any("curious" in json.dumps(e) and "403" in e.get("outcomeDesc", "") for e in events)


def test_iti20_site_systems_may_submit_audit_events(client: TestClient, token: Token) -> None:
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110110", "display": "Patient Record"},
        "action": "R",
        "recorded": "2024-05-01T10:00:00Z",
        "outcome": "0",
        "agent": [{"who": {"display": "PACS user"}, "requestor": True}],
        "source": {
            "site": "423",
            "observer": {"identifier": {"value": "csrom41200"}, "display": "PACS Romorantin"},
        },
    }
    created = client.post("/fhir/AuditEvent", json=event, headers=token("site-system", org="423"))
    assert created.status_code == 201
    assert (
        client.post(
            "/fhir/AuditEvent",
            json={**event, "action": "X"},
            headers=token("site-system", org="423"),
        ).status_code
        == 400
    )
    assert (
        client.post("/fhir/AuditEvent", json=event, headers=token("radiologist")).status_code == 403
    )
    found = _audit(client, token, **{"source:identifier": "csrom41200"})
    assert [e["id"] for e in found] == [created.json()["id"]]
    assert _audit(client, token, site="423")[0]["id"] == created.json()["id"]


def test_iti81_search_parameters(client: TestClient, token: Token) -> None:
    client.get("/fhir/Patient", headers=token("clinician", sub="dr-a"))
    day = time.strftime("%Y-%m-%d", time.gmtime())
    mine = {"agent:identifier": f"{SUBJECT}|dr-a"}
    assert _audit(client, token, date=f"ge{day}", **mine)
    assert not _audit(client, token, date="lt2000-01-01", **mine)
    assert _audit(client, token, type="http://terminology.hl7.org/CodeSystem/audit-event-type|rest")
    assert _audit(client, token, **{"agent-name": "test clin"})


def test_a_transaction_is_audited_per_patient_and_as_a_whole(
    client: TestClient, token: Token
) -> None:
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}",
            "resource": _patient("423", f"R-tx-{i}"),
            "request": {"method": "POST", "url": "Patient"},
        }
        for i in range(5)
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    headers = {**token("site-system", org="423", sub="ris-423"), "X-Request-Id": "tx-1"}
    assert client.post("/fhir", json=bundle, headers=headers).status_code == 200
    events = [
        e
        for e in _audit(client, token, **{"agent:identifier": f"{SUBJECT}|ris-423"})
        if e.get("subtype", [{}])[0].get("code") == "create"
    ]

    # one write event per patient (BALP "with Patient"), plus one naming every resource
    def refs(event: dict[str, Any], role: str) -> list[str]:
        return [
            x["what"]["reference"] for x in event["entity"] if x.get("role", {}).get("code") == role
        ]

    per_patient = [e for e in events if refs(e, "1")]
    assert len(per_patient) == 5 and all(len(refs(e, "1")) == 1 for e in per_patient)
    assert all(len(refs(e, "4")) == 1 for e in per_patient)
    (overall,) = [e for e in events if not refs(e, "1")]
    assert len(refs(overall, "4")) == 5


INTERACTIONS: list[tuple[str, str, str, Any, dict[str, str]]] = [
    # name (AuditEvent subtype), method, path (with {pid}/{sid}), body, extra headers
    ("read", "GET", "/fhir/ImagingStudy/{sid}", None, {}),
    ("vread", "GET", "/fhir/ImagingStudy/{sid}/_history/1", None, {}),
    ("history-instance", "GET", "/fhir/ImagingStudy/{sid}/_history", None, {}),
    ("search-type", "GET", "/fhir/ImagingStudy?patient=Patient/{pid}", None, {}),
    ("search-type", "POST", "/fhir/ImagingStudy/_search", "patient=Patient/{pid}", {}),
    ("update", "PUT", "/fhir/ImagingStudy/{sid}", "study", {}),
    ("patch", "PATCH", "/fhir/ImagingStudy/{sid}", "patch", {}),
    ("create", "POST", "/fhir/ImagingStudy", "new-study", {}),
    ("update", "PUT", "/fhir/ImagingStudy?identifier=urn:x|{pid}", "new-study", {}),
    ("delete", "DELETE", "/fhir/ImagingStudy/{sid}", None, {}),
]


@pytest.mark.parametrize(("subtype", "method", "path", "body", "extra"), INTERACTIONS)
def test_every_interaction_is_audited_with_person_and_patient(
    client: TestClient,
    token: Token,
    subtype: str,
    method: str,
    path: str,
    body: Any,
    extra: dict[str, str],
) -> None:
    site = token("site-system", org="423", sub="ris-423", name="RIS Romorantin")
    pid = _create(client, _patient("423", "R-audit"), site)
    study = _study(pid)
    sid = _create(client, study, site)
    url = path.format(pid=pid, sid=sid)
    headers = {**site, **extra, "X-Request-Id": f"rq-{subtype}-{method}"}
    kwargs: dict[str, Any] = {}
    if body == "study":
        kwargs["json"] = {**study, "id": sid, "description": "changed"}
    elif body == "new-study":
        kwargs["json"] = {**study, "identifier": [{"system": "urn:x", "value": pid}]}
    elif body == "patch":
        kwargs["content"] = json.dumps([{"op": "add", "path": "/description", "value": "p"}])
        headers["Content-Type"] = "application/json-patch+json"
    elif isinstance(body, str):
        kwargs["content"] = body.format(pid=pid)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    response = client.request(method, url, headers=headers, **kwargs)
    assert response.status_code < 300, response.text
    events = [
        e
        for e in _audit(client, token, patient=f"Patient/{pid}")
        if any(
            x.get("what", {}).get("identifier", {}).get("value") == f"rq-{subtype}-{method}"
            for x in e.get("entity", [])
        )
    ]
    assert len(events) == 1, events
    event = events[0]
    assert event["subtype"][0]["code"] == subtype
    assert event["outcome"] == "0"
    user = next(a for a in event["agent"] if a.get("requestor"))
    assert (user["who"]["identifier"]["value"], user["name"]) == ("ris-423", "RIS Romorantin")
    assert f"Patient/{pid}" in {x.get("what", {}).get("reference") for x in event["entity"]}


def test_transactions_and_batches_are_audited(client: TestClient, token: Token) -> None:
    site = token("site-system", org="423", sub="ris-423")
    pid = _create(client, _patient("423", "R-tx-audit"), site)
    for kind in ("transaction", "batch"):
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [
                {"resource": _study(pid), "request": {"method": "POST", "url": "ImagingStudy"}},
                {"request": {"method": "GET", "url": f"ImagingStudy?patient=Patient/{pid}"}},
            ],
        }
        headers = {**site, "X-Request-Id": f"rq-{kind}"}
        assert client.post("/fhir", json=bundle, headers=headers).status_code == 200
        events = [
            e
            for e in _audit(client, token, patient=f"Patient/{pid}")
            if f"rq-{kind}" in json.dumps(e)
        ]
        assert {e["subtype"][0]["code"] for e in events} == {"create", "search-type"}, kind


def test_bad_tokens_against_a_running_server(database_url: str, tmp_path: Path) -> None:
    """The same refusals from a real `rix serve` process, and its audit trail records them."""
    with running_servers(database_url, tmp_path / "server") as (server,):
        settings = Settings(env="test", data_dir=server.data_dir)
        with httpx.Client(base_url=server.fhir_base, timeout=30) as http:
            for case in BAD_TOKENS:
                response = http.get(
                    "/Patient", headers={"Authorization": f"Bearer {_forged(settings, case)}"}
                )
                assert response.status_code == 401, case
                assert response.json()["resourceType"] == "OperationOutcome"
            assert http.get("/Patient").status_code == 401
            good = http.get("/Patient", headers=server.headers("admin"))
            assert good.status_code == 200
            log = http.get(
                "/AuditEvent", params={"type": f"{DCM}|110114"}, headers=server.headers("dpo")
            )
            assert log.json()["total"] == len(BAD_TOKENS) + 1


def test_a_patient_never_sees_another_patient_in_the_access_log(
    client: TestClient, token: Token
) -> None:
    """A search returning several patients' data is audited once per patient (BALP), so the
    patient's "who looked at my exams" shows only their own records; the privacy officer
    still has the whole query."""
    admin = token("admin")
    alice = _create(client, _patient("423", "R-30", "Alice"), admin)
    bob = _create(client, _patient("423", "R-31", "Bob"), admin)
    alice_study, bob_study = (
        _create(client, _study(alice), admin),
        _create(client, _study(bob), admin),
    )
    doctor = {**token("radiologist", sub="dr-wide", org="423"), "X-Request-Id": "wide-search"}
    found = client.get("/fhir/ImagingStudy", params={"status": "available"}, headers=doctor)
    assert found.json()["total"] == 2

    mine = client.get("/fhir/AuditEvent", headers=token("patient", patient=alice)).json()
    seen = json.dumps(mine)
    assert "wide-search" in seen  # the access to Alice's data is there...
    assert bob not in seen and bob_study not in seen  # ...and nothing of Bob's
    assert alice_study in seen
    everything = [e for e in _audit(client, token) if "wide-search" in json.dumps(e)]
    patients = [
        {x["what"]["reference"] for x in e["entity"] if x.get("role", {}).get("code") == "1"}
        for e in everything
    ]
    assert sorted(map(sorted, patients)) == sorted([[], [f"Patient/{alice}"], [f"Patient/{bob}"]])
    query_event = next(
        e for e in everything if not any(x.get("role", {}).get("code") == "1" for x in e["entity"])
    )
    assert any(x.get("query") for x in query_event["entity"])
