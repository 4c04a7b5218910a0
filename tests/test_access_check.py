"""`POST /fhir/$access-check`: the policy seam's own answer to "may this person see these
items?". A caller asks about itself and learns no more than a read would tell it (an item it may
not see and one that does not exist are both `allowed = false`, without a reason); the DPO and
administrators may describe someone else (`role`, `organization`, `rpps`, `purposeOfUse`,
`subject`) and are told why. The check is audited as an operation naming the items; decisions
about someone else are the check's answer, not that person's accesses.

The scene is the care-relationship one (tests/test_care_relationship.py): Agathe LENOIR is `a1`
at CH Romorantin (site 423) with a study and its report; CHRU Tours (site 401) has its own
patient `b1` and study, and does not know Agathe.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Token
from tests.identity.support import BLOIS, ROMORANTIN, TOURS
from tests.test_break_glass import (
    agent_subjects,
    audit_events,
    authz_events,
    entity_refs,
    open_grant,
    query_of,
)
from tests.test_care_relationship import _scene
from tests.test_consent_enforcement import opposition, record

RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
PRESCRIBER = "10002000001"


def check_body(items: list[str], **about: str) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "item", "valueReference": {"reference": ref}} for ref in items
    ]
    for name, value in about.items():
        key = "valueString" if name in ("subject", "rpps") else "valueCode"
        params.append({"name": name, key: value})
    return {"resourceType": "Parameters", "parameter": params}


def check(
    client: TestClient, headers: dict[str, str], items: list[str], **about: str
) -> list[dict[str, Any]]:
    """The results, in order, as {item, allowed[, reason]}."""
    response = client.post("/fhir/$access-check", json=check_body(items, **about), headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Parameters"
    out = []
    for result in body["parameter"]:
        assert result["name"] == "result"
        parts = {p["name"]: p for p in result["part"]}
        row: dict[str, Any] = {
            "item": parts["item"]["valueReference"]["reference"],
            "allowed": parts["allowed"]["valueBoolean"],
        }
        if "reason" in parts:
            row["reason"] = parts["reason"]["valueString"]
        out.append(row)
    return out


def _allowed(rows: list[dict[str, Any]]) -> dict[str, bool]:
    return {r["item"]: r["allowed"] for r in rows}


def _prescribed_study(client: TestClient, token: Token, patient_id: str) -> str:
    response = client.post(
        "/fhir/ImagingStudy",
        json={
            "resourceType": "ImagingStudy",
            "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.250.423.51"}],
            "subject": {"reference": f"Patient/{patient_id}"},
            "referrer": {"identifier": {"system": RPPS_SYSTEM, "value": f"8{PRESCRIBER}"}},
        },
        headers=token("site-system", org=ROMORANTIN),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_caller_asking_about_itself_learns_what_a_read_would(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    items = [
        f"ImagingStudy/{s['tours_study']}",
        f"ImagingStudy/{s['study']}",
        "ImagingStudy/no-such-study",
        f"Patient/{s['a1']}",
        f"DocumentReference/{s['document']}",
        f"Binary/{s['binary']}",
        f"Patient/{s['b1']}",
        "Task/no-such-task",
    ]
    tours = token("radiologist", org=TOURS)
    rows = check(client, tours, items)
    assert [r["item"] for r in rows] == items  # one result per item, in order
    assert all("reason" not in r for r in rows)  # no reason for a caller about itself
    assert _allowed(rows) == {
        f"ImagingStudy/{s['tours_study']}": True,
        f"ImagingStudy/{s['study']}": False,
        "ImagingStudy/no-such-study": False,
        f"Patient/{s['a1']}": False,
        f"DocumentReference/{s['document']}": False,
        f"Binary/{s['binary']}": False,
        f"Patient/{s['b1']}": True,
        "Task/no-such-task": False,
    }
    # Every answer agrees with a read.
    for ref, allowed in _allowed(rows).items():
        status = client.get(f"/fhir/{ref}", headers=tours).status_code
        assert (status == 200) == allowed, ref
    # Romorantin sees Agathe's; a site system, the same way.
    romorantin = _allowed(check(client, token("clinician", org=ROMORANTIN), items[:6]))
    assert romorantin[f"ImagingStudy/{s['study']}"] is True
    assert romorantin[f"Binary/{s['binary']}"] is True
    assert romorantin[f"ImagingStudy/{s['tours_study']}"] is False
    system = _allowed(check(client, token("site-system", org=TOURS), items[:2]))
    assert system == {f"ImagingStudy/{s['tours_study']}": True, f"ImagingStudy/{s['study']}": True}

    # A non-admin may not describe anyone else, not even itself.
    for name, value in (
        ("role", "admin"),
        ("organization", ROMORANTIN),
        ("rpps", PRESCRIBER),
        ("purposeOfUse", "BTG"),
        ("subject", "someone-else"),
    ):
        response = client.post(
            "/fhir/$access-check", json=check_body(items[:1], **{name: value}), headers=tours
        )
        assert response.status_code == 403, name
    # Roles without the operation.
    for role in ("identity-officer",):
        response = client.post(
            "/fhir/$access-check", json=check_body(items[:1]), headers=token(role)
        )
        assert response.status_code == 403, role
    mine = token("patient", patient=s["a1"])
    response = client.post("/fhir/$access-check", json=check_body(items[:1]), headers=mine)
    assert response.status_code == 403


def test_bad_requests_are_refused(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    study = f"ImagingStudy/{s['study']}"
    bad: list[dict[str, Any]] = [
        check_body([]),
        check_body([study] * 101),
        check_body(["ImagingStudy"]),
        check_body(["NoSuchType/1"]),
        check_body(["http://elsewhere.example/fhir/ImagingStudy/1"]),
        check_body([study], role="surgeon"),
        check_body([study], role="radiologist", purposeOfUse="CURIOSITY"),
        check_body([study], role=""),
        {"resourceType": "Parameters", "parameter": [{"name": "items", "valueString": study}]},
        {"resourceType": "Patient"},
    ]
    for body in bad:
        response = client.post("/fhir/$access-check", json=body)
        assert response.status_code == 400, (body, response.text)
    rows = check(client, token("admin"), [study] * 100)
    assert len(rows) == 100


def test_the_dpo_checks_someone_else_and_is_told_why(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    prescribed = _prescribed_study(client, token, s["a1"])
    items = [
        f"ImagingStudy/{s['study']}",
        f"ImagingStudy/{s['tours_study']}",
        f"ImagingStudy/{prescribed}",
        "ImagingStudy/no-such-study",
    ]
    dpo = token("dpo", sub="the-dpo")

    def reasons(**about: str) -> dict[str, tuple[bool, str]]:
        return {r["item"]: (r["allowed"], r["reason"]) for r in check(client, dpo, items, **about)}

    tours = reasons(role="radiologist", organization=TOURS)
    assert tours[items[0]][0] is False and "care relationship" in tours[items[0]][1]
    assert tours[items[1]] == (True, "allowed")
    assert tours[items[2]][0] is False
    assert tours[items[3]] == (False, "not found")
    romorantin = reasons(role="clinician", organization=ROMORANTIN)
    assert [romorantin[i][0] for i in items] == [True, False, True, False]
    prescriber = reasons(role="gp", organization=BLOIS, rpps=PRESCRIBER)
    assert [prescriber[i][0] for i in items] == [False, False, True, False]
    registry = reasons(role="registry")
    assert registry[items[0]][0] is False and "may not read ImagingStudy" in registry[items[0]][1]
    # A break-glass holder, by token subject and purpose of use.
    holder = token("clinician", sub="dr-holder", org=BLOIS, purpose="ETREAT")
    open_grant(client, holder, s["a1"])
    glass = reasons(role="clinician", organization=BLOIS, subject="dr-holder", purposeOfUse="BTG")
    assert glass[items[0]][0] is True and "break-glass" in glass[items[0]][1]
    assert glass[items[1]][0] is False
    treat = reasons(role="clinician", organization=BLOIS, subject="dr-holder")
    assert treat[items[0]][0] is False  # TREAT by default: no override
    other = reasons(role="clinician", organization=BLOIS, subject="dr-other", purposeOfUse="BTG")
    assert other[items[0]][0] is False

    # A patient's opposition, with the reason for a role outside the care relationship.
    consent_id = record(client, token, opposition(s["a1"], emergency=False))
    admin = reasons(role="admin")
    assert admin[items[0]][0] is False and "opposed" in admin[items[0]][1]
    assert reasons(role="radiologist", organization=ROMORANTIN)[items[0]] == (True, "allowed")
    glass = reasons(role="clinician", organization=BLOIS, subject="dr-holder", purposeOfUse="BTG")
    assert glass[items[0]][0] is False and "emergency" in glass[items[0]][1]
    # The administrators ask the same way, about themselves too.
    about_me = check(client, token("admin"), items[:1])
    assert about_me[0]["allowed"] is False and "opposed" in about_me[0]["reason"]

    # None of the DPO's checks about someone else is recorded as that person's access.
    events = audit_events(client)
    for who in ("dr-holder", "dr-other"):
        assert not [
            e for e in events if who in agent_subjects(e) and e["type"]["code"] == "110113"
        ], who
    decided = [
        e for e in authz_events(client, s["a1"]) if f"Consent/{consent_id}" in entity_refs(e)
    ]
    assert all("the-dpo" not in agent_subjects(e) for e in decided)
    # The administrator's check about itself is its own access: its hide is recorded.
    assert [e for e in decided if "test-admin" in agent_subjects(e) and e["outcome"] == "4"]
    # Every check is audited as an operation of the caller, naming the items and the question.
    checks = [
        e
        for e in events
        if "the-dpo" in agent_subjects(e) and (query_of(e) or "").startswith("$access-check?")
    ]
    assert len(checks) >= 9
    asked = [query_of(e) or "" for e in checks]
    assert any("subject=dr-holder" in q and "purposeOfUse=BTG" in q for q in asked)
    assert all(f"item={items[0]}" in q for q in asked)
    named = set().union(*(entity_refs(e) for e in checks))
    assert {items[0], items[1], items[2]} <= {r.split("/_history")[0] for r in named}
