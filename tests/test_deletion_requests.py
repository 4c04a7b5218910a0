"""Patients' deletion requests (FHIR Task `task-code#deletion-request`): who may file and decide
one, what it removes (the study, its reports and manifests, their bytes, every earlier version),
that nothing of the exam can be reached afterwards by any path, the receipt, the IHE IOCM
rejection note (a KOS titled from DICOM PS3.16 CID 7011), and the refusals that change nothing.

The scene is the care-relationship one (tests/test_care_relationship.py): Agathe LENOIR is `a1`
at CH Romorantin (site 423), which registered a study and its report (ITI-65, with its Binary);
Tours (site 401) has its own patient `b1` and study. The IOCM tests use a MADO study registered
through its KOS manifest (tests/mhd/support.py)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, tuple_

from app.config import Settings
from app.storage.tables import INDEX_TABLES, RESOURCE, VERSION
from tests.conftest import Token
from tests.identity.support import ROMORANTIN, TOURS, document, study
from tests.imaging.test_kos import _assert_dciodvfy_clean
from tests.mhd.support import (
    MADO_PATIENT,
    STUDY_101,
    binary,
    kos_bundle,
    kos_bytes,
    provide_bundle,
    provided,
    put_mado_patient,
    submission_set,
    text_document,
)
from tests.test_care_relationship import REPORT, _ids, _link_at_tours, _report, _scene
from tests.test_consent_enforcement import ACSN_TYPE, _accession_study, opposition, record

TASK_CODE = "https://fhir.rix.example/CodeSystem/task-code"
RECEIPT = "https://fhir.rix.example/CodeSystem/deletion-receipt"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
AGATHE_UID = "1.2.250.423.1"


# -- builders and helpers -------------------------------------------------------------------------


def request(focus: str, patient_id: str, **fields: Any) -> dict[str, Any]:
    """A deletion request as a site or the DPO files it."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "deletion-request"}]},
        "focus": {"reference": focus},
        "for": {"reference": f"Patient/{patient_id}"},
        "note": [{"text": "Opposition patient au partage régional"}],
    }
    task.update(fields)
    return task


