"""IHE MHD ITI-65 Provide Document Bundle, accepted: a MADO KOS manifest (DocumentReference +
Binary, with its SubmissionSet) is registered in one transaction, and RIX derives the study's
ImagingStudy from the KOS, pointing at RIX's own DICOMweb Endpoint."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.mhd.support import (
    MADO_PATIENT,
    MHD_LIST_TYPES,
    RIX_ENDPOINT,
    STUDY_101,
    STUDY_102,
    binary,
    kos_bundle,
    kos_bytes,
    manifest_study,
    provide,
    provide_bundle,
    provided,
    put_mado_patient,
    read,
    search,
    sha1_b64,
    study_identifier,
    text_document,
)

# What the KOS manifests reference (study 102's KOS: its CT series and the KOS series itself).
KOS_COUNTS = {STUDY_101: (2, 86), STUDY_102: (2, 21)}
SITE_WADO = "http://example.com/wado"  # the site's WADO-RS base, in the KOS and FHIR manifest


@pytest.fixture
def client(client: TestClient) -> TestClient:
    """The administrator's client, with the MADO Patient registered."""
    put_mado_patient(client)
    return client


def series_counts(study: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Series UID -> (modality code, numberOfInstances)."""
    return {s["uid"]: (s["modality"]["code"], s["numberOfInstances"]) for s in study["series"]}


def test_response_is_a_transaction_response(client: TestClient) -> None:
    response = provide(client, kos_bundle(STUDY_101))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert len(statuses) == 3 and all(s.startswith("201") for s in statuses), statuses
    locations = [e["response"]["location"].split("/")[0] for e in body["entry"]]
    assert locations == ["List", "DocumentReference", "Binary"]


@pytest.mark.parametrize("uid", [STUDY_101, STUDY_102])
def test_list_document_and_binary_are_stored(client: TestClient, uid: str) -> None:
    created = provided(client, kos_bundle(uid))
    (list_id,), (doc_id,), (bin_id,) = (
        created["List"],
        created["DocumentReference"],
        created["Binary"],
    )
    submission = read(client, f"List/{list_id}")
    assert submission["code"]["coding"][0] == {"system": MHD_LIST_TYPES, "code": "submissionset"}
    assert submission["entry"] == [{"item": {"reference": f"DocumentReference/{doc_id}"}}]
    assert submission["subject"] == {"reference": f"Patient/{MADO_PATIENT}"}
    document = read(client, f"DocumentReference/{doc_id}")
    assert document["status"] == "current"
    assert document["subject"]["reference"] == f"Patient/{MADO_PATIENT}"
    assert document["content"][0]["attachment"]["url"] == f"Binary/{bin_id}"
    stored = read(client, f"Binary/{bin_id}")
    assert stored["contentType"] == "application/dicom"
    assert base64.b64decode(stored["data"]) == kos_bytes(uid)


@pytest.mark.parametrize("uid", [STUDY_101, STUDY_102])
def test_kos_creates_its_imaging_study(client: TestClient, uid: str) -> None:
    provided(client, kos_bundle(uid))
    (study,) = search(client, "ImagingStudy", {"identifier": study_identifier(uid)})
    uids = [i["value"] for i in study["identifier"] if i.get("system") == "urn:dicom:uid"]
    assert uids == [f"urn:oid:{uid}"]
    assert study["subject"] == {"reference": f"Patient/{MADO_PATIENT}"}
    assert (study["numberOfSeries"], study["numberOfInstances"]) == KOS_COUNTS[uid]
    assert sum(len(s["instance"]) for s in study["series"]) == KOS_COUNTS[uid][1]


@pytest.mark.parametrize("uid", [STUDY_101, STUDY_102])
def test_imaging_study_matches_the_fhir_manifest(client: TestClient, uid: str) -> None:
    """The KOS and the MADO FHIR manifest of a study describe the same series and instances."""
    provided(client, kos_bundle(uid))
    (study,) = search(client, "ImagingStudy", {"identifier": study_identifier(uid)})
    published = manifest_study(uid)
    assert study["numberOfSeries"] == published["numberOfSeries"]
    assert study["numberOfInstances"] == published["numberOfInstances"]
    assert series_counts(study) == series_counts(published)
    assert {i["uid"] for s in study["series"] for i in s["instance"]} == {
        i["uid"] for s in published["series"] for i in s["instance"]
    }


@pytest.mark.parametrize("uid", [STUDY_101, STUDY_102])
def test_imaging_study_points_at_rix_endpoint(client: TestClient, uid: str) -> None:
    provided(client, kos_bundle(uid))
    (study,) = search(client, "ImagingStudy", {"identifier": study_identifier(uid)})
    (endpoint,) = search(client, "Endpoint", {"identifier": RIX_ENDPOINT})
    assert study["endpoint"] == [{"reference": f"Endpoint/{endpoint['id']}"}]
    assert endpoint["address"].endswith("/dicom-web")
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert SITE_WADO not in json.dumps(study) + json.dumps(endpoint)
    assert [e["id"] for e in search(client, "Endpoint")] == [endpoint["id"]]


def test_both_studies_share_one_rix_endpoint(client: TestClient) -> None:
    provided(client, kos_bundle(STUDY_101))
    provided(client, kos_bundle(STUDY_102))
    studies = search(client, "ImagingStudy")
    (endpoint,) = search(client, "Endpoint")
    assert len(studies) == 2
    assert all(s["endpoint"] == [{"reference": f"Endpoint/{endpoint['id']}"}] for s in studies)


@pytest.mark.parametrize("uid", [STUDY_101, STUDY_102])
def test_document_is_linked_to_its_study(client: TestClient, uid: str) -> None:
    (doc_id,) = provided(client, kos_bundle(uid))["DocumentReference"]
    (study,) = search(client, "ImagingStudy", {"identifier": study_identifier(uid)})
    related = read(client, f"DocumentReference/{doc_id}")["context"]["related"]
    assert {"reference": f"ImagingStudy/{study['id']}"} in related
    assert [
        d["id"]
        for d in search(client, "DocumentReference", {"related": f"ImagingStudy/{study['id']}"})
    ] == [doc_id]


@pytest.mark.parametrize("uid", [STUDY_101, STUDY_102])
def test_size_and_hash_are_filled_in(client: TestClient, uid: str) -> None:
    """The MADO DocumentReferences give neither size nor hash: the Recipient computes them."""
    (doc_id,) = provided(client, kos_bundle(uid))["DocumentReference"]
    attachment = read(client, f"DocumentReference/{doc_id}")["content"][0]["attachment"]
    data = kos_bytes(uid)
    assert attachment["size"] == len(data)
    assert attachment["hash"] == sha1_b64(data)


def test_declared_size_and_hash_are_kept(client: TestClient) -> None:
    data = b"CT head: no acute finding.\n"
    document = text_document()
    document["content"][0]["attachment"].update(size=len(data), hash=sha1_b64(data))
    (doc_id,) = provided(client, provide_bundle([(document, binary(data))]))["DocumentReference"]
    attachment = read(client, f"DocumentReference/{doc_id}")["content"][0]["attachment"]
    assert (attachment["size"], attachment["hash"]) == (len(data), sha1_b64(data))
    assert search(client, "ImagingStudy") == []  # not an imaging manifest


def test_inline_data_is_accepted_without_binary(client: TestClient) -> None:
    data = b"inline report"
    document = text_document()
    document["content"][0]["attachment"]["data"] = base64.b64encode(data).decode()
    (doc_id,) = provided(client, provide_bundle([(document, None)]))["DocumentReference"]
    attachment = read(client, f"DocumentReference/{doc_id}")["content"][0]["attachment"]
    assert (attachment["size"], attachment["hash"]) == (len(data), sha1_b64(data))
