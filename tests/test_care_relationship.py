"""The care relationship: a radiologist, clinician or GP sees a patient's clinical data
(ImagingStudy, DocumentReference, List, ServiceRequest) and the documents' bytes (Binary) only
when the patient's person has a record at their own organisation, directly or through an identity
link; everything else is answered like something that does not exist (404, dropped from
searches, includes and history, never counted). A document's Binary is read with the rights of
its DocumentReference (`Binary.securityContext`, set by RIX when the document is registered).

The scene: Agathe LENOIR is IPP `a1` at CH Romorantin (site 423), where a study and its report
(ITI-65, with its Binary) are registered; CHRU Tours (site 401) has its own patient `b1`. A
Tours radiologist sees none of Agathe's data until Tours registers her too, under the same
validated INS, which links the two records."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.conftest import Token
from tests.identity.support import ROMORANTIN, TOURS, feed_id, ipp, patient, study
from tests.mhd.support import binary, provide_bundle, provided, submission_set, text_document

INS = "2800771234567"
LENOIR = {"family": "LENOIR", "given": "Agathe", "birth": "1980-07-14"}
REPORT = b"CR IRM genou droit: pas de lesion meniscale.\n"
CLINICAL_ROLES = ("radiologist", "clinician", "gp")


def _report(
    client: TestClient, token: Token, site: str, patient_id: str, study_id: str
) -> dict[str, str]:
    """ITI-65: the site registers a report of the study, its bytes in a Binary; the ids of the
    SubmissionSet List, the DocumentReference and the Binary."""
    subject = f"Patient/{patient_id}"
    document = text_document(
        subject, context={"related": [{"reference": f"ImagingStudy/{study_id}"}]}
    )
    bundle = provide_bundle([(document, binary(REPORT))], submission_set(subject))
    created = provided(client, bundle, token("site-system", org=site))
    return {t: created[t][0] for t in ("List", "DocumentReference", "Binary")}


def _scene(client: TestClient, token: Token) -> dict[str, str]:
    """Agathe at Romorantin with a study and its report; Tours' own patient, with a study
    registered before Agathe's (so that it comes first in creation order)."""
    b1 = feed_id(client, token, TOURS, patient(TOURS, "b1", "MARTIN", "Paul", "1950-01-01"))
    tours_study = study(client, token, TOURS, b1, "1.2.250.401.9")
    a1 = feed_id(
        client, token, ROMORANTIN, patient(ROMORANTIN, "a1", **LENOIR, ins=INS, status="VALI")
    )
    agathe_study = study(client, token, ROMORANTIN, a1, "1.2.250.423.1")
    report = _report(client, token, ROMORANTIN, a1, agathe_study)
    return {
        "a1": a1,
        "b1": b1,
        "study": agathe_study,
        "tours_study": tours_study,
        "document": report["DocumentReference"],
        "list": report["List"],
        "binary": report["Binary"],
    }


def _link_at_tours(client: TestClient, token: Token) -> str:
    """Tours registers Agathe under the same validated INS: one person, two records."""
    return feed_id(client, token, TOURS, patient(TOURS, "t7", **LENOIR, ins=INS, status="VALI"))


def _ids(response: Response, mode: str = "match") -> set[str]:
    assert response.status_code == 200, response.text
    entries = response.json().get("entry", [])
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if e["search"]["mode"] == mode
    }


def _agathe_items(s: dict[str, str]) -> list[str]:
    return [
        f"Patient/{s['a1']}",
        f"ImagingStudy/{s['study']}",
        f"DocumentReference/{s['document']}",
        f"List/{s['list']}",
        f"Binary/{s['binary']}",
    ]