def file(client: TestClient, task: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    response = client.post("/fhir/Task", json=task, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def current(client: TestClient, task_id: str) -> dict[str, Any]:
    response = client.get(f"/fhir/Task/{task_id}")
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


def decide(
    client: TestClient, task_id: str, headers: dict[str, str], status: str, **fields: Any
) -> Any:
    """The DPO (or an admin) updates the request's status."""
    task = current(client, task_id)
    task.pop("meta")
    task.update(status=status, **fields)
    return client.put(f"/fhir/Task/{task_id}", json=task, headers=headers)


def outputs(task: dict[str, Any], code: str) -> list[Any]:
    """The values of the receipt's outputs of one type."""
    found = []
    for output in task.get("output", []):
        if output["type"]["coding"][0] == {"system": RECEIPT, "code": code}:
            found.append(next(v for k, v in output.items() if k.startswith("value")))
    return found


def tasks(client: TestClient) -> set[str]:
    return _ids(client.get("/fhir/Task", params={"code": f"{TASK_CODE}|deletion-request"}))


def _refused(response: Any, status: int, text: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert text in response.text, response.text
    return outcome


@pytest.fixture
def auto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """RIX_DELETION_APPROVAL=auto: a request is carried out when it is filed."""
    monkeypatch.setenv("RIX_DELETION_APPROVAL", "auto")
    yield


def _stored_rows(settings: Settings, refs: list[str]) -> tuple[list[Any], int]:
    """The history rows of these resources, and how many search-index rows they still have."""
    keys = [tuple(r.split("/")) for r in refs]
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(
                select(VERSION.c.resource_type, VERSION.c.version_id, VERSION.c.content).where(
                    tuple_(VERSION.c.resource_type, VERSION.c.resource_id).in_(keys)
                )
            ).all()
            pks = conn.execute(
                select(RESOURCE.c.pk).where(
                    tuple_(RESOURCE.c.resource_type, RESOURCE.c.resource_id).in_(keys)
                )
            ).scalars()
            pk_list = list(pks)
            indexed = sum(
                len(conn.execute(select(t.c.id).where(t.c.resource_pk.in_(pk_list))).all())
                for t in INDEX_TABLES.values()
            )
            text_left = conn.execute(
                select(VERSION.c.resource_type).where(VERSION.c.content.contains("lesion"))
            ).all()
    finally:
        engine.dispose()
    return [*versions, *[("leak", 0, row[0]) for row in text_left]], indexed


# -- the whole journey (approval by the DPO) ------------------------------------------------------


def test_a_request_waits_for_the_dpo_then_nothing_of_the_exam_remains(
    client: TestClient, token: Token, settings: Settings
) -> None:
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN)
    dpo = token("dpo", sub="dpo-1", name="Dr Delegue")
    task = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), site)
    assert task["status"] == "requested"
    # Waiting: the exam is still shared, nothing happened.
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 200
    assert client.get(f"/fhir/DocumentReference/{s['document']}").status_code == 200

    accepted = decide(client, task["id"], dpo, "accepted")
    assert accepted.status_code == 200, accepted.text
    done = current(client, task["id"])
    assert done["status"] == "completed"

    # The receipt: identifiers and ids, when, who approved; never the report's content.
    assert outputs(done, "study-instance-uid") == [
        {"system": "urn:dicom:uid", "value": f"urn:oid:{AGATHE_UID}"}
    ]
    removed = {v["reference"] for v in outputs(done, "removed")}
    assert removed == {
        f"ImagingStudy/{s['study']}",
        f"DocumentReference/{s['document']}",
        f"Binary/{s['binary']}",
    }
    assert outputs(done, "removed-at") and outputs(done, "erased-versions")[0] >= 4
    assert outputs(done, "approved-by") == ["Dr Delegue (dpo-1, dpo)"]
    assert outputs(done, "rejection-note") == []  # the study lists no instance: nothing to reject
    assert REPORT.decode()[:20] not in str(done)

    _assert_gone(client, token, s, removed)
    # The submission set that listed the report stays (it holds no content), its entry dangling.
    assert client.get(f"/fhir/List/{s['list']}").status_code == 200
    # Tours' own data is untouched.
    assert client.get(f"/fhir/ImagingStudy/{s['tours_study']}").status_code == 200

    # In the database: history rows without content, no index rows, the text nowhere.
    rows, indexed = _stored_rows(settings, sorted(removed))
    assert rows and all(content is None for _, _, content in rows), rows
    assert indexed == 0

    # Audited: BALP Delete events naming Agathe, for the study, the report and its bytes.
    events = client.get(
        "/fhir/AuditEvent", params={"patient": f"Patient/{s['a1']}", "action": "D"}
    ).json()
    deleted = {
        e["what"]["reference"].split("/_history")[0]
        for entry in events.get("entry", [])
        for e in entry["resource"].get("entity", [])
        if "what" in e and "reference" in e["what"]
    }
    assert removed | {f"Patient/{s['a1']}"} <= deleted


