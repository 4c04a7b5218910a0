"""IHE MHD ITI-65 Provide Document Bundle, refused: a Bundle that breaks MHD's rules is refused
whole (400 for missing or invalid metadata, 422 for a size, hash or uniqueId conflict, 403 for a
site writing for another site's patient), with an OperationOutcome naming each problem, and
nothing of it is stored."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from tests.conftest import Token
from tests.mhd.support import (
    COMPREHENSIVE_PROVIDE,
    DESIGNATION_TYPE_URL,
    IPP_PREFIX,
    STUDY_101,
    STUDY_102,
    UNCONTAINED_PROVIDE,
    WRITTEN_TYPES,
    binary,
    coding,
    comprehensive_document,
    counts,
    issue_codes,
    issue_expressions,
    kos_bundle,
    kos_docref,
    provide,
    provide_bundle,
    provided,
    put_mado_patient,
    sha1_b64,
    submission_set,
    text_document,
    urn,
)

NOTHING = dict.fromkeys(WRITTEN_TYPES, 0)
SS = "Bundle.entry[0].resource"  # provide_bundle puts the SubmissionSet first, then documents
DOC = "Bundle.entry[1].resource"


@pytest.fixture
def client(client: TestClient) -> TestClient:
    """The administrator's client, with the MADO Patient registered."""
    put_mado_patient(client)
    return client


def refused(
    client: TestClient, bundle: dict[str, Any], status: int | tuple[int, ...], **kw: Any
) -> Any:
    """POST the Bundle, check the refusal's status (one of them) and that nothing was stored."""
    before = counts(client)
    response = provide(client, bundle, **kw)
    expected = status if isinstance(status, tuple) else (status,)
    assert response.status_code in expected, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert counts(client) == before
    return response


# -- the SubmissionSet -----------------------------------------------------------------------------


def two_submission_sets() -> dict[str, Any]:
    bundle = kos_bundle(STUDY_101)
    second = copy.deepcopy(bundle["entry"][0])
    second["fullUrl"] = urn()
    second["resource"]["identifier"][0]["value"] += ".2"
    bundle["entry"].append(second)
    return bundle


def without_date() -> dict[str, Any]:
    submission = submission_set()
    del submission["date"]
    return kos_bundle(STUDY_101, submission=submission)


SUBMISSION_SET_CASES = [
    pytest.param(lambda: kos_bundle(STUDY_101, submission={}), "Bundle.entry", id="none"),
    pytest.param(two_submission_sets, "Bundle.entry", id="two"),
    pytest.param(
        lambda: kos_bundle(STUDY_101, submission=submission_set(extension=[])),
        f"{SS}.extension",
        id="no-sourceId",
    ),
    pytest.param(
        lambda: kos_bundle(STUDY_101, submission=submission_set(mode="snapshot")),
        f"{SS}.mode",
        id="mode-snapshot",
    ),
    pytest.param(without_date, f"{SS}.date", id="no-date"),
    pytest.param(
        lambda: kos_bundle(STUDY_101, submission=submission_set(entry=[])),
        f"{SS}.entry",
        id="no-entry",
    ),
]


@pytest.mark.parametrize(("build", "expression"), SUBMISSION_SET_CASES)
def test_submission_set_problems_are_refused(
    client: TestClient, build: Callable[[], dict[str, Any]], expression: str
) -> None:
    response = refused(client, build(), 400)
    assert expression in issue_expressions(response)
    assert counts(client) == NOTHING


# -- the DocumentReference -------------------------------------------------------------------------

REQUIRED = ("masterIdentifier", "type", "category", "subject", "date", "content")


@pytest.mark.parametrize("field", REQUIRED)
def test_document_missing_required_metadata_is_refused(client: TestClient, field: str) -> None:
    document = kos_docref(STUDY_101)
    del document[field]
    bundle = provide_bundle([(document, None if field == "content" else binary(b"x"))])
    response = refused(client, bundle, 400)
    assert f"{DOC}.{field}" in issue_expressions(response)
    assert counts(client) == NOTHING


