"""Break-glass (`POST /fhir/Patient/$break-glass`): a clinician or radiologist with an emergency
purpose of use (ETREAT or BTG) declares, with a reason, an emergency on a patient outside their
care relationship. RIX writes a time-boxed grant (a `Task` the DPO reviews), and the holder (the
same token subject, still in an emergency purpose) then sees the patient's data: demographics,
studies, reports and their bytes, searches, `$priors`; exams an opposition covers only when the
opposition carries the emergency permit. Every use is audited (BALP AuthZconsent, with the
reason and the grant), and so is every item a patient's choice hides.

The scene is the care-relationship one (tests/test_care_relationship.py): Agathe LENOIR is `a1`
at CH Romorantin (site 423), which registered a study and its report (List, DocumentReference,
Binary); CHRU Tours (site 401) has its own patient `b1` and does NOT know Agathe, so a Tours
radiologist is outside her care relationship until he breaks the glass. Blois (site 411) knows
her under the same validated INS, so her person has two records.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.config import Settings
from app.policy.breakglass import read_grant
from app.policy.principal import Principal
from app.services.breakglass import grant_task
from tests.conftest import Token, other_app
from tests.identity.support import BLOIS, INS_TEST, ROMORANTIN, TOURS, feed_id, patient, study
from tests.mhd.support import binary
from tests.test_care_relationship import INS, LENOIR, REPORT, _agathe_items, _ids, _scene
from tests.test_consent_enforcement import _status, opposition, record

ACCESS_TASK = "https://fhir.rix.example/CodeSystem/access-task"
REVIEW_QUERY = {"code": f"{ACCESS_TASK}|break-glass", "status": "requested"}
SUBJECT_SYSTEM = "https://fhir.rix.example/sid/subject"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
REASON = "unconscious patient admitted to the emergency room, prior CT needed"
HOLDER = "dr-urgentiste"


# -- helpers (imported by the other break-glass, access-check and community tests) -------------


def glass_body(
    *,
    patient_id: str | None = None,
    identifier: tuple[str, str] | None = None,
    reason: str | None = REASON,
) -> dict[str, Any]:
    """The Parameters of `$break-glass`."""
    params: list[dict[str, Any]] = []
    if patient_id is not None:
        params.append({"name": "patient", "valueReference": {"reference": f"Patient/{patient_id}"}})
    if identifier is not None:
        system, value = identifier
        params.append({"name": "identifier", "valueIdentifier": {"system": system, "value": value}})
    if reason is not None:
        params.append({"name": "reason", "valueString": reason})
    return {"resourceType": "Parameters", "parameter": params}


def open_grant(
    client: TestClient, headers: dict[str, str], patient_id: str, reason: str = REASON
) -> dict[str, Any]:
    """Break the glass on a patient; the answer's parameters as {name: [values]}."""
    response = client.post(
        "/fhir/Patient/$break-glass",
        json=glass_body(patient_id=patient_id, reason=reason),
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return _params(response.json())


def _params(parameters: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parameters["parameter"]:
        value = next(v for k, v in p.items() if k.startswith("value"))
        out.setdefault(p["name"], []).append(value)
    return out


def grant_id(answer: dict[str, Any]) -> str:
    reference: str = answer["grant"][0]["reference"]
    assert reference.startswith("Task/")
    return reference.removeprefix("Task/")


def audit_events(client: TestClient, patient_id: str | None = None) -> list[dict[str, Any]]:
    """Every AuditEvent (about one patient, when given), read by the client's administrator."""
    params = {"_count": "500"}
    if patient_id is not None:
        params["patient"] = f"Patient/{patient_id}"
    response = client.get("/fhir/AuditEvent", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def authz_events(client: TestClient, patient_id: str) -> list[dict[str, Any]]:
    """The BALP AuthZconsent records (DCM 110113 Security Alert) about one patient."""
    return [
        e
        for e in audit_events(client, patient_id)
        if e["type"].get("system") == DCM and e["type"].get("code") == "110113"
    ]


def subtype(event: dict[str, Any]) -> str:
    return str(event["subtype"][0]["code"])


def entity_refs(event: dict[str, Any]) -> set[str]:
    return {
        e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})
    }


def agent_subjects(event: dict[str, Any]) -> set[str]:
    return {
        a["who"]["identifier"]["value"]
        for a in event.get("agent", [])
        if "identifier" in a.get("who", {})
        and a["who"]["identifier"].get("system") == SUBJECT_SYSTEM
    }


def query_of(event: dict[str, Any]) -> str | None:
    for e in event.get("entity", []):
        if "query" in e:
            return base64.b64decode(e["query"]).decode("utf-8")
    return None


def _review_items(client: TestClient, headers: dict[str, str]) -> set[str]:
    response = client.get("/fhir/Task", params=REVIEW_QUERY, headers=headers)
    return _ids(response)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def _break_glass_task(s: dict[str, str], subject: str, end: str) -> dict[str, Any]:
    """A Task that looks like a grant, as a client would forge it."""
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": ACCESS_TASK, "code": "break-glass"}]},
        "for": {"reference": f"Patient/{s['a1']}"},
        "requester": {"identifier": {"system": SUBJECT_SYSTEM, "value": subject}},
        "reasonCode": {"text": REASON},
        "restriction": {"period": {"start": "2020-01-01T00:00:00Z", "end": end}},
    }