def _assert_gone(client: TestClient, token: Token, s: dict[str, str], removed: set[str]) -> None:
    """No path gives anything of the exam back, to the administrator or to the producing site."""
    admin = token("admin")
    romorantin = token("radiologist", org=ROMORANTIN)
    for headers in (admin, romorantin):
        for ref in removed:
            assert client.get(f"/fhir/{ref}", headers=headers).status_code in (404, 410), ref
            for version in (1, 2):
                vread = client.get(f"/fhir/{ref}/_history/{version}", headers=headers)
                assert vread.status_code in (404, 410), (ref, version)
            history = client.get(f"/fhir/{ref}/_history", headers=headers)
            if history.status_code == 200:
                assert all("resource" not in e for e in history.json().get("entry", [])), ref
            else:
                assert history.status_code == 404, ref
    assert client.get(f"/fhir/ImagingStudy/{s['study']}/_history/1").status_code == 410
    for type_name, criteria in [
        ("ImagingStudy", {"patient": f"Patient/{s['a1']}"}),
        ("ImagingStudy", {"identifier": f"urn:dicom:uid|urn:oid:{AGATHE_UID}"}),
        ("ImagingStudy", {"_id": s["study"]}),
        ("DocumentReference", {"patient": f"Patient/{s['a1']}"}),
        ("DocumentReference", {"related": f"ImagingStudy/{s['study']}"}),
        ("DocumentReference", {"_id": s["document"]}),
        ("Binary", {"_id": s["binary"]}),
    ]:
        for headers in (admin, romorantin):
            found = client.get(f"/fhir/{type_name}", params=criteria, headers=headers)
            assert _ids(found) == set(), (type_name, criteria)
    includes = [
        ("Patient", {"_id": s["a1"], "_revinclude": "ImagingStudy:patient"}),
        ("Patient", {"_id": s["a1"], "_revinclude": "DocumentReference:subject"}),
        ("List", {"_id": s["list"], "_include": "List:item"}),
        ("Task", {"focus": f"ImagingStudy/{s['study']}", "_include": "Task:focus"}),
    ]
    for type_name, criteria in includes:
        found = client.get(f"/fhir/{type_name}", params=criteria)
        assert not (_ids(found, "include") & removed), (type_name, criteria)
    type_history = client.get("/fhir/DocumentReference/_history", params={"_count": "100"})
    for entry in type_history.json().get("entry", []):
        if f"DocumentReference/{s['document']}" in entry["fullUrl"]:
            assert "resource" not in entry
    for headers in (admin, romorantin):
        priors = client.get(f"/fhir/Patient/{s['a1']}/$priors", headers=headers)
        assert _ids(priors) == set() and _ids(priors, "include") == set()
        document = client.get(
            f"/fhir/Binary/{s['binary']}", headers={**headers, "Accept": "text/plain"}
        )
        assert document.status_code in (404, 410) and REPORT not in document.content
        kos = client.get(f"/fhir/ImagingStudy/{s['study']}/$kos", headers=headers)
        assert kos.status_code in (404, 410)


# -- automatic approval ---------------------------------------------------------------------------


@pytest.mark.usefixtures("auto")
def test_with_automatic_approval_the_request_is_carried_out_when_filed(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN, sub="ris-423", name="RIS Romorantin")
    task = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), site)
    assert task["status"] == "completed"  # the answer to the POST is the Task as it ends
    done = current(client, task["id"])
    assert done == task
    assert done["status"] == "completed"
    assert done["meta"]["versionId"] == "2"  # filed, then completed: one transaction
    assert "automatic" in outputs(done, "approved-by")[0]
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 410
    assert client.get(f"/fhir/DocumentReference/{s['document']}").status_code == 410
    # A closed request never changes.
    again = decide(client, task["id"], token("admin"), "requested")
    _refused(again, 422, "a closed request never changes")


# -- the IOCM rejection note ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "title"),
    [
        (None, ("113039", "Data Retention Policy Expired")),
        (
            {"coding": [{"system": DCM, "code": "113037"}], "text": "wrong patient"},
            ("113037", "Rejected for Patient Safety Reasons"),
        ),
    ],
    ids=["retention", "patient-safety"],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.filterwarnings("ignore:The value length")