def test_every_missing_element_is_named(client: TestClient) -> None:
    document = kos_docref(STUDY_101)
    for field in REQUIRED:
        del document[field]
    response = refused(client, provide_bundle([(document, None)]), 400)
    assert set(issue_expressions(response)) >= {f"{DOC}.{field}" for field in REQUIRED}
    assert counts(client) == NOTHING


@pytest.mark.parametrize("status", ["superseded", "entered-in-error"])
def test_document_not_current_is_refused(client: TestClient, status: str) -> None:
    document = {**kos_docref(STUDY_101), "status": status}
    response = refused(client, kos_bundle(STUDY_101, docref=document), 400)
    assert f"{DOC}.status" in issue_expressions(response)
    assert counts(client) == NOTHING


def test_document_whose_content_is_missing_is_refused(client: TestClient) -> None:
    """The attachment names a Binary that the Bundle does not carry."""
    document = text_document()
    document["content"][0]["attachment"]["url"] = urn()
    response = refused(client, provide_bundle([(document, None)]), 400)
    assert f"{DOC}.content[0].attachment.url" in issue_expressions(response)
    assert counts(client) == NOTHING


def test_wrong_size_is_refused(client: TestClient) -> None:
    data = b"CT head: no acute finding."
    document = text_document()
    document["content"][0]["attachment"]["size"] = len(data) + 1
    response = refused(client, provide_bundle([(document, binary(data))]), 422)
    assert f"{DOC}.content[0].attachment.size" in issue_expressions(response)
    assert counts(client) == NOTHING


def test_wrong_hash_is_refused(client: TestClient) -> None:
    data = b"CT head: no acute finding."
    document = text_document()
    document["content"][0]["attachment"]["hash"] = sha1_b64(data + b".")
    response = refused(client, provide_bundle([(document, binary(data))]), 422)
    assert f"{DOC}.content[0].attachment.hash" in issue_expressions(response)
    assert counts(client) == NOTHING


# -- Comprehensive metadata (the Document Recipient's Comprehensive Metadata Option) -------------

REPORT = b"CT head: no acute finding."


def comprehensive_submission(**fields: Any) -> dict[str, Any]:
    designation = {
        "url": DESIGNATION_TYPE_URL,
        "valueCodeableConcept": coding("http://loinc.org", "18748-4"),
    }
    extension = [*submission_set()["extension"], designation]
    return submission_set(extension=extension, **fields)


def comprehensive(document: dict[str, Any], profile: str = COMPREHENSIVE_PROVIDE, **kw: Any) -> Any:
    kw.setdefault("submission", comprehensive_submission())
    return provide_bundle([(document, binary(REPORT))], profile=profile, **kw)


@pytest.mark.parametrize(
    ("document", "profile"),
    [
        pytest.param(comprehensive_document, COMPREHENSIVE_PROVIDE, id="contained"),
        pytest.param(
            lambda: comprehensive_document(contained=False), UNCONTAINED_PROVIDE, id="uncontained"
        ),
    ],
)
def test_comprehensive_metadata_is_accepted(
    client: TestClient, document: Callable[[], dict[str, Any]], profile: str
) -> None:
    ids = provided(client, comprehensive(document(), profile))
    assert len(ids["DocumentReference"]) == 1


COMPREHENSIVE_GAPS = [
    ("securityLabel", f"{DOC}.securityLabel"),
    ("language", f"{DOC}.content[0].attachment.language"),
    ("creation", f"{DOC}.content[0].attachment.creation"),
    ("format", f"{DOC}.content[0].format"),
    ("facilityType", f"{DOC}.context.facilityType"),
    ("practiceSetting", f"{DOC}.context.practiceSetting"),
    ("sourcePatientInfo", f"{DOC}.context.sourcePatientInfo"),
]


def _without(document: dict[str, Any], field: str) -> dict[str, Any]:
    content = document["content"][0]
    for holder in (document, document["context"], content, content["attachment"]):
        holder.pop(field, None)
    return document


