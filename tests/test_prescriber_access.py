"""Prescriber access: a clinician or GP who ordered an exam sees that exam, its order and its
report without a care relationship with the patient, and nothing else of the patient's.

The prescriber is named on the token by `national_provider_identifier` (RPPS, 11 digits, or
its IDNPS form `8` + RPPS: the same professional) and on the exam by
- `ImagingStudy.referrer`: a logical reference by RPPS/IDNPS identifier, a literal reference to
  a Practitioner carrying that identifier, or to a PractitionerRole whose practitioner does;
- `ImagingStudy.basedOn` -> the ServiceRequest whose `requester` is that practitioner.
The report (a DocumentReference whose `context.related` names the study) and its bytes (Binary)
go with the study. The patient's other exams, the Patient resource itself and other patients'
exams stay hidden; a patient's opposition still applies outside the producing site.

The scene: Agathe LENOIR is `a1` at CH Romorantin (site 423), which registers five of her
studies, each ordered differently, and a report of the first; Romorantin's other patient Paul
has a study ordered by the same doctor as Agathe's first. The prescribers work at Blois
(site 411), which knows neither patient.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Token
from tests.identity.support import BLOIS, ROMORANTIN, feed_id, patient
from tests.test_care_relationship import INS, LENOIR, REPORT, _ids, _report
from tests.test_consent_enforcement import _status, exam_opposition, opposition, record

RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
# Five prescribers (11-digit RPPS numbers) and someone who prescribed nothing here.
LOGICAL, LITERAL, ROLE, ORDER, OTHER, NOBODY = (
    "10001000001",
    "10001000002",
    "10001000003",
    "10001000004",
    "10001000005",
    "10001000009",
)


def idnps(number: str) -> str:
    """The IDNPS form of an RPPS number (FR Core: `8` + RPPS)."""
    return f"8{number}"


def _post(client: TestClient, headers: dict[str, str], resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _study(patient_id: str, uid: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "subject": {"reference": f"Patient/{patient_id}"},
        **fields,
    }


def _by_rpps(value: str) -> dict[str, Any]:
    return {"identifier": {"system": RPPS_SYSTEM, "value": value}}


def _scene(client: TestClient, token: Token) -> dict[str, str]:
    site = token("site-system", org=ROMORANTIN)
    a1 = feed_id(
        client, token, ROMORANTIN, patient(ROMORANTIN, "a1", **LENOIR, ins=INS, status="VALI")
    )
    paul = feed_id(client, token, ROMORANTIN, patient(ROMORANTIN, "p2", "MARTIN", "Paul"))
    practitioner = _post(
        client,
        site,
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": RPPS_SYSTEM, "value": idnps(LITERAL)}],
            "name": [{"family": "LITTERAL"}],
        },
    )
    in_role = _post(
        client,
        site,
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": RPPS_SYSTEM, "value": ROLE}],
            "name": [{"family": "ROLE"}],
        },
    )
    role = _post(
        client,
        site,
        {
            "resourceType": "PractitionerRole",
            "practitioner": {"reference": f"Practitioner/{in_role}"},
        },
    )
    order = _post(
        client,
        site,
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": f"Patient/{a1}"},
            "requester": _by_rpps(idnps(ORDER)),
        },
    )
    s = {
        "a1": a1,
        "paul": paul,
        "order": order,
        # The IDNPS form on the exam.
        "logical": _post(
            client, site, _study(a1, "1.2.250.423.31", referrer=_by_rpps(idnps(LOGICAL)))
        ),
        "literal": _post(
            client,
            site,
            _study(a1, "1.2.250.423.32", referrer={"reference": f"Practitioner/{practitioner}"}),
        ),
        "role": _post(
            client,
            site,
            _study(a1, "1.2.250.423.33", referrer={"reference": f"PractitionerRole/{role}"}),
        ),
        "based_on": _post(
            client,
            site,
            _study(a1, "1.2.250.423.34", basedOn=[{"reference": f"ServiceRequest/{order}"}]),
        ),
        # The bare RPPS on the exam.
        "other": _post(client, site, _study(a1, "1.2.250.423.35", referrer=_by_rpps(OTHER))),
        "paul_study": _post(
            client, site, _study(paul, "1.2.250.423.36", referrer=_by_rpps(LOGICAL))
        ),
    }
    report = _report(client, token, ROMORANTIN, a1, s["logical"])
    s.update(document=report["DocumentReference"], binary=report["Binary"], list=report["List"])
    return s


def _studies(client: TestClient, headers: dict[str, str], **params: str) -> set[str]:
    return _ids(client.get("/fhir/ImagingStudy", params=params, headers=headers))


def _everything(s: dict[str, str]) -> list[str]:
    return [
        f"Patient/{s['a1']}",
        f"Patient/{s['paul']}",
        f"ServiceRequest/{s['order']}",
        *(
            f"ImagingStudy/{s[k]}"
            for k in ("logical", "literal", "role", "based_on", "other", "paul_study")
        ),
        f"DocumentReference/{s['document']}",
        f"Binary/{s['binary']}",
        f"List/{s['list']}",
    ]


def test_each_prescriber_sees_the_exams_he_ordered_and_nothing_else(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    agathe = f"Patient/{s['a1']}"
    # Who sees what: the token's RPPS (bare or IDNPS form) -> the items it opens.
    cases: list[tuple[str, str, set[str]]] = [
        (
            "clinician",
            LOGICAL,
            {
                f"ImagingStudy/{s['logical']}",
                f"DocumentReference/{s['document']}",
                f"Binary/{s['binary']}",
                f"ImagingStudy/{s['paul_study']}",  # he ordered Paul's exam too
            },
        ),
        ("gp", idnps(LITERAL), {f"ImagingStudy/{s['literal']}"}),
        ("clinician", idnps(ROLE), {f"ImagingStudy/{s['role']}"}),
        (
            "gp",
            ORDER,
            {f"ImagingStudy/{s['based_on']}", f"ServiceRequest/{s['order']}"},
        ),
        ("clinician", idnps(OTHER), {f"ImagingStudy/{s['other']}"}),
        ("gp", NOBODY, set()),
    ]
    for role, number, opened in cases:
        headers = token(role, sub=f"dr-{number}", org=BLOIS, npi=number)
        for ref in _everything(s):
            expected = 200 if ref in opened else 404
            assert _status(client, ref, headers) == expected, (role, number, ref)
        studies = {r for r in opened if r.startswith("ImagingStudy/")}
        hers = studies - {f"ImagingStudy/{s['paul_study']}"}
        assert _studies(client, headers, patient=agathe) == hers, number
        assert _studies(client, headers) == studies, number
        included = client.get(
            "/fhir/ImagingStudy",
            params={"_include": "ImagingStudy:patient", "_revinclude": "DocumentReference:related"},
            headers=headers,
        )
        reports = {r for r in opened if r.startswith("DocumentReference/")}
        assert _ids(included, "include") == reports, number  # never the Patient
        assert _ids(client.get("/fhir/Patient", headers=headers)) == set(), number
        orders = {r for r in opened if r.startswith("ServiceRequest/")}
        found = client.get("/fhir/ServiceRequest", params={"patient": agathe}, headers=headers)
        assert _ids(found) == orders, number
        assert client.get(f"/fhir/{agathe}/$priors", headers=headers).status_code == 404

    # The prescriber of Agathe's first exam also ordered Paul's: he sees both, each alone.
    both = token("gp", org=BLOIS, npi=idnps(LOGICAL))
    assert _studies(client, both, patient=f"Patient/{s['paul']}") == {
        f"ImagingStudy/{s['paul_study']}"
    }
    assert _status(client, f"Patient/{s['paul']}", both) == 404
    document = client.get(f"/fhir/Binary/{s['binary']}", headers={**both, "Accept": "text/plain"})
    assert document.status_code == 200 and document.content == REPORT

    # Without an RPPS on the token, or with an empty one: no prescription to match.
    for headers in (token("clinician", org=BLOIS), token("gp", org=BLOIS, npi=" ")):
        for ref in _everything(s):
            assert _status(client, ref, headers) == 404, ref
    # Nor without an organisation: the RPPS alone is enough.
    assert _status(client, f"ImagingStudy/{s['logical']}", token("gp", npi=LOGICAL)) == 200


def test_a_patient_s_opposition_still_applies_to_her_prescriber(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    logical = token("clinician", org=BLOIS, npi=idnps(LOGICAL))
    literal = token("clinician", org=BLOIS, npi=LITERAL)
    ordered = token("gp", org=BLOIS, npi=ORDER)
    first = f"ImagingStudy/{s['logical']}"
    # An exam opposition on the literal-referrer exam: that prescriber loses it, not the others.
    record(client, token, exam_opposition(s["a1"], {"reference": f"ImagingStudy/{s['literal']}"}))
    assert _status(client, f"ImagingStudy/{s['literal']}", literal) == 404
    assert _status(client, first, logical) == 200
    assert _status(client, f"ServiceRequest/{s['order']}", ordered) == 200
    # An opposition: every exam, its order and report are hidden from every prescriber outside
    # Romorantin, even one with the emergency permit (no break-glass here).
    record(client, token, opposition(s["a1"], emergency=True))
    for ref in (first, f"DocumentReference/{s['document']}", f"Binary/{s['binary']}"):
        assert _status(client, ref, logical) == 404, ref
    assert _status(client, f"ImagingStudy/{s['based_on']}", ordered) == 404
    assert _status(client, f"ServiceRequest/{s['order']}", ordered) == 404
    assert _studies(client, logical) == {f"ImagingStudy/{s['paul_study']}"}  # Paul did not oppose
    # A prescriber at the producing site is in the care relationship: he still sees it.
    at_site = token("clinician", org=ROMORANTIN, npi=LOGICAL)
    assert _status(client, first, at_site) == 200
    assert _status(client, f"Binary/{s['binary']}", at_site) == 200