def test_the_rejection_note_references_every_instance_of_the_study(
    client: TestClient,
    token: Token,
    tmp_path: Path,
    reason: dict[str, Any] | None,
    title: tuple[str, str],
) -> None:
    put_mado_patient(client)
    created = provided(client, kos_bundle(STUDY_101))
    manifest_doc = created["DocumentReference"][0]
    manifest_bin = created["Binary"][0]
    (study_id,) = _ids(client.get("/fhir/ImagingStudy"))
    study_id = study_id.split("/")[1]
    report = provided(
        client,
        provide_bundle(
            [
                (
                    text_document(context={"related": [{"reference": f"ImagingStudy/{study_id}"}]}),
                    binary(REPORT),
                )
            ]
        ),
    )
    fields = {"reasonCode": reason} if reason else {}
    task = file(client, request(f"ImagingStudy/{study_id}", MADO_PATIENT, **fields), token("admin"))
    assert decide(client, task["id"], token("admin"), "accepted").status_code == 200
    done = current(client, task["id"])
    assert done["status"] == "completed"
    removed = {v["reference"] for v in outputs(done, "removed")}
    assert {
        f"ImagingStudy/{study_id}",
        f"DocumentReference/{manifest_doc}",
        f"Binary/{manifest_bin}",
        f"DocumentReference/{report['DocumentReference'][0]}",
        f"Binary/{report['Binary'][0]}",
    } <= removed
    assert outputs(done, "rejection-reason")[0]["code"] == title[0]

    (note_ref,) = outputs(done, "rejection-note")
    note = client.get(f"/fhir/{note_ref['reference']}", headers={"Accept": "application/dicom"})
    assert note.status_code == 200 and note.headers["content-type"] == "application/dicom"
    resource = client.get(f"/fhir/{note_ref['reference']}").json()
    assert resource["securityContext"] == {"reference": f"Task/{task['id']}"}

    ds = pydicom.dcmread(BytesIO(note.content))
    original = pydicom.dcmread(BytesIO(kos_bytes(STUDY_101)))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert ds.SOPInstanceUID != original.SOPInstanceUID
    concept = ds.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning) == (
        title[0],
        "DCM",
        title[1],
    )
    assert ds.StudyInstanceUID == STUDY_101
    assert ds.SeriesInstanceUID not in {
        s.SeriesInstanceUID
        for e in original.CurrentRequestedProcedureEvidenceSequence
        for s in e.ReferencedSeriesSequence
    }
    assert str(ds.PatientID) == str(original.PatientID)
    assert _instances(ds) == _instances(original)
    content = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in ds.ContentSequence}
    assert content == {uid for _, uid in _instances(original)}
    assert "StudyDescription" not in ds  # identification only, nothing of the exam's content
    _assert_dciodvfy_clean(note.content, tmp_path)

    # The manifest and the study are gone from every XDS-I path.
    assert client.get(f"/fhir/ImagingStudy/{study_id}/$kos").status_code == 410
    manifest = client.get(f"/fhir/Binary/{manifest_bin}", headers={"Accept": "application/dicom"})
    assert manifest.status_code == 410
    by_uid = client.get(
        "/fhir/DocumentReference",
        params={"study-instance-uid": f"urn:dicom:uid|urn:oid:{STUDY_101}"},
    )
    assert _ids(by_uid) == set()


def _instances(ds: Any) -> set[tuple[str, str]]:
    return {
        (str(series.SeriesInstanceUID), str(sop.ReferencedSOPInstanceUID))
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }


# -- a document as focus --------------------------------------------------------------------------


@pytest.mark.usefixtures("auto")
def test_a_report_as_focus_takes_its_whole_exam(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN)
    task = file(client, request(f"DocumentReference/{s['document']}", s["a1"]), site)
    removed = {v["reference"] for v in outputs(current(client, task["id"]), "removed")}
    assert f"ImagingStudy/{s['study']}" in removed
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 410