def _searches(s: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """Every way of asking for Agathe's clinical data by search."""
    agathe = f"Patient/{s['a1']}"
    by_ipp = f"{ipp(ROMORANTIN)}|a1"
    return [
        ("ImagingStudy", {"patient": agathe}),
        ("ImagingStudy", {"subject": agathe}),
        ("ImagingStudy", {"patient": s["a1"]}),
        ("ImagingStudy", {"patient.identifier": by_ipp}),
        ("ImagingStudy", {"_id": s["study"]}),
        ("DocumentReference", {"patient": agathe}),
        ("DocumentReference", {"subject": agathe}),
        ("DocumentReference", {"patient.identifier": by_ipp}),
        ("DocumentReference", {"related": f"ImagingStudy/{s['study']}"}),
        ("List", {"patient": agathe}),
        ("Binary", {"_id": s["binary"]}),
    ]


# -- no care relationship: nothing of Agathe leaves --------------------------------------------


@pytest.mark.parametrize("role", CLINICAL_ROLES)
def test_a_clinical_role_of_another_site_reads_nothing(
    client: TestClient, token: Token, role: str
) -> None:
    s = _scene(client, token)
    tours = token(role, org=TOURS)
    for ref in _agathe_items(s):
        hidden = client.get(f"/fhir/{ref}", headers=tours)
        type_name = ref.split("/")[0]
        missing = client.get(f"/fhir/{type_name}/no-such-id", headers=tours)
        assert hidden.status_code == missing.status_code == 404, ref
        # Indistinguishable from what does not exist: the same issues, the id aside.
        hidden_issues = hidden.text.split('"issue":')[1].replace(ref.split("/")[1], "ID")
        assert hidden_issues == missing.text.split('"issue":')[1].replace("no-such-id", "ID")
        assert client.get(f"/fhir/{ref}/_history", headers=tours).status_code == 404, ref
        assert client.get(f"/fhir/{ref}/_history/1", headers=tours).status_code == 404, ref
    document = client.get(f"/fhir/Binary/{s['binary']}", headers={**tours, "Accept": "text/plain"})
    assert document.status_code == 404 and REPORT not in document.content
    assert client.get(f"/fhir/ImagingStudy/{s['study']}/$kos", headers=tours).status_code == 404
    assert client.get(f"/fhir/Patient/{s['a1']}/$priors", headers=tours).status_code == 404
    # Tours' own data is still there.
    assert client.get(f"/fhir/ImagingStudy/{s['tours_study']}", headers=tours).status_code == 200


def test_searches_includes_and_counts_leave_agathe_out(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    tours = token("radiologist", org=TOURS)
    for type_name, criteria in _searches(s):
        response = client.get(f"/fhir/{type_name}", params=criteria, headers=tours)
        assert _ids(response) == set(), (type_name, criteria)
        assert response.json().get("total", 0) == 0, (type_name, criteria)
    everything = client.get(
        "/fhir/ImagingStudy",
        params={"_revinclude": "DocumentReference:related", "_include": "ImagingStudy:patient"},
        headers=tours,
    )
    assert _ids(everything) == {f"ImagingStudy/{s['tours_study']}"}
    assert f"DocumentReference/{s['document']}" not in _ids(everything, "include")
    assert f"Patient/{s['a1']}" not in _ids(everything, "include")
    # Documents reach their Binary only through a visible DocumentReference.
    reports = client.get(
        "/fhir/DocumentReference",
        params={"_include": "DocumentReference:related", "_revinclude": "List:item"},
        headers=tours,
    )
    assert _ids(reports) == set() and _ids(reports, "include") == set()
    # A batch read is a read.
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": ref}} for ref in _agathe_items(s)[1:]],
    }
    response = client.post("/fhir", json=batch, headers=tours)
    assert response.status_code == 200, response.text
    assert [e["response"]["status"][:3] for e in response.json()["entry"]] == ["404"] * 4


def test_an_include_from_visible_data_does_not_carry_hidden_data(
    client: TestClient, token: Token
) -> None:
    """Tours' own report, related to Agathe's Romorantin study: Tours gets its report, not the
    study it points at."""
    s = _scene(client, token)
    own = _report(client, token, TOURS, s["b1"], s["study"])
    tours = token("radiologist", org=TOURS)
    response = client.get(
        "/fhir/DocumentReference",
        params={"patient": f"Patient/{s['b1']}", "_include": "DocumentReference:related"},
        headers=tours,
    )
    assert _ids(response) == {f"DocumentReference/{own['DocumentReference']}"}
    assert _ids(response, "include") == set()


def test_totals_count_only_what_the_caller_may_see(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    tours = token("radiologist", org=TOURS)
    count = client.get(
        "/fhir/ImagingStudy",
        params={"patient": f"Patient/{s['a1']}", "_summary": "count"},
        headers=tours,
    )
    assert count.status_code == 200 and count.json().get("total", 0) == 0
    # Tours' study (created first) fills the first page; Agathe's is on the next one.
    both = f"Patient/{s['b1']},Patient/{s['a1']}"
    page = client.get("/fhir/ImagingStudy", params={"patient": both, "_count": "1"}, headers=tours)
    assert page.json().get("total", 1) == 1


def test_a_page_is_filled_past_hidden_items_and_pages_on_from_there(
    client: TestClient, token: Token
) -> None:
    """Agathe's study (hidden from Tours) comes between two of Tours' studies: a page of one
    skips it without a trace (no short page, no total), and the next page goes on after it."""
    s = _scene(client, token)
    later = study(client, token, TOURS, s["b1"], "1.2.250.401.10")
    tours = token("radiologist", org=TOURS)
    both = f"Patient/{s['b1']},Patient/{s['a1']}"
    seen: list[str] = []
    url: str | None = "/fhir/ImagingStudy"
    params: dict[str, str] | None = {"patient": both, "_count": "1"}
    while url:
        page = client.get(url, params=params, headers=tours)
        body = page.json()
        assert "total" not in body or body["total"] == 2
        seen += sorted(_ids(page))
        url = next((x["url"] for x in body.get("link", []) if x["relation"] == "next"), None)
        params = None
    assert seen[:2] == [f"ImagingStudy/{s['tours_study']}", f"ImagingStudy/{later}"]
    assert f"ImagingStudy/{s['study']}" not in seen


@pytest.mark.parametrize(
    ("role", "revinclude", "type_name"),
    [("radiologist", "AuditEvent:patient", "AuditEvent"), ("gp", "Consent:patient", "Consent")],
)
def test_includes_bring_only_types_the_role_may_read(
    client: TestClient, token: Token, role: str, revinclude: str, type_name: str
) -> None:
    """_revinclude is a read of what it brings: a type the role may not read stays out."""
    s = _scene(client, token)
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{s['a1']}"},
    }
    assert client.post("/fhir/Consent", json=consent).status_code == 201
    romorantin = token(role, org=ROMORANTIN)
    assert client.get(f"/fhir/{type_name}", headers=romorantin).status_code == 403
    found = client.get(
        "/fhir/Patient", params={"_id": s["a1"], "_revinclude": revinclude}, headers=romorantin
    )
    assert _ids(found) == {f"Patient/{s['a1']}"}
    assert not [i for i in _ids(found, "include") if i.startswith(type_name)]


def test_a_clinician_without_organisation_sees_no_clinical_data(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    nowhere = token("clinician")
    for ref in (*_agathe_items(s), f"ImagingStudy/{s['tours_study']}"):
        assert client.get(f"/fhir/{ref}", headers=nowhere).status_code == 404, ref
    for type_name in ("ImagingStudy", "DocumentReference", "List", "Binary", "Patient"):
        assert _ids(client.get(f"/fhir/{type_name}", headers=nowhere)) == set(), type_name
    # Directory data is no one's care relationship.
    organizations = client.get("/fhir/Organization", headers=nowhere)
    assert organizations.status_code == 200


# -- care relationship: the site that knows the patient sees everything ------------------------


def _sees_everything_of_agathe(
    client: TestClient, headers: dict[str, str], s: dict[str, str]
) -> None:
    for ref in _agathe_items(s):
        assert client.get(f"/fhir/{ref}", headers=headers).status_code == 200, ref
        history = client.get(f"/fhir/{ref}/_history", headers=headers)
        assert history.status_code == 200 and history.json()["entry"], ref
    document = client.get(
        f"/fhir/Binary/{s['binary']}", headers={**headers, "Accept": "text/plain"}
    )
    assert document.status_code == 200 and document.content == REPORT
    agathe = f"Patient/{s['a1']}"
    studies = client.get(
        "/fhir/ImagingStudy",
        params={"patient": agathe, "_revinclude": "DocumentReference:related"},
        headers=headers,
    )
    assert _ids(studies) == {f"ImagingStudy/{s['study']}"}
    assert _ids(studies, "include") == {f"DocumentReference/{s['document']}"}
    assert studies.json()["total"] == 1
    count = client.get(
        "/fhir/DocumentReference", params={"patient": agathe, "_summary": "count"}, headers=headers
    )
    assert count.json()["total"] == 1


def test_the_site_that_knows_the_patient_sees_her_data(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    for role in CLINICAL_ROLES:
        _sees_everything_of_agathe(client, token(role, org=ROMORANTIN), s)
    romorantin = token("radiologist", org=ROMORANTIN)
    by_ipp = client.get(
        "/fhir/ImagingStudy",
        params={"patient.identifier": f"{ipp(ROMORANTIN)}|a1"},
        headers=romorantin,
    )
    assert _ids(by_ipp) == {f"ImagingStudy/{s['study']}"}
    # But not Tours' patient.
    assert (
        client.get(f"/fhir/ImagingStudy/{s['tours_study']}", headers=romorantin).status_code == 404
    )


def test_a_link_at_tours_opens_agathe_s_data_to_tours(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    tours = token("radiologist", org=TOURS)
    assert client.get(f"/fhir/ImagingStudy/{s['study']}", headers=tours).status_code == 404
    t7 = _link_at_tours(client, token)
    _sees_everything_of_agathe(client, tours, s)
    # Tours asks with its own IPP and gets the Romorantin study and report.
    studies = client.get(
        "/fhir/ImagingStudy",
        params={
            "patient.identifier": f"{ipp(TOURS)}|t7",
            "_revinclude": "DocumentReference:related",
        },
        headers=tours,
    )
    assert _ids(studies) == {f"ImagingStudy/{s['study']}"}
    assert _ids(studies, "include") == {f"DocumentReference/{s['document']}"}
    priors = client.get(f"/fhir/Patient/{t7}/$priors", headers=tours)
    assert f"ImagingStudy/{s['study']}" in _ids(priors)


def test_administrators_and_the_dpo_still_see_everything(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    for headers in ({}, token("dpo")):  # {}: the client's own administrator token
        for ref in (*_agathe_items(s), f"ImagingStudy/{s['tours_study']}"):
            assert client.get(f"/fhir/{ref}", headers=headers).status_code == 200, ref
        studies = client.get("/fhir/ImagingStudy", headers=headers)
        assert studies.json()["total"] == 2
    site = token("site-system", org=TOURS)
    assert client.get(f"/fhir/Binary/{s['binary']}", headers=site).status_code == 200


# -- Binary.securityContext ----------------------------------------------------------------------


def test_the_report_s_binary_is_bound_to_its_document(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    stored = client.get(f"/fhir/Binary/{s['binary']}").json()
    assert stored["securityContext"] == {"reference": f"DocumentReference/{s['document']}"}
    assert stored["data"]  # the content is untouched


def test_another_site_may_not_overwrite_or_delete_the_report_s_bytes(
    client: TestClient, token: Token
) -> None:
    """A bound Binary is written with the rights of its document: Tours' system can neither
    replace Romorantin's report bytes nor delete them; Romorantin's can."""
    s = _scene(client, token)
    url = f"/fhir/Binary/{s['binary']}"
    stored = client.get(url).json()
    forged = {**binary(b"forged"), "id": s["binary"]}
    tours = token("site-system", org=TOURS)
    assert client.put(url, json=forged, headers=tours).status_code == 403
    assert client.delete(url, headers=tours).status_code == 403
    assert client.get(url).json()["data"] == stored["data"]
    romorantin = token("site-system", org=ROMORANTIN)
    kept = {**forged, "securityContext": stored["securityContext"]}
    assert client.put(url, json=kept, headers=romorantin).status_code == 200


def test_instance_history_hides_versions_about_another_patient(
    client: TestClient, token: Token
) -> None:
    """A document first filed under Tours' patient, then moved to Agathe: Romorantin sees the
    document and its history, but not the version that was about Tours' patient."""
    s = _scene(client, token)
    first = _document(s["b1"], "http://example.org/report.txt")
    doc_id = _post(client, {}, first)
    moved = {**first, "id": doc_id, "subject": {"reference": f"Patient/{s['a1']}"}}
    assert client.put(f"/fhir/DocumentReference/{doc_id}", json=moved).status_code == 200
    romorantin = token("radiologist", org=ROMORANTIN)
    history = client.get(f"/fhir/DocumentReference/{doc_id}/_history", headers=romorantin)
    assert history.status_code == 200, history.text
    versions = [e["resource"]["meta"]["versionId"] for e in history.json()["entry"]]
    assert versions == ["2"]
    assert (
        client.get(f"/fhir/DocumentReference/{doc_id}/_history/1", headers=romorantin).status_code
        == 404
    )


def _post(client: TestClient, headers: dict[str, str], resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _document(patient_id: str | None, url: str) -> dict[str, Any]:
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "text/plain", "url": url}}],
    }
    if patient_id:
        document["subject"] = {"reference": f"Patient/{patient_id}"}
    return document


def test_a_plain_create_binds_the_binary_and_the_first_document_keeps_it(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN)
    loose = _post(client, site, binary(REPORT))
    romorantin = token("radiologist", org=ROMORANTIN)
    # Bytes that no document names are no one's care relationship.
    assert client.get(f"/fhir/Binary/{loose}", headers=romorantin).status_code == 404
    assert client.get(f"/fhir/Binary/{loose}", headers=site).status_code == 200
    # Our own absolute URL names the same Binary.
    first = _post(client, site, _document(s["a1"], f"http://testserver/fhir/Binary/{loose}"))
    context = client.get(f"/fhir/Binary/{loose}").json()["securityContext"]
    assert context == {"reference": f"DocumentReference/{first}"}
    assert client.get(f"/fhir/Binary/{loose}", headers=romorantin).status_code == 200
    # A second document about Tours' patient cannot move the bytes to Tours.
    _post(client, token("site-system", org=TOURS), _document(s["b1"], f"Binary/{loose}"))
    context = client.get(f"/fhir/Binary/{loose}").json()["securityContext"]
    assert context == {"reference": f"DocumentReference/{first}"}
    assert client.get(f"/fhir/Binary/{loose}", headers=token("gp", org=TOURS)).status_code == 404


def test_a_transaction_binds_and_a_deleted_document_hides_its_bytes(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b0b7c1e-0000-4000-8000-000000000001",
                "resource": _document(s["a1"], "urn:uuid:0b0b7c1e-0000-4000-8000-000000000002"),
                "request": {"method": "POST", "url": "DocumentReference"},
            },
            {
                "fullUrl": "urn:uuid:0b0b7c1e-0000-4000-8000-000000000002",
                "resource": binary(REPORT),
                "request": {"method": "POST", "url": "Binary"},
            },
        ],
    }
    response = client.post("/fhir", json=bundle, headers=site)
    assert response.status_code == 200, response.text
    doc_id, bin_id = (
        e["response"]["location"].split("/_history/")[0].split("/")[-1]
        for e in response.json()["entry"]
    )
    context = client.get(f"/fhir/Binary/{bin_id}").json()["securityContext"]
    assert context == {"reference": f"DocumentReference/{doc_id}"}
    romorantin = token("clinician", org=ROMORANTIN)
    assert client.get(f"/fhir/Binary/{bin_id}", headers=romorantin).status_code == 200
    assert client.delete(f"/fhir/DocumentReference/{doc_id}", headers=site).status_code in (
        200,
        204,
    )
    assert client.get(f"/fhir/Binary/{bin_id}", headers=romorantin).status_code == 404


def test_documents_and_binaries_that_name_no_patient_are_hidden(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN)
    bytes_id = _post(client, site, binary(REPORT))
    orphan = _post(client, site, _document(None, f"Binary/{bytes_id}"))
    assert client.get(f"/fhir/Binary/{bytes_id}").json()["securityContext"] == {
        "reference": f"DocumentReference/{orphan}"
    }
    romorantin = token("radiologist", org=ROMORANTIN)
    for ref in (f"DocumentReference/{orphan}", f"Binary/{bytes_id}"):
        assert client.get(f"/fhir/{ref}", headers=romorantin).status_code == 404, ref
        assert client.get(f"/fhir/{ref}").status_code == 200, ref
    # A context is followed as far as it leads (a Binary of a visible Binary is visible), and a
    # loop leads nowhere.
    chained = {**binary(REPORT), "securityContext": {"reference": f"Binary/{s['binary']}"}}
    chained_id = _post(client, site, chained)
    assert client.get(f"/fhir/Binary/{chained_id}", headers=romorantin).status_code == 200
    looped = {**binary(REPORT), "id": "looped", "securityContext": {"reference": "Binary/looped"}}
    assert client.put("/fhir/Binary/looped", json=looped, headers=site).status_code == 201
    assert client.get("/fhir/Binary/looped", headers=romorantin).status_code == 404
    assert client.get("/fhir/Binary/looped").status_code == 200