@pytest.mark.parametrize(("field", "expression"), COMPREHENSIVE_GAPS)
@pytest.mark.parametrize("profile", [COMPREHENSIVE_PROVIDE, UNCONTAINED_PROVIDE])
def test_comprehensive_bundle_missing_metadata_is_refused(
    client: TestClient, field: str, expression: str, profile: str
) -> None:
    document = _without(comprehensive_document(contained=profile == COMPREHENSIVE_PROVIDE), field)
    response = refused(client, comprehensive(document, profile), 400)
    assert expression in issue_expressions(response)
    assert counts(client) == NOTHING


def test_minimal_bundle_needs_no_comprehensive_metadata(client: TestClient) -> None:
    """The same gaps are fine where the Bundle declares Minimal metadata."""
    document = text_document()
    assert "securityLabel" not in document and "context" not in document
    assert (
        len(provided(client, provide_bundle([(document, binary(REPORT))]))["DocumentReference"])
        == 1
    )


@pytest.mark.parametrize(
    ("field", "expression"),
    [
        ("author", f"{DOC}.author[0]"),
        ("sourcePatientInfo", f"{DOC}.context.sourcePatientInfo"),
    ],
)
def test_comprehensive_references_must_be_contained(
    client: TestClient, field: str, expression: str
) -> None:
    """Comprehensive (not UnContained): author and sourcePatientInfo are contained resources."""
    document = comprehensive_document()
    if field == "author":
        document["author"] = [{"reference": "Practitioner/elsewhere"}]
    else:
        document["contained"] = document["contained"][:1]  # #source is no longer there
    response = refused(client, comprehensive(document), 400)
    assert expression in issue_expressions(response)
    assert counts(client) == NOTHING


@pytest.mark.parametrize("missing", ["subject", "designationType"])
def test_comprehensive_submission_set_gaps_are_refused(client: TestClient, missing: str) -> None:
    submission = comprehensive_submission()
    if missing == "subject":
        del submission["subject"]
        expression = f"{SS}.subject"
    else:
        submission["extension"] = submission["extension"][:1]
        expression = f"{SS}.extension"
    response = refused(client, comprehensive(comprehensive_document(), submission=submission), 400)
    assert expression in issue_expressions(response)
    assert counts(client) == NOTHING


# -- one submission, one patient, every document listed ------------------------------------------


def other_patient(client: TestClient) -> str:
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "OTHER"}]}
    )
    assert response.status_code == 201, response.text
    return f"Patient/{response.json()['id']}"


def test_submission_set_of_another_patient_is_refused(client: TestClient) -> None:
    """A submission is about one patient: the SubmissionSet's subject is its documents'
    (XDS XDSPatientIdDoesNotMatch, NIST XDS test 11997)."""
    bundle = provide_bundle(
        [(text_document(), binary(b"report"))], submission_set(other_patient(client))
    )
    refused(client, bundle, (400, 422))
    assert counts(client) == NOTHING


def test_documents_of_two_patients_in_one_submission_are_refused(client: TestClient) -> None:
    documents = [
        (text_document(), binary(b"mine")),
        (text_document(other_patient(client)), binary(b"theirs")),
    ]
    refused(client, provide_bundle(documents), (400, 422))
    assert counts(client) == NOTHING


def test_document_left_out_of_the_submission_set_is_refused(client: TestClient) -> None:
    """SubmissionSet.entry lists every DocumentReference of the submission (XDS: each
    DocumentEntry is a member of its SubmissionSet)."""
    documents = [(text_document(), binary(b"listed")), (text_document(), binary(b"not listed"))]
    bundle = provide_bundle(documents)
    bundle["entry"][0]["resource"]["entry"] = bundle["entry"][0]["resource"]["entry"][:1]
    refused(client, bundle, (400, 422))
    assert counts(client) == NOTHING


# -- the KOS manifest ------------------------------------------------------------------------------


def test_kos_that_is_not_dicom_is_refused(client: TestClient) -> None:
    not_dicom = binary(b"this is no DICOM file", "application/dicom")
    response = refused(client, provide_bundle([(kos_docref(STUDY_101), not_dicom)]), 400)
    assert "DICOM" in response.json()["issue"][0]["diagnostics"]
    assert counts(client) == NOTHING