@pytest.mark.usefixtures("auto")
def test_a_document_about_no_study_goes_alone(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    alone = document(client, token, ROMORANTIN, s["a1"])
    site = token("site-system", org=ROMORANTIN)
    task = file(client, request(f"DocumentReference/{alone}", s["a1"]), site)
    done = current(client, task["id"])
    assert {v["reference"] for v in outputs(done, "removed")} == {f"DocumentReference/{alone}"}
    assert outputs(done, "study-instance-uid") == [] and outputs(done, "rejection-note") == []
    assert client.get(f"/fhir/DocumentReference/{alone}").status_code == 410
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 200


# -- rejection, withdrawal ------------------------------------------------------------------------


def test_a_rejection_says_why_and_changes_nothing(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    dpo = token("dpo")
    task = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), token("registry"))
    _refused(decide(client, task["id"], dpo, "rejected"), 422, "statusReason is required")
    assert current(client, task["id"])["status"] == "requested"
    reason = {"text": "Exam needed for an ongoing treatment; the patient was told"}
    assert decide(client, task["id"], dpo, "rejected", statusReason=reason).status_code == 200
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 200
    assert client.get(f"/fhir/Binary/{s['binary']}").status_code == 200
    _refused(decide(client, task["id"], dpo, "accepted"), 422, "a closed request never changes")
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 200


def test_the_filer_may_withdraw_a_waiting_request(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN)
    task = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), site)
    assert decide(client, task["id"], site, "cancelled").status_code == 200
    _refused(decide(client, task["id"], token("dpo"), "accepted"), 422, "closed request")
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 200


# -- who may --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "dpo", "registry", "site-system"])
def test_these_roles_may_file_a_request(client: TestClient, token: Token, role: str) -> None:
    s = _scene(client, token)
    headers = token(role, org=ROMORANTIN if role == "site-system" else None)
    task = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), headers)
    assert task["status"] == "requested"


@pytest.mark.parametrize("role", ["radiologist", "clinician", "gp", "identity-officer", "patient"])
def test_other_roles_may_not(client: TestClient, token: Token, role: str) -> None:
    s = _scene(client, token)
    headers = token(role, org=ROMORANTIN, patient=s["a1"] if role == "patient" else None)
    response = client.post(
        "/fhir/Task", json=request(f"ImagingStudy/{s['study']}", s["a1"]), headers=headers
    )
    _refused(response, 403, "may not create Task")
    assert tasks(client) == set()


def test_a_site_removes_only_its_own_patients_exams(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    t7 = _link_at_tours(client, token)  # Agathe is Tours' patient too
    tours = token("site-system", org=TOURS)
    for patient_id in (s["a1"], t7):
        response = client.post(
            "/fhir/Task", json=request(f"ImagingStudy/{s['study']}", patient_id), headers=tours
        )
        _refused(response, 403, "not known in your site's namespace")
    assert tasks(client) == set()


@pytest.mark.parametrize("role", ["site-system", "registry", "identity-officer"])
def test_only_an_admin_or_the_dpo_decides(client: TestClient, token: Token, role: str) -> None:
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN)
    task = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), site)
    headers = token(role, org=ROMORANTIN if role == "site-system" else None)
    _refused(decide(client, task["id"], headers, "accepted"), 403, "may not accept")
    assert current(client, task["id"])["status"] == "requested"
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 200
    # Only RIX completes a request.
    _refused(decide(client, task["id"], token("admin"), "completed"), 422, "RIX alone completes")


# -- refusals that change nothing -----------------------------------------------------------------


def _bad_requests(s: dict[str, str]) -> list[Any]:
    study_ref = f"ImagingStudy/{s['study']}"
    return [
        pytest.param(request("ImagingStudy/no-such-study", s["a1"]), "is not known", id="unknown"),
        pytest.param(request(f"Patient/{s['a1']}", s["a1"]), "the exam", id="not-an-exam"),
        pytest.param(request("https://x/ImagingStudy/1", s["a1"]), "the exam", id="absolute"),
        pytest.param(request(study_ref, s["b1"]), "is not about Patient", id="other-patient"),
        pytest.param(request(study_ref, s["a1"], intent="plan"), "intent", id="intent"),
        pytest.param(request(study_ref, s["a1"], status="completed"), "status", id="status"),
        pytest.param(
            request(study_ref, s["a1"], reasonCode={"coding": [{"system": DCM, "code": "113001"}]}),
            "not a reason for a patient's deletion request",
            id="quality-reason",
        ),
    ]