# -- the grant opens the patient to its holder only ------------------------------------------------


def test_a_grant_opens_every_record_of_the_patient_to_its_holder_only(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    blois = feed_id(client, token, BLOIS, patient(BLOIS, "c9", **LENOIR, ins=INS, status="VALI"))
    blois_study = study(client, token, BLOIS, blois, "1.2.250.411.5")
    urgent = token("radiologist", sub=HOLDER, org=TOURS, purpose="ETREAT")
    for ref in _agathe_items(s):
        assert _status(client, ref, urgent) == 404, ref  # no care relationship, no grant yet
    assert _review_items(client, token("dpo")) == set()

    before = _now()
    response = client.post(
        "/fhir/Patient/$break-glass",
        json=glass_body(identifier=(INS_TEST, INS)),
        headers=urgent,
    )
    after = _now()
    assert response.status_code == 200, response.text
    answer = _params(response.json())
    task_id = grant_id(answer)
    # The records opened: every record of her person, the Blois one included.
    opened = {v["reference"] for v in answer["patient"]}
    assert opened == {f"Patient/{s['a1']}", f"Patient/{blois}"}
    expires = _instant(answer["expires"][0])
    assert before + timedelta(hours=4) - timedelta(seconds=2) <= expires
    assert expires <= after + timedelta(hours=4) + timedelta(seconds=2)

    # The grant is a Task the DPO reviews.
    dpo = token("dpo")
    task = client.get(f"/fhir/Task/{task_id}", headers=dpo).json()
    assert task["status"] == "requested"
    assert {"system": ACCESS_TASK, "code": "break-glass"}.items() <= task["code"]["coding"][
        0
    ].items()
    assert task["for"]["reference"] in opened
    assert task["requester"]["identifier"] == {"system": SUBJECT_SYSTEM, "value": HOLDER}
    assert task["reasonCode"]["text"] == REASON
    period = task["restriction"]["period"]
    assert _instant(period["end"]) - _instant(period["start"]) == timedelta(hours=4)
    assert _instant(period["end"]) == expires
    assert _review_items(client, dpo) == {f"Task/{task_id}"}

    # The holder, in an emergency purpose, now sees all of it.
    for ref in [*_agathe_items(s), f"Patient/{blois}", f"ImagingStudy/{blois_study}"]:
        assert _status(client, ref, urgent) == 200, ref
    document = client.get(f"/fhir/Binary/{s['binary']}", headers={**urgent, "Accept": "text/plain"})
    assert document.status_code == 200 and document.content == REPORT
    studies = client.get(
        "/fhir/ImagingStudy",
        params={"patient": f"Patient/{s['a1']}", "_revinclude": "DocumentReference:related"},
        headers=urgent,
    )
    # A search by one record finds the person's studies at every site.
    assert _ids(studies) == {f"ImagingStudy/{s['study']}", f"ImagingStudy/{blois_study}"}
    assert _ids(studies, "include") == {f"DocumentReference/{s['document']}"}
    by_ins = client.get("/fhir/Patient", params={"identifier": f"{INS_TEST}|{INS}"}, headers=urgent)
    assert _ids(by_ins) == {f"Patient/{s['a1']}", f"Patient/{blois}"}
    priors = client.get(f"/fhir/Patient/{s['a1']}/$priors", headers=urgent)
    assert _ids(priors) == {f"ImagingStudy/{s['study']}", f"ImagingStudy/{blois_study}"}
    # Tours' own patient is still there, and nobody else's appears.
    listed = client.get("/fhir/ImagingStudy", headers=urgent)
    assert _ids(listed) == {
        f"ImagingStudy/{s['tours_study']}",
        f"ImagingStudy/{s['study']}",
        f"ImagingStudy/{blois_study}",
    }

    # The same person without the emergency purpose, or someone else: no override.
    same_person_treat = token("radiologist", sub=HOLDER, org=TOURS, purpose="TREAT")
    colleague = token("radiologist", sub="another-radiologist", org=TOURS, purpose="ETREAT")
    same_person_btg = token("clinician", sub=HOLDER, org=TOURS, purpose="BTG")
    for ref in _agathe_items(s):
        assert _status(client, ref, same_person_treat) == 404, ref
        assert _status(client, ref, colleague) == 404, ref
    assert _status(client, f"ImagingStudy/{s['study']}", same_person_btg) == 200
    assert _ids(client.get("/fhir/ImagingStudy", headers=colleague)) == {
        f"ImagingStudy/{s['tours_study']}"
    }

    # Every use is audited: who, the grant, the reason, the items; a Role decision (no Consent).
    uses = [e for e in authz_events(client, s["a1"]) if subtype(e) == "AuthZ-Role"]
    assert uses, "break-glass uses must leave AuthZ records"
    for event in uses:
        assert event["outcome"] == "0"
        assert REASON in event["outcomeDesc"] and f"Task/{task_id}" in event["outcomeDesc"]
        assert entity_refs(event) & opened  # the grant's record of her person
        assert not [r for r in entity_refs(event) if r.startswith("Consent/")]
        assert HOLDER in agent_subjects(event)
        assert event["purposeOfEvent"][0]["coding"][0]["code"] in ("ETREAT", "BTG")
    described = " ".join(e["outcomeDesc"] for e in uses)
    for ref in _agathe_items(s)[:4]:  # a Binary is decided (and named) through its document
        assert ref in described, ref
    # The colleague's refusals and the holder's TREAT reads are no break-glass use.
    assert all(HOLDER in agent_subjects(e) for e in uses)
    assert not [e for e in uses if e["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"]
    # The grant itself is audited as the operation that wrote it.
    written = [
        e
        for e in audit_events(client, s["a1"])
        if f"Task/{task_id}/_history/1" in entity_refs(e) and HOLDER in agent_subjects(e)
    ]
    assert written and written[0]["outcome"] == "0"


def test_break_glass_asks_for_an_emergency_a_role_a_reason_and_one_patient(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)

    def glass(headers: dict[str, str], body: dict[str, Any]) -> int:
        return client.post("/fhir/Patient/$break-glass", json=body, headers=headers).status_code

    ok = glass_body(patient_id=s["a1"])
    for role in ("gp", "admin", "dpo", "registry", "identity-officer", "site-system"):
        headers = token(role, org=TOURS, purpose="ETREAT")
        assert glass(headers, ok) == 403, role
    assert glass(token("patient", patient=s["a1"], purpose="ETREAT"), ok) == 403
    for purpose in ("TREAT", "HPAYMT", "PUBHLTH"):
        assert glass(token("radiologist", org=TOURS, purpose=purpose), ok) == 403, purpose
        assert glass(token("clinician", org=TOURS, purpose=purpose), ok) == 403, purpose

    urgent = token("clinician", sub=HOLDER, org=TOURS, purpose="BTG")
    bad: list[tuple[dict[str, Any], int]] = [
        (glass_body(patient_id=s["a1"], reason=None), 400),
        (glass_body(patient_id=s["a1"], reason=""), 400),
        (glass_body(patient_id=s["a1"], reason="urgence!"), 400),  # 8 characters
        (glass_body(patient_id=s["a1"], reason="   a  b  c  d  "), 400),  # spaces do not count
        (glass_body(patient_id=s["a1"], reason="x" * 1001), 400),
        (glass_body(), 400),  # neither patient nor identifier
        (glass_body(patient_id=s["a1"], identifier=(INS_TEST, INS)), 400),  # both
        (glass_body(patient_id="no-such-patient"), 404),
        (glass_body(identifier=(INS_TEST, "1999999999999")), 404),
        (glass_body(identifier=(INS_TEST, "")), 400),
    ]
    for body, status in bad:
        assert glass(urgent, body) == status, body
    not_a_patient = glass_body(reason=REASON)
    not_a_patient["parameter"].append(
        {"name": "patient", "valueReference": {"reference": f"ImagingStudy/{s['study']}"}}
    )
    assert glass(urgent, not_a_patient) == 400
    unknown = glass_body(patient_id=s["a1"])
    unknown["parameter"].append({"name": "duration", "valueString": "72h"})
    assert glass(urgent, unknown) == 400
    # A deleted patient is unknown.
    gone = feed_id(client, token, BLOIS, patient(BLOIS, "gone", "PARTI", "Jean"))
    assert client.delete(f"/fhir/Patient/{gone}").status_code in (200, 204)
    assert glass(urgent, glass_body(patient_id=gone)) == 404

    # Nothing was granted by any of these.
    assert _review_items(client, token("dpo")) == set()
    assert _status(client, f"ImagingStudy/{s['study']}", urgent) == 404
    # The bounds themselves are accepted: 10 characters, and 1000.
    assert glass(urgent, glass_body(patient_id=s["a1"], reason="x" * 10)) == 200
    assert glass(urgent, glass_body(patient_id=s["a1"], reason="y" * 1000)) == 200
    assert len(_review_items(client, token("dpo"))) == 2
    assert _status(client, f"ImagingStudy/{s['study']}", urgent) == 200


# -- consent: the emergency permit, and the audit of hides ---------------------------------


def test_a_grant_passes_only_oppositions_carrying_the_emergency_permit(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    urgent = token("radiologist", sub=HOLDER, org=TOURS, purpose="ETREAT")
    task_id = grant_id(open_grant(client, urgent, s["a1"]))
    permit = record(client, token, opposition(s["a1"], emergency=True))
    exams = _agathe_items(s)[1:]
    for ref in _agathe_items(s):
        assert _status(client, ref, urgent) == 200, ref
    passed = [
        e
        for e in authz_events(client, s["a1"])
        if subtype(e) == "AuthZ-Consent" and e["outcome"] == "0"
    ]
    assert passed
    for event in passed:
        assert f"Consent/{permit}" in entity_refs(event)
        assert f"Patient/{s['a1']}" in entity_refs(event)
        assert REASON in event["outcomeDesc"] and f"Task/{task_id}" in event["outcomeDesc"]
    described = " ".join(e["outcomeDesc"] for e in passed)
    for ref in exams[:3]:  # ImagingStudy, DocumentReference, List (a Binary through its doc)
        assert ref in described, ref

    # A second opposition, without the permit: deny beats permit, even in an emergency.
    refusal = record(client, token, opposition(s["a1"], emergency=False))
    for ref in exams:
        assert _status(client, ref, urgent) == 404, ref
    assert (
        _ids(
            client.get(
                "/fhir/ImagingStudy", params={"patient": f"Patient/{s['a1']}"}, headers=urgent
            )
        )
        == set()
    )
    # Her demographics are no exam: the grant still opens them.
    assert _status(client, f"Patient/{s['a1']}", urgent) == 200
    hidden = [
        e
        for e in authz_events(client, s["a1"])
        if subtype(e) == "AuthZ-Consent" and e["outcome"] == "4"
    ]
    assert hidden
    for event in hidden:
        assert {f"Consent/{permit}", f"Consent/{refusal}", f"Patient/{s['a1']}"} <= entity_refs(
            event
        )
        assert event["type"]["code"] == "110113"
    assert f"ImagingStudy/{s['study']}" in " ".join(e["outcomeDesc"] for e in hidden)

    # A plain consent hide, outside any break-glass, is audited the same way.
    seen = {e["id"] for e in authz_events(client, s["a1"])}
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 404
    new = [e for e in authz_events(client, s["a1"]) if e["id"] not in seen]
    assert len(new) == 1, new
    assert "test-admin" in agent_subjects(new[0])
    assert new[0]["outcome"] == "4" and subtype(new[0]) == "AuthZ-Consent"
    assert f"Consent/{refusal}" in entity_refs(new[0])
    assert f"ImagingStudy/{s['study']}" in new[0]["outcomeDesc"]


# -- the DPO's review, the grant's end ------------------------------------------------------------


def test_the_dpo_closes_or_cancels_and_the_grant_expires_on_its_first_terms(
    settings: Settings, token: Token
) -> None:
    with other_app(settings, token, break_glass_hours=0.001) as client:  # 3.6 s
        s = _scene(client, token)
        dpo = token("dpo")
        urgent = token("clinician", sub=HOLDER, org=TOURS, purpose="ETREAT")
        study_ref = f"ImagingStudy/{s['study']}"

        # Closed (completed): reviewed, no longer listed, the grant runs to its end.
        closed = open_grant(client, urgent, s["a1"])
        closed_id = grant_id(closed)
        task = client.get(f"/fhir/Task/{closed_id}", headers=dpo).json()
        expires = _instant(closed["expires"][0])
        assert _instant(task["restriction"]["period"]["end"]) == expires
        # The DPO cannot widen the grant: its terms are not editable (422, nothing written).
        widened = {**task, "status": "completed"}
        widened["restriction"] = {"period": {**task["restriction"]["period"]}}
        widened["restriction"]["period"]["end"] = "2099-12-31T23:59:59Z"
        response = client.put(f"/fhir/Task/{closed_id}", json=widened, headers=dpo)
        assert response.status_code == 422, response.text
        assert "restriction" in response.text
        task["status"] = "completed"
        response = client.put(f"/fhir/Task/{closed_id}", json=task, headers=dpo)
        assert response.status_code == 200, response.text
        assert _review_items(client, dpo) == set()
        assert _status(client, study_ref, urgent) == 200
        wait = (expires - _now()).total_seconds() + 0.5
        time.sleep(max(wait, 0))
        assert _status(client, study_ref, urgent) == 404
        assert _status(client, f"Patient/{s['a1']}", urgent) == 404
        # Reopening the same Task (back to requested) does not revive it either.
        task = client.get(f"/fhir/Task/{closed_id}", headers=dpo).json()
        task["status"] = "requested"
        assert client.put(f"/fhir/Task/{closed_id}", json=task, headers=dpo).status_code == 200
        assert _status(client, study_ref, urgent) == 404

        # Cancelled: the grant ends at once.
        cancelled_id = grant_id(open_grant(client, urgent, s["a1"]))
        assert _status(client, study_ref, urgent) == 200
        task = client.get(f"/fhir/Task/{cancelled_id}", headers=dpo).json()
        task["status"] = "cancelled"
        assert client.put(f"/fhir/Task/{cancelled_id}", json=task, headers=dpo).status_code == 200
        assert _status(client, study_ref, urgent) == 404

    # RIX_BREAK_GLASS_HOURS sets the period.
    with other_app(settings, token, break_glass_hours=12) as client:
        answer = open_grant(client, token("clinician", org=TOURS, purpose="BTG"), s["a1"])
        task = client.get(f"/fhir/Task/{grant_id(answer)}", headers=token("dpo")).json()
        period = task["restriction"]["period"]
        assert _instant(period["end"]) - _instant(period["start"]) == timedelta(hours=12)


def test_a_grant_is_read_from_its_first_version_and_ends_with_its_period() -> None:
    """`read_grant` as a unit: the terms RIX wrote, the status the DPO sets, the clock."""
    holder = Principal(subject=HOLDER, name="Dr Urgence", role="clinician", purpose_of_use="ETREAT")
    now = datetime(2026, 3, 1, 12, 0, 0)
    first = {**grant_task(holder, "a1", REASON, now, 4.0), "id": "g1"}
    grant = read_grant(first, first, HOLDER, now + timedelta(hours=1))
    assert grant is not None
    assert (grant.task_id, grant.patient_id, grant.reason) == ("g1", "a1", REASON)
    assert grant.end == now + timedelta(hours=4)
    assert read_grant(first, first, HOLDER, now + timedelta(hours=3, minutes=59)) is not None
    assert read_grant(first, first, HOLDER, now + timedelta(hours=4)) is None
    assert read_grant(first, first, HOLDER, now + timedelta(days=1)) is None
    # The DPO's statuses: completed keeps the grant; cancelled (and the like) end it.
    assert read_grant(first, {**first, "status": "completed"}, HOLDER, now) is not None
    for ended in ("cancelled", "rejected", "failed", "entered-in-error"):
        assert read_grant(first, {**first, "status": ended}, HOLDER, now) is None, ended
    # A later version's period, patient or reason changes nothing.
    widened = {
        **first,
        "for": {"reference": "Patient/someone-else"},
        "restriction": {"period": {"start": "2026-03-01T12:00:00Z", "end": "2099-01-01T00:00:00Z"}},
    }
    assert read_grant(first, widened, HOLDER, now + timedelta(days=1)) is None
    still = read_grant(first, widened, HOLDER, now)
    assert still is not None and still.patient_id == "a1" and still.end == grant.end
    # A first version that is no grant (no code, no patient, no end) grants nothing.
    assert read_grant({**first, "code": {"text": "other"}}, first, HOLDER, now) is None
    assert read_grant({**first, "for": {"reference": "Group/g"}}, first, HOLDER, now) is None
    assert read_grant({**first, "restriction": {}}, first, HOLDER, now) is None
    # The holder is the first version's requester: anyone else holds nothing.
    assert read_grant(first, first, "someone-else", now) is None


def test_nobody_writes_a_grant_through_the_api(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    urgent = token("clinician", sub=HOLDER, org=TOURS, purpose="ETREAT")
    forged = _break_glass_task(s, HOLDER, "2099-01-01T00:00:00Z")
    writers = {
        "admin": token("admin"),
        "dpo": token("dpo"),
        "site-system": token("site-system", org=TOURS),
        "registry": token("registry"),
    }
    for role, headers in writers.items():
        assert client.post("/fhir/Task", json=forged, headers=headers).status_code == 403, role
        put = client.put(
            "/fhir/Task/forged-grant", json={**forged, "id": "forged-grant"}, headers=headers
        )
        assert put.status_code == 403, role
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f0d1c9e-0000-4000-8000-00000000b001",
                "resource": forged,
                "request": {"method": "POST", "url": "Task"},
            }
        ],
    }
    assert client.post("/fhir", json=transaction).status_code == 403
    conditional = client.put("/fhir/Task", params={"identifier": "urn:example|forged"}, json=forged)
    assert conditional.status_code == 403
    assert _status(client, f"ImagingStudy/{s['study']}", urgent) == 404
    assert _review_items(client, token("dpo")) == set()

    # A plain Task turned into a "grant" by a later edit is no grant: terms come from version 1.
    plain = {**forged, "code": {"text": "follow-up"}}
    created = client.post("/fhir/Task", json=plain)
    assert created.status_code == 201, created.text
    plain_id = created.json()["id"]
    edited = {**forged, "id": plain_id}
    client.put(f"/fhir/Task/{plain_id}", json=edited, headers=token("dpo"))
    assert _status(client, f"ImagingStudy/{s['study']}", urgent) == 404
    assert _status(client, f"Patient/{s['a1']}", urgent) == 404

    # An existing grant is the DPO's (or an admin's) to edit, not the site's nor the registry's.
    real = grant_id(open_grant(client, urgent, s["a1"]))
    task = client.get(f"/fhir/Task/{real}", headers=token("dpo")).json()
    for role in ("site-system", "registry"):
        edit = {**task, "status": "completed"}
        response = client.put(f"/fhir/Task/{real}", json=edit, headers=writers[role])
        assert response.status_code == 403, role
    # Nor handed to someone else: the holder is a term of the grant (422, nothing written).
    task["requester"] = {"identifier": {"system": SUBJECT_SYSTEM, "value": "someone-else"}}
    assert client.put(f"/fhir/Task/{real}", json=task, headers=token("dpo")).status_code == 422
    other = token("clinician", sub="someone-else", org=TOURS, purpose="ETREAT")
    assert _status(client, f"ImagingStudy/{s['study']}", other) == 404
    assert _status(client, f"ImagingStudy/{s['study']}", urgent) == 200


# -- one transaction: a Consent, then data it covers (the request's cached facts) ----------------


def _entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _study_resource(patient_id: str, uid: str) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _counts(client: TestClient) -> dict[str, int]:
    return {
        t: client.get(f"/fhir/{t}", params={"_summary": "count"}).json()["total"]
        for t in ("ImagingStudy", "Consent", "DocumentReference", "Binary")
    }


def test_a_consent_then_a_study_it_covers_in_one_transaction_is_refused(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    t7 = feed_id(client, token, TOURS, patient(TOURS, "t7", **LENOIR, ins=INS, status="VALI"))
    tours = token("site-system", org=TOURS)
    before = _counts(client)
    # Tours' system: a study of its own patient first (the request learns "no Consent at all"),
    # then Agathe's opposition, then a study of her Tours record.
    bundle = _transaction(
        _entry(_study_resource(s["b1"], "1.2.250.401.20")),
        _entry(opposition(t7, emergency=False)),
        _entry(_study_resource(t7, "1.2.250.401.21")),
    )
    response = client.post("/fhir", json=bundle, headers=tours)
    assert response.status_code == 422, response.text
    assert "keep the exam locally" in response.text
    assert _counts(client) == before

    # Some Consent already exists (so the request reads her decisions before the new one).
    record(client, token, opposition(s["b1"], emergency=False))
    before = _counts(client)
    for writer in (tours, token("admin")):
        bundle = _transaction(
            _entry(_study_resource(t7, "1.2.250.401.22")),
            _entry(opposition(t7, emergency=True)),
            _entry(_study_resource(t7, "1.2.250.401.23")),
        )
        response = client.post("/fhir", json=bundle, headers=writer)
        assert response.status_code == 422, response.text
        assert _counts(client) == before
    # Without the opposition the same study goes in (the refusal was the Consent's).
    ok = client.post(
        "/fhir", json=_transaction(_entry(_study_resource(t7, "1.2.250.401.23"))), headers=tours
    )
    assert ok.status_code == 200, ok.text


def test_a_binary_is_written_with_the_rights_of_a_document_later_in_the_transaction(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    t7 = feed_id(client, token, TOURS, patient(TOURS, "t7", **LENOIR, ins=INS, status="VALI"))
    doc_url = "urn:uuid:6f0d1c9e-0000-4000-8000-00000000d001"
    bytes_url = "urn:uuid:6f0d1c9e-0000-4000-8000-00000000d002"

    def bundle(patient_id: str) -> dict[str, Any]:
        bound = {**binary(b"CR Tours"), "securityContext": {"reference": doc_url}}
        document = {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": f"Patient/{patient_id}"},
            "content": [{"attachment": {"contentType": "text/plain", "url": bytes_url}}],
        }
        return _transaction(_entry(bound, bytes_url), _entry(document, doc_url))

    tours = token("site-system", org=TOURS)
    before = _counts(client)
    # Bytes bound to a document about Romorantin's record of Agathe: not Tours' to write.
    refused = client.post("/fhir", json=bundle(s["a1"]), headers=tours)
    assert refused.status_code == 403, refused.text
    assert _counts(client) == before
    # About Tours' own record: stored, and read with the document's rights.
    response = client.post("/fhir", json=bundle(t7), headers=tours)
    assert response.status_code == 200, response.text
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    bin_id = next(x for x in locations if x.startswith("Binary/")).split("/")[1]
    doc_id = next(x for x in locations if x.startswith("DocumentReference/")).split("/")[1]
    stored = client.get(f"/fhir/Binary/{bin_id}").json()
    assert stored["securityContext"] == {"reference": f"DocumentReference/{doc_id}"}
    assert _status(client, f"Binary/{bin_id}", token("radiologist", org=TOURS)) == 200
    assert _status(client, f"Binary/{bin_id}", token("radiologist", org=BLOIS)) == 404
    assert _status(client, f"Binary/{bin_id}", token("radiologist", org=ROMORANTIN)) == 200

    # An opposition recorded in the same transaction as the document and its bytes: refused.
    before = _counts(client)
    opposed = bundle(t7)
    opposed["entry"].insert(0, _entry(opposition(t7, emergency=False)))
    response = client.post("/fhir", json=opposed, headers=tours)
    assert response.status_code == 422, response.text
    assert _counts(client) == before