def test_dicom_that_is_not_a_kos_is_refused(client: TestClient) -> None:
    ct_image = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    bundle = provide_bundle([(kos_docref(STUDY_101), binary(ct_image, "application/dicom"))])
    response = refused(client, bundle, 400)
    assert "Key Object Selection" in response.json()["issue"][0]["diagnostics"]
    assert counts(client) == NOTHING


# -- uniqueId --------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", [STUDY_101, STUDY_102])
def test_duplicate_master_identifier_is_refused(client: TestClient, uid: str) -> None:
    """XDS: a uniqueId names one document (XDSDuplicateUniqueIdInRegistry)."""
    first = kos_docref(uid)
    provided(client, kos_bundle(uid, docref=first))
    again = {**kos_docref(uid), "masterIdentifier": first["masterIdentifier"]}
    response = refused(client, kos_bundle(uid, docref=again), 422)
    assert "duplicate" in issue_codes(response)


def test_duplicate_master_identifier_of_another_kind_of_document_is_refused(
    client: TestClient,
) -> None:
    first = kos_docref(STUDY_101)
    provided(client, kos_bundle(STUDY_101, docref=first))
    report = text_document(masterIdentifier=first["masterIdentifier"])
    response = refused(client, provide_bundle([(report, binary(b"report"))]), 422)
    assert "duplicate" in issue_codes(response)


def test_duplicate_master_identifier_within_one_bundle_is_refused(client: TestClient) -> None:
    unique = text_document()["masterIdentifier"]
    documents = [
        (text_document(masterIdentifier=unique), binary(b"one")),
        (text_document(masterIdentifier=unique), binary(b"two")),
    ]
    response = refused(client, provide_bundle(documents), 422)
    assert "duplicate" in issue_codes(response)
    assert counts(client) == NOTHING


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda m: {"use": "official", **m}, id="with-use"),
        pytest.param(lambda m: {"value": m["value"]}, id="without-system"),
    ],
)
def test_same_unique_id_written_differently_is_a_duplicate(
    client: TestClient, variant: Callable[[dict[str, str]], dict[str, str]]
) -> None:
    """The XDS uniqueId is masterIdentifier.value (system urn:ietf:rfc:3986): the same value
    with an Identifier.use added, or the system left out, is still the same uniqueId."""
    first = text_document()
    provided(client, provide_bundle([(first, binary(b"first"))]))
    again = text_document(masterIdentifier=variant(first["masterIdentifier"]))
    response = refused(client, provide_bundle([(again, binary(b"second"))]), 422)
    assert "duplicate" in issue_codes(response)


# -- organisation boundaries -----------------------------------------------------------------------


def site_patient(client: TestClient, site: str, value: str) -> str:
    """A Patient known at `site` (its IPP), registered by an administrator."""
    response = client.post(
        "/fhir/Patient",
        json={
            "resourceType": "Patient",
            "identifier": [{"system": f"{IPP_PREFIX}{site}", "value": value}],
            "name": [{"family": "DURAND", "given": ["Paul"]}],
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def site_bundle(patient_id: str) -> dict[str, Any]:
    subject = f"Patient/{patient_id}"
    document = {**kos_docref(STUDY_101), "subject": {"reference": subject}}
    return kos_bundle(STUDY_101, docref=document, submission=submission_set(subject))


def test_site_may_not_provide_for_another_sites_patient(client: TestClient, token: Token) -> None:
    other = site_patient(client, "401", "IPP-401-1")
    refused(client, site_bundle(other), 403, headers=token("site-system", org="423"))
    assert counts(client) == NOTHING


def test_site_may_not_provide_for_a_patient_of_no_site(client: TestClient, token: Token) -> None:
    """The MADO Patient is known in no site's namespace."""
    refused(client, kos_bundle(STUDY_101), 403, headers=token("site-system", org="423"))
    assert counts(client) == NOTHING


def test_site_provides_for_its_own_patient(client: TestClient, token: Token) -> None:
    own = site_patient(client, "423", "IPP-423-1")
    created = provided(client, site_bundle(own), headers=token("site-system", org="423"))
    assert [len(created[t]) for t in ("List", "DocumentReference", "Binary")] == [1, 1, 1]