@pytest.mark.parametrize(
    "case",
    ["unknown", "not-an-exam", "absolute", "other-patient", "intent", "status", "quality-reason"],
)
def test_a_bad_request_is_refused(client: TestClient, token: Token, case: str) -> None:
    s = _scene(client, token)
    param = next(p for p in _bad_requests(s) if p.id == case)
    task, text = param.values
    response = client.post("/fhir/Task", json=task, headers=token("admin"))
    outcome = _refused(response, 422, text)
    assert outcome["issue"][0]["expression"][0].startswith("Task.")
    assert tasks(client) == set()
    assert client.get(f"/fhir/ImagingStudy/{s['study']}").status_code == 200


def test_what_is_already_deleted_cannot_be_deleted_again(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN)
    assert client.delete(f"/fhir/ImagingStudy/{s['study']}", headers=site).status_code in (200, 204)
    response = client.post(
        "/fhir/Task", json=request(f"ImagingStudy/{s['study']}", s["a1"]), headers=site
    )
    _refused(response, 422, "has already been deleted")
    assert tasks(client) == set()


def test_a_second_open_request_for_the_same_exam_is_refused(
    client: TestClient, token: Token
) -> None:
    s = _scene(client, token)
    first = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), token("registry"))
    response = client.post(
        "/fhir/Task", json=request(f"ImagingStudy/{s['study']}", s["a1"]), headers=token("dpo")
    )
    _refused(response, 422, f"open deletion request (Task/{first['id']})")
    assert tasks(client) == {f"Task/{first['id']}"}


def test_an_exam_hidden_from_the_requester_is_answered_like_an_unknown_one(
    client: TestClient, token: Token
) -> None:
    """Agathe opposed regional sharing: the DPO does not see her exams, so cannot name one;
    the producing site, which still sees them, can."""
    s = _scene(client, token)
    record(client, token, opposition(s["a1"], emergency=False))
    dpo = token("dpo")
    hidden = client.post(
        "/fhir/Task", json=request(f"ImagingStudy/{s['study']}", s["a1"]), headers=dpo
    )
    missing = client.post("/fhir/Task", json=request("ImagingStudy/nope", s["a1"]), headers=dpo)
    assert hidden.status_code == missing.status_code == 422
    assert hidden.json()["issue"][0]["diagnostics"].replace(s["study"], "X") == (
        missing.json()["issue"][0]["diagnostics"].replace("nope", "X")
    )
    site = token("site-system", org=ROMORANTIN)
    task = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), site)
    # The DPO decides on the request without seeing the exam itself.
    assert decide(client, task["id"], dpo, "accepted").status_code == 200
    assert current(client, task["id"])["status"] == "completed"
    romorantin = token("radiologist", org=ROMORANTIN)
    assert client.get(f"/fhir/ImagingStudy/{s['study']}", headers=romorantin).status_code in (
        404,
        410,
    )


def test_an_approval_that_cannot_be_carried_out_changes_nothing(
    client: TestClient, token: Token
) -> None:
    """The site deleted the study meanwhile: the approval fails whole, the report stays."""
    s = _scene(client, token)
    site = token("site-system", org=ROMORANTIN)
    task = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), site)
    assert client.delete(f"/fhir/ImagingStudy/{s['study']}", headers=site).status_code in (200, 204)
    _refused(decide(client, task["id"], token("dpo"), "accepted"), 422, "already been deleted")
    assert current(client, task["id"])["status"] == "requested"
    assert client.get(f"/fhir/DocumentReference/{s['document']}").status_code == 200
    assert client.get(f"/fhir/ImagingStudy/{s['study']}/_history/1").status_code == 200


