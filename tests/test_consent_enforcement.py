"""Patient choice enforced everywhere: an active opposition (or exam opposition) hides the
exams it covers from everyone outside the producing site (reads, searches, includes, history,
$priors, the report's bytes), for every role but the patient themself; the emergency permit
lets a break-glass use (ETREAT / BTG with a grant) through; a withdrawal makes everything
visible again; and an opposed exam is refused at the door (422), whoever writes it.

The scene is the care-relationship one (tests/test_care_relationship.py): Agathe LENOIR is `a1`
at CH Romorantin (site 423), which registered a study and its report; Tours (site 401) knows
her too (`t7`, linked by the same validated INS), so a Tours radiologist is in her care."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Token
from tests.identity.support import ROMORANTIN, TOURS, study
from tests.mhd.support import (
    MADO_PATIENT,
    STUDY_101,
    STUDY_102,
    binary,
    kos_bundle,
    provide,
    provide_bundle,
    put_mado_patient,
    submission_set,
    text_document,
)
from tests.test_care_relationship import REPORT, _ids, _link_at_tours, _report, _scene

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
ACSN_TYPE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
}
ACCESSION_ISSUER = "https://fhir.rix.example/sid/accession/423"
REFUSAL = "patient opposed to regional sharing; keep the exam locally"


# -- Consents, from the published examples ------------------------------------------------------


def _example(name: str) -> dict[str, Any]:
    consent: dict[str, Any] = json.loads((PROFILES / f"Consent-{name}.json").read_text())
    return consent


def _for(consent: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """An example Consent made about `patient_id`, with a fresh decision identifier."""
    consent = copy.deepcopy(consent)
    consent.pop("id")
    consent.pop("organization", None)  # the example's recording site does not exist here
    consent["patient"] = {"reference": f"Patient/{patient_id}"}
    consent["performer"] = [{"reference": f"Patient/{patient_id}"}]
    consent["identifier"][0]["value"] = f"OPP-{uuid.uuid4().hex[:8]}"
    return consent


def opposition(patient_id: str, *, emergency: bool) -> dict[str, Any]:
    name = "opposition-emergency-allowed" if emergency else "opposition-no-emergency"
    return _for(_example(name), patient_id)


def exam_opposition(
    patient_id: str, *references: dict[str, Any], emergency: bool = False
) -> dict[str, Any]:
    consent = _for(_example("exam-opposition-reference"), patient_id)
    consent["provision"]["data"] = [{"meaning": "dependents", "reference": r} for r in references]
    if not emergency:
        consent["provision"].pop("provision")
    return consent


def by_uid(uid: str) -> dict[str, Any]:
    return {
        "type": "ImagingStudy",
        "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
    }


def record(client: TestClient, token: Token, consent: dict[str, Any]) -> str:
    """The registry records the decision; its Consent id."""
    response = client.post("/fhir/Consent", json=consent, headers=token("registry"))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# -- helpers ------------------------------------------------------------------------------------


def withdraw(client: TestClient, token: Token, consent: dict[str, Any], consent_id: str) -> None:
    """The registry withdraws a decision: a new version, inactive, with a later dateTime."""
    withdrawn = {
        **consent,
        "id": consent_id,
        "status": "inactive",
        "dateTime": "2026-01-10T09:00:00+01:00",
    }
    response = client.put(f"/fhir/Consent/{consent_id}", json=withdrawn, headers=token("registry"))
    assert response.status_code == 200, response.text


def _status(client: TestClient, ref: str, headers: dict[str, str]) -> int:
    return client.get(f"/fhir/{ref}", headers=headers).status_code


def _exam_items(s: dict[str, str]) -> list[str]:
    return [
        f"ImagingStudy/{s['study']}",
        f"DocumentReference/{s['document']}",
        f"List/{s['list']}",
        f"Binary/{s['binary']}",
    ]


def _studies(client: TestClient, headers: dict[str, str], patient_id: str) -> set[str]:
    response = client.get(
        "/fhir/ImagingStudy", params={"patient": f"Patient/{patient_id}"}, headers=headers
    )
    return _ids(response)


def _accession_study(client: TestClient, token: Token, patient_id: str) -> str:
    """A Romorantin study carrying its accession number (ACSN, with its issuer)."""
    response = client.post(
        "/fhir/ImagingStudy",
        json={
            "resourceType": "ImagingStudy",
            "status": "available",
            "identifier": [
                {"system": "urn:dicom:uid", "value": "urn:oid:1.2.250.423.7"},
                {"type": ACSN_TYPE, "system": ACCESSION_ISSUER, "value": "A26-000042"},
            ],
            "subject": {"reference": f"Patient/{patient_id}"},
        },
        headers=token("site-system", org=ROMORANTIN),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# -- opposition -----------------------------------------------------------------------------------


def test_an_opposition_hides_the_exams_outside_the_producing_site(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    t7 = _link_at_tours(client, token)
    tours = token("radiologist", org=TOURS)
    romorantin = token("radiologist", org=ROMORANTIN)
    for ref in _exam_items(s):
        assert _status(client, ref, tours) == 200, ref  # in her care, before her choice
    record(client, token, opposition(s["a1"], emergency=False))

    for ref in _exam_items(s):
        assert _status(client, ref, tours) == 404, ref
        assert client.get(f"/fhir/{ref}/_history", headers=tours).status_code == 404, ref
        assert client.get(f"/fhir/{ref}/_history/1", headers=tours).status_code == 404, ref
    document = client.get(f"/fhir/Binary/{s['binary']}", headers={**tours, "Accept": "text/plain"})
    assert document.status_code == 404 and REPORT not in document.content
    assert _studies(client, tours, t7) == set()
    assert _studies(client, tours, s["a1"]) == set()
    reports = client.get(
        "/fhir/DocumentReference", params={"patient": f"Patient/{t7}"}, headers=tours
    )
    assert _ids(reports) == set()
    assert (
        _ids(client.get("/fhir/List", params={"patient": f"Patient/{t7}"}, headers=tours)) == set()
    )
    everything = client.get(
        "/fhir/ImagingStudy", params={"_revinclude": "DocumentReference:related"}, headers=tours
    )
    assert _ids(everything) == {f"ImagingStudy/{s['tours_study']}"}
    assert _ids(everything, "include") == set()
    priors = client.get(f"/fhir/Patient/{t7}/$priors", headers=tours)
    assert _ids(priors) == set() and _ids(priors, "include") == set()
    # Her demographics are not an exam: Tours still knows who she is.
    assert _status(client, f"Patient/{s['a1']}", tours) == 200

    # The producing site keeps seeing everything, its systems too.
    for ref in _exam_items(s):
        assert _status(client, ref, romorantin) == 200, ref
    assert (
        _status(client, f"ImagingStudy/{s['study']}", token("site-system", org=ROMORANTIN)) == 200
    )
    priors = client.get(f"/fhir/Patient/{s['a1']}/$priors", headers=romorantin)
    assert _ids(priors) == {f"ImagingStudy/{s['study']}"}
    assert f"DocumentReference/{s['document']}" in _ids(priors, "include")

    # So does the patient, from either of her records.
    for me in (s["a1"], t7):
        mine = token("patient", patient=me)
        assert _studies(client, mine, me) == {f"ImagingStudy/{s['study']}"}
        assert _status(client, f"DocumentReference/{s['document']}", mine) == 200


@pytest.mark.parametrize("role", ["admin", "dpo", "registry", "site-system"])
def test_no_other_role_outside_the_site_sees_an_opposed_exam(
    client: TestClient, token: Token, role: str
) -> None:
    s = _scene(client, token)
    headers = token(role, org=TOURS if role == "site-system" else None)
    record(client, token, opposition(s["a1"], emergency=True))
    if role == "registry":  # the registry reads no exams at all
        assert _status(client, f"ImagingStudy/{s['study']}", headers) == 403
        return
    for ref in _exam_items(s):
        assert _status(client, ref, headers) == 404, ref
    assert _studies(client, headers, s["a1"]) == set()
    listed = client.get("/fhir/ImagingStudy", headers=headers)
    assert _ids(listed) == {f"ImagingStudy/{s['tours_study']}"}
    # A total counts only what the caller may see.
    count = client.get("/fhir/ImagingStudy", params={"_summary": "count"}, headers=headers)
    assert count.json()["total"] == 1


def test_the_opposition_of_any_record_covers_the_person(client: TestClient, token: Token) -> None:
    """Recorded on her Tours record, the opposition still hides the exams Romorantin holds."""
    s = _scene(client, token)
    t7 = _link_at_tours(client, token)
    record(client, token, opposition(t7, emergency=False))
    tours = token("radiologist", org=TOURS)
    assert _status(client, f"ImagingStudy/{s['study']}", tours) == 404
    assert (
        _status(client, f"ImagingStudy/{s['study']}", token("radiologist", org=ROMORANTIN)) == 200
    )


# -- exam opposition ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["reference", "study-uid", "accession", "accession-any-issuer"])
def test_an_exam_opposition_hides_that_exam_and_its_report_only(
    client: TestClient, token: Token, how: str
) -> None:
    s = _scene(client, token)
    t7 = _link_at_tours(client, token)
    opposed = _accession_study(client, token, s["a1"])
    report = _report(client, token, ROMORANTIN, s["a1"], opposed)
    named: dict[str, Any] = {
        "reference": {"reference": f"ImagingStudy/{opposed}"},
        "study-uid": by_uid("1.2.250.423.7"),
        "accession": {
            "type": "ImagingStudy",
            "identifier": {"type": ACSN_TYPE, "system": ACCESSION_ISSUER, "value": "A26-000042"},
        },
        "accession-any-issuer": {"identifier": {"type": ACSN_TYPE, "value": "A26-000042"}},
    }
    record(client, token, exam_opposition(s["a1"], named[how]))
    tours = token("radiologist", org=TOURS)
    for ref in (
        f"ImagingStudy/{opposed}",
        f"DocumentReference/{report['DocumentReference']}",
        f"Binary/{report['Binary']}",
    ):
        assert _status(client, ref, tours) == 404, ref
    # The rest of her record is shared: the other study, its report, the submission sets.
    for ref in [*_exam_items(s), f"List/{report['List']}"]:
        assert _status(client, ref, tours) == 200, ref
    assert _studies(client, tours, t7) == {f"ImagingStudy/{s['study']}"}
    priors = client.get(f"/fhir/Patient/{t7}/$priors", headers=tours)
    assert _ids(priors) == {f"ImagingStudy/{s['study']}"}
    assert f"DocumentReference/{report['DocumentReference']}" not in _ids(priors, "include")
    romorantin = token("radiologist", org=ROMORANTIN)
    assert _studies(client, romorantin, s["a1"]) == {
        f"ImagingStudy/{s['study']}",
        f"ImagingStudy/{opposed}",
    }


def test_an_accession_of_another_issuer_is_another_exam(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    _link_at_tours(client, token)
    other = _accession_study(client, token, s["a1"])
    elsewhere = {"type": ACSN_TYPE, "system": "https://fhir.rix.example/sid/accession/401"}
    record(
        client,
        token,
        exam_opposition(s["a1"], {"identifier": {**elsewhere, "value": "A26-000042"}}),
    )
    assert _status(client, f"ImagingStudy/{other}", token("radiologist", org=TOURS)) == 200


# -- emergency ------------------------------------------------------------------------------------


def break_glass(client: TestClient, headers: dict[str, str], patient_id: str) -> str:
    """Open a break-glass grant on a patient for the holder of `headers`; the grant's Task id."""
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{patient_id}"}},
            {"name": "reason", "valueString": "unconscious patient admitted to the emergency room"},
        ],
    }
    r = client.post("/fhir/Patient/$break-glass", json=body, headers=headers)
    assert r.status_code == 200, r.text
    grant: str = r.json()["parameter"][0]["valueReference"]["reference"]
    return grant.split("/")[1]


