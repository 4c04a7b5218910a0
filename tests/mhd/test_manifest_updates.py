"""A new imaging manifest (KOS) for a study RIX already knows: still one ImagingStudy per Study
Instance UID, updated from the new manifest, and the study's earlier manifest superseded, so
that a search for the study's current manifests finds only the new one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.mhd.support import (
    STUDY_101,
    STUDY_102,
    binary,
    kos_bundle,
    kos_docref,
    provide,
    provide_bundle,
    provided,
    put_mado_patient,
    read,
    revised_kos,
    search,
    study_identifier,
    submission_set,
)


@pytest.fixture
def client(client: TestClient) -> TestClient:
    """The administrator's client, with the MADO Patient registered."""
    put_mado_patient(client)
    return client


def current_manifests(client: TestClient, uid: str) -> list[str]:
    query = {"study-instance-uid": study_identifier(uid), "status": "current"}
    return [d["id"] for d in search(client, "DocumentReference", query)]


@pytest.mark.parametrize("uid", [STUDY_101, STUDY_102])
def test_same_kos_again_keeps_one_study(client: TestClient, uid: str) -> None:
    (first,) = provided(client, kos_bundle(uid))["DocumentReference"]
    (study,) = search(client, "ImagingStudy", {"identifier": study_identifier(uid)})
    (second,) = provided(client, kos_bundle(uid))["DocumentReference"]
    (again,) = search(client, "ImagingStudy", {"identifier": study_identifier(uid)})
    assert again["id"] == study["id"]
    assert len(search(client, "ImagingStudy")) == 1
    assert read(client, f"DocumentReference/{first}")["status"] == "superseded"
    assert read(client, f"DocumentReference/{second}")["status"] == "current"
    assert current_manifests(client, uid) == [second]
    related = read(client, f"DocumentReference/{second}")["context"]["related"]
    assert {"reference": f"ImagingStudy/{study['id']}"} in related


@pytest.mark.parametrize(("uid", "kept"), [(STUDY_101, (1, 36)), (STUDY_102, (1, 1))])
def test_revised_kos_updates_the_study(client: TestClient, uid: str, kept: tuple[int, int]) -> None:
    """The revised manifest references the first series of its evidence only."""
    (first,) = provided(client, kos_bundle(uid))["DocumentReference"]
    (study,) = search(client, "ImagingStudy", {"identifier": study_identifier(uid)})
    bundle = provide_bundle([(kos_docref(uid), binary(revised_kos(uid), "application/dicom"))])
    (second,) = provided(client, bundle)["DocumentReference"]
    (updated,) = search(client, "ImagingStudy")
    assert updated["id"] == study["id"]
    assert int(updated["meta"]["versionId"]) == int(study["meta"]["versionId"]) + 1
    assert (updated["numberOfSeries"], updated["numberOfInstances"]) == kept
    assert len(updated["series"]) == 1
    assert read(client, f"DocumentReference/{first}")["status"] == "superseded"
    assert current_manifests(client, uid) == [second]


def test_manifests_of_two_studies_do_not_supersede_each_other(client: TestClient) -> None:
    (a,) = provided(client, kos_bundle(STUDY_101))["DocumentReference"]
    (b,) = provided(client, kos_bundle(STUDY_102))["DocumentReference"]
    assert len(search(client, "ImagingStudy")) == 2
    assert current_manifests(client, STUDY_101) == [a]
    assert current_manifests(client, STUDY_102) == [b]


def test_kos_of_a_known_study_for_another_patient_is_refused(client: TestClient) -> None:
    """A Study Instance UID names one study of one patient: a manifest that files a known study
    under another patient is refused; the study keeps its patient and its manifest stays
    current (XDS: XDSPatientIdDoesNotMatch)."""
    (first,) = provided(client, kos_bundle(STUDY_101))["DocumentReference"]
    (study,) = search(client, "ImagingStudy")
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "OTHER"}]}
    )
    other = f"Patient/{response.json()['id']}"
    document = {**kos_docref(STUDY_101), "subject": {"reference": other}}
    response = provide(
        client, kos_bundle(STUDY_101, docref=document, submission=submission_set(other))
    )
    assert response.status_code in (400, 409, 422), response.text
    (after,) = search(client, "ImagingStudy")
    assert after["subject"] == study["subject"]
    assert after["meta"]["versionId"] == study["meta"]["versionId"]
    assert read(client, f"DocumentReference/{first}")["status"] == "current"