def test_a_report_of_another_site_about_the_exam_goes_with_it(
    client: TestClient, token: Token
) -> None:
    """Tours' second reading of Agathe's Romorantin study (her Tours record) is about the exam."""
    s = _scene(client, token)
    t7 = _link_at_tours(client, token)
    second = _report(client, token, TOURS, t7, s["study"])
    other = study(client, token, ROMORANTIN, s["a1"], "1.2.250.423.2")
    unrelated = _report(client, token, ROMORANTIN, s["a1"], other)
    task = file(
        client, request(f"ImagingStudy/{s['study']}", s["a1"]), token("site-system", org="423")
    )
    assert decide(client, task["id"], token("admin"), "accepted").status_code == 200
    removed = {v["reference"] for v in outputs(current(client, task["id"]), "removed")}
    assert f"DocumentReference/{second['DocumentReference']}" in removed
    assert f"Binary/{second['Binary']}" in removed
    assert f"DocumentReference/{unrelated['DocumentReference']}" not in removed
    assert (
        client.get(f"/fhir/DocumentReference/{unrelated['DocumentReference']}").status_code == 200
    )
    assert client.get(f"/fhir/ImagingStudy/{other}").status_code == 200


def test_a_report_naming_the_study_by_uid_only_goes_too(client: TestClient, token: Token) -> None:
    s = _scene(client, token)
    subject = f"Patient/{s['a1']}"
    by_uid = text_document(
        subject,
        context={
            "related": [
                {
                    "type": "ImagingStudy",
                    "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{AGATHE_UID}"},
                }
            ]
        },
    )
    created = provided(
        client,
        provide_bundle([(by_uid, binary(b"CR: second look"))], submission_set(subject)),
        token("site-system", org=ROMORANTIN),
    )
    task = file(client, request(f"ImagingStudy/{s['study']}", s["a1"]), token("admin"))
    assert decide(client, task["id"], token("dpo"), "accepted").status_code == 200
    removed = {v["reference"] for v in outputs(current(client, task["id"]), "removed")}
    assert f"DocumentReference/{created['DocumentReference'][0]}" in removed
    assert f"Binary/{created['Binary'][0]}" in removed
    assert base64.b64encode(b"CR: second look").decode() not in str(
        client.get("/fhir/Task", params={"_id": task["id"]}).json()
    )


def test_a_report_naming_the_accession_goes_within_the_same_person(
    client: TestClient, token: Token
) -> None:
    """Accession numbers are a site's, not the region's: a report naming the same number goes
    only when it is about the same person (and the same issuer, when both give one)."""
    s = _scene(client, token)
    exam = _accession_study(client, token, s["a1"])
    ours = text_document(
        f"Patient/{s['a1']}",
        context={"related": [{"identifier": {"type": ACSN_TYPE, "value": "A26-000042"}}]},
    )
    theirs = text_document(
        f"Patient/{s['b1']}",
        context={"related": [{"identifier": {"type": ACSN_TYPE, "value": "A26-000042"}}]},
    )
    mine = provided(
        client,
        provide_bundle([(ours, binary(b"CR"))], submission_set(f"Patient/{s['a1']}")),
        token("site-system", org=ROMORANTIN),
    )
    other = provided(
        client,
        provide_bundle([(theirs, binary(b"CR Tours"))], submission_set(f"Patient/{s['b1']}")),
        token("site-system", org=TOURS),
    )
    task = file(client, request(f"ImagingStudy/{exam}", s["a1"]), token("dpo"))
    assert decide(client, task["id"], token("dpo"), "accepted").status_code == 200
    done = current(client, task["id"])
    removed = {v["reference"] for v in outputs(done, "removed")}
    assert f"DocumentReference/{mine['DocumentReference'][0]}" in removed
    assert f"DocumentReference/{other['DocumentReference'][0]}" not in removed
    assert outputs(done, "accession-number") == [
        {
            "type": ACSN_TYPE,
            "system": "https://fhir.rix.example/sid/accession/423",
            "value": "A26-000042",
        }
    ]
    assert client.get(f"/fhir/DocumentReference/{other['DocumentReference'][0]}").status_code == 200