@pytest.mark.parametrize("purpose", ["ETREAT", "BTG"])
def test_the_emergency_permit_lets_break_glass_through(
    client: TestClient, token: Token, purpose: str
) -> None:
    s = _scene(client, token)
    t7 = _link_at_tours(client, token)
    record(client, token, opposition(s["a1"], emergency=True))
    urgent = token("radiologist", org=TOURS, purpose=purpose)
    # An emergency purpose alone is not a break-glass use: hidden until the grant is opened.
    assert _status(client, f"ImagingStudy/{s['study']}", urgent) == 404
    break_glass(client, urgent, t7)
    for ref in _exam_items(s):
        assert _status(client, ref, urgent) == 200, ref
    assert _studies(client, urgent, t7) == {f"ImagingStudy/{s['study']}"}
    # The holder without the emergency purpose: hidden; another radiologist: hidden too.
    assert _status(client, f"ImagingStudy/{s['study']}", token("radiologist", org=TOURS)) == 404
    other = token("radiologist", sub="another-radiologist", org=TOURS, purpose=purpose)
    assert _status(client, f"ImagingStudy/{s['study']}", other) == 404


def test_without_the_permit_break_glass_is_refused(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    t7 = _link_at_tours(client, token)
    record(client, token, opposition(s["a1"], emergency=False))
    urgent = token("radiologist", org=TOURS, purpose="BTG")
    break_glass(client, urgent, t7)
    for ref in _exam_items(s):
        assert _status(client, ref, urgent) == 404, ref


def test_a_deny_without_the_permit_wins_over_one_with_it(client: TestClient, token: Token) -> None:
    """An opposition with the permit and an exam opposition without it: in an emergency, the
    opposed exam and its report stay hidden, the rest of her record opens."""
    s = _scene(client, token)
    _link_at_tours(client, token)
    record(client, token, opposition(s["a1"], emergency=True))
    record(client, token, exam_opposition(s["a1"], by_uid("1.2.250.423.1"), emergency=False))
    urgent = token("radiologist", org=TOURS, purpose="ETREAT")
    break_glass(client, urgent, s["a1"])
    assert _status(client, f"ImagingStudy/{s['study']}", urgent) == 404
    assert _status(client, f"DocumentReference/{s['document']}", urgent) == 404
    assert _status(client, f"Binary/{s['binary']}", urgent) == 404
    assert _status(client, f"List/{s['list']}", urgent) == 200


# -- withdrawal -----------------------------------------------------------------------------------


def test_a_withdrawal_shares_the_exams_again(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    _link_at_tours(client, token)
    consent = opposition(s["a1"], emergency=False)
    consent_id = record(client, token, consent)
    tours = token("radiologist", org=TOURS)
    admin = token("admin")
    assert _status(client, f"ImagingStudy/{s['study']}", tours) == 404
    assert _status(client, f"ImagingStudy/{s['study']}", admin) == 404
    withdraw(client, token, consent, consent_id)
    for ref in _exam_items(s):
        assert _status(client, ref, tours) == 200, ref
        assert _status(client, ref, admin) == 200, ref


# -- filtering at the door ------------------------------------------------------------------------


def _refused(response: Any, text: str = REFUSAL) -> None:
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "business-rule"
    assert text in outcome["issue"][0]["diagnostics"]


def test_an_opposed_patient_s_exams_are_refused_at_the_door(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    record(client, token, opposition(s["a1"], emergency=True))
    site = token("site-system", org=ROMORANTIN)
    romorantin = token("radiologist", org=ROMORANTIN)
    before = {
        t: _ids(client.get(f"/fhir/{t}", params={"_count": "100"}, headers=romorantin))
        for t in ("ImagingStudy", "DocumentReference", "List", "Binary")
    }
    subject = f"Patient/{s['a1']}"
    report = text_document(
        subject, context={"related": [{"reference": f"ImagingStudy/{s['study']}"}]}
    )
    bundle = provide_bundle([(report, binary(b"CR scanner"))], submission_set(subject))
    _refused(provide(client, bundle, site))
    new_study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.250.423.99"}],
        "subject": {"reference": subject},
    }
    for writer in (site, token("admin")):
        _refused(client.post("/fhir/ImagingStudy", json=new_study, headers=writer))
    after = {
        t: _ids(client.get(f"/fhir/{t}", params={"_count": "100"}, headers=romorantin))
        for t in before
    }
    assert after == before
    # Tours' patient is not concerned; and the site may still take its own data back.
    assert study(client, token, TOURS, s["b1"], "1.2.250.401.10")
    deleted = client.delete(f"/fhir/ImagingStudy/{s['study']}", headers=site)
    assert deleted.status_code in (200, 204), deleted.text


def test_an_exam_opposition_refuses_that_exam_only(client: TestClient, token: Token) -> None:
    put_mado_patient(client)
    record(client, token, exam_opposition(MADO_PATIENT, by_uid(STUDY_101)))
    before = _ids(client.get("/fhir/DocumentReference", params={"_count": "100"}))
    _refused(provide(client, kos_bundle(STUDY_101)), "patient opposed to the sharing of this exam")
    assert _ids(client.get("/fhir/ImagingStudy")) == set()
    assert _ids(client.get("/fhir/DocumentReference", params={"_count": "100"})) == before
    assert provide(client, kos_bundle(STUDY_102)).status_code == 200
    studies = client.get("/fhir/ImagingStudy").json()["entry"]
    assert [e["resource"]["identifier"][0]["value"] for e in studies] == [f"urn:oid:{STUDY_102}"]
    # A plain create of the opposed study is refused the same way.
    plain = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_101}"}],
        "subject": {"reference": f"Patient/{MADO_PATIENT}"},
    }
    _refused(client.post("/fhir/ImagingStudy", json=plain), "keep the exam locally")


def test_a_consent_without_a_rix_kind_is_not_enforced(client: TestClient, token: Token) -> None:
    """Only the RIX kinds are decisions RIX enforces: a plain FHIR deny (no consent-kind
    coding in `category`) hides nothing and refuses nothing."""
    s = _scene(client, token)
    _link_at_tours(client, token)
    plain = opposition(s["a1"], emergency=False)
    plain["category"] = plain["category"][:1]  # the LOINC category only
    record(client, token, plain)
    assert _status(client, f"ImagingStudy/{s['study']}", token("radiologist", org=TOURS)) == 200
    assert study(client, token, ROMORANTIN, s["a1"], "1.2.250.423.98")
