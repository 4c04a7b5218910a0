"""Builders and HTTP helpers for the IHE MHD tests (ITI-65 Provide Document Bundle, ITI-66 Find
Lists, ITI-67 Find Document References) over the public IHE MADO examples.

The MADO examples are read in place from shared/conformance (never copied into the project).
URIs are spelled out here, not imported from the application, so that the tests check the
published contract."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydicom.uid import generate_uid

MADO = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "ihe" / "mado"

STUDY_101 = "1.2.250.1.59.40211.22756022.2.1.101"
STUDY_102 = "1.2.250.1.59.40211.22756022.2.1.102"
MADO_PATIENT = "pat-mrn--1097192655"
MADO_MRN = "http://example.org/fhir/mrn-ids|UV59569735"

MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
SOURCE_ID_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
DESIGNATION_TYPE_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
DICOM_UID = "urn:dicom:uid"
KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
RIX_ENDPOINT = "https://fhir.rix.example/sid/endpoint|rix-dicomweb"
IPP_PREFIX = "https://fhir.rix.example/sid/ipp/"
MHD_SD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD."
MINIMAL_PROVIDE = f"{MHD_SD}Minimal.ProvideBundle"
COMPREHENSIVE_PROVIDE = f"{MHD_SD}Comprehensive.ProvideBundle"
UNCONTAINED_PROVIDE = f"{MHD_SD}UnContained.Comprehensive.ProvideBundle"
DOC_IDS = "urn:ietf:rfc:3986"

# The types an ITI-65 Provide Document Bundle writes, and the one a KOS manifest implies.
WRITTEN_TYPES = ("List", "DocumentReference", "Binary", "ImagingStudy", "Endpoint")


def study_identifier(uid: str) -> str:
    """The `study-instance-uid` / ImagingStudy `identifier` token of a Study Instance UID."""
    return f"{DICOM_UID}|urn:oid:{uid}"


# -- the MADO examples ---------------------------------------------------------------------------


@cache
def _mado_file(name: str) -> str:
    return (MADO / name).read_text("utf-8")


def mado(name: str) -> dict[str, Any]:
    """A fresh copy of one MADO example file (parsed JSON)."""
    data: dict[str, Any] = json.loads(_mado_file(name))
    return data


def mado_patient() -> dict[str, Any]:
    return mado(f"mado-{MADO_PATIENT}-patient.json")


def kos_binary(uid: str) -> dict[str, Any]:
    """The KOS manifest of a MADO study as a Binary, without its id."""
    binary = mado(f"mado-kos-{uid}-binary.json")
    binary.pop("id")
    return binary


def kos_bytes(uid: str) -> bytes:
    return base64.b64decode(kos_binary(uid)["data"])


def kos_docref(uid: str) -> dict[str, Any]:
    """The KOS manifest's DocumentReference of a MADO study, without its id, with a fresh
    masterIdentifier (the example has none; MHD requires one)."""
    docref = mado(f"mado-kos-{uid}-docref.json")
    docref.pop("id")
    docref["masterIdentifier"] = new_unique_id()
    return docref


def fhir_docref(uid: str) -> dict[str, Any]:
    """The FHIR-manifest DocumentReference of a MADO study, without its id (its
    masterIdentifier is the example's own)."""
    docref = mado(f"mado-fhir-{uid}-docref.json")
    docref.pop("id")
    return docref


def fhir_manifest(uid: str) -> dict[str, Any]:
    """The FHIR document Bundle (MADO FHIR manifest) of a study."""
    return mado(f"mado-{uid}-bundle.json")


def manifest_study(uid: str) -> dict[str, Any]:
    """The ImagingStudy in a study's FHIR manifest Bundle."""
    return next(
        e["resource"]
        for e in fhir_manifest(uid)["entry"]
        if e["resource"]["resourceType"] == "ImagingStudy"
    )


def fhir_manifest_binary(uid: str) -> dict[str, Any]:
    """The FHIR manifest Bundle as a Binary (application/fhir+json)."""
    return binary(_mado_file(f"mado-{uid}-bundle.json").encode(), "application/fhir+json")


# -- builders --------------------------------------------------------------------------------------


def new_unique_id() -> dict[str, str]:
    """A fresh document uniqueId (XDS: an OID or a UUID, here as a URN)."""
    return {"system": DOC_IDS, "value": f"urn:uuid:{uuid.uuid4()}"}


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def binary(data: bytes, content_type: str = "text/plain") -> dict[str, Any]:
    return {
        "resourceType": "Binary",
        "contentType": content_type,
        "data": base64.b64encode(data).decode("ascii"),
    }


def sha1_b64(data: bytes) -> str:
    """FHIR R4 Attachment.hash: base64 of the SHA-1 of the bytes."""
    return base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def text_document(
    subject: str = f"Patient/{MADO_PATIENT}",
    *,
    content_type: str = "text/plain",
    **fields: Any,
) -> dict[str, Any]:
    """An MHD Minimal DocumentReference (a report), its content to be provided in a Binary of
    the Bundle; `fields` are added or override."""
    docref: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": new_unique_id(),
        "status": "current",
        "type": coding("http://loinc.org", "18782-3"),
        "category": [coding("http://loinc.org", "LP29684-5")],
        "subject": {"reference": subject},
        "date": "2024-03-01T10:00:00+01:00",
        "content": [{"attachment": {"contentType": content_type}}],
    }
    docref.update(fields)
    return docref


def comprehensive_document(
    subject: str = f"Patient/{MADO_PATIENT}", *, contained: bool = True, **fields: Any
) -> dict[str, Any]:
    """A report's DocumentReference with MHD Comprehensive metadata: confidentiality, language,
    creation time, format, facility type, practice setting and source patient info, its author
    and sourcePatientInfo contained (`contained=False`: as references, for UnContained)."""
    author = {"resourceType": "Practitioner", "id": "author", "name": [{"family": "Martin"}]}
    source = {
        "resourceType": "Patient",
        "id": "source",
        "identifier": [{"system": f"{IPP_PREFIX}423", "value": "ROM-1"}],
    }
    docref = text_document(
        subject,
        securityLabel=[coding("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "N")],
        author=[{"reference": "#author" if contained else "Practitioner/author"}],
        context={
            "facilityType": coding("urn:oid:1.2.250.1.213.1.1.4.9", "SA01"),
            "practiceSetting": coding("urn:oid:1.2.250.1.213.1.1.4.10", "ORL"),
            "sourcePatientInfo": {"reference": "#source" if contained else "Patient/source"},
        },
    )
    docref["content"] = [
        {
            "attachment": {
                "contentType": "text/plain",
                "language": "fr-FR",
                "creation": "2024-03-01T09:30:00+01:00",
            },
            "format": {
                "system": "urn:oid:1.3.6.1.4.1.19376.1.2.3",
                "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
            },
        }
    ]
    if contained:
        docref["contained"] = [author, source]
    docref.update(fields)
    return docref


def submission_set(
    subject: str = f"Patient/{MADO_PATIENT}",
    *,
    source_id: str = "urn:oid:1.2.250.1.999.1",
    **fields: Any,
) -> dict[str, Any]:
    """An MHD SubmissionSet List: code submissionset, mode working, sourceId, uniqueId and
    entryUUID identifiers, date, subject; `entry` is filled by `provide_bundle`."""
    lst: dict[str, Any] = {
        "resourceType": "List",
        "extension": [{"url": SOURCE_ID_URL, "valueIdentifier": {"value": source_id}}],
        "identifier": [
            {"use": "official", "system": DOC_IDS, "value": f"urn:oid:2.25.{uuid.uuid4().int}"},
            {"use": "usual", "system": DOC_IDS, "value": urn()},
        ],
        "status": "current",
        "mode": "working",
        "code": coding(MHD_LIST_TYPES, "submissionset"),
        "subject": {"reference": subject},
        "date": "2024-03-01T10:05:00+01:00",
    }
    lst.update(fields)
    return lst


def folder(subject: str = f"Patient/{MADO_PATIENT}", **fields: Any) -> dict[str, Any]:
    """An MHD Folder List; `entry` is filled by `provide_bundle`."""
    lst: dict[str, Any] = {
        "resourceType": "List",
        "identifier": [{"use": "usual", "system": DOC_IDS, "value": urn()}],
        "status": "current",
        "mode": "working",
        "code": coding(MHD_LIST_TYPES, "folder"),
        "subject": {"reference": subject},
        "date": "2024-03-01T10:05:00+01:00",
    }
    lst.update(fields)
    return lst


def revised_kos(uid: str) -> bytes:
    """A new KOS manifest of the same study (a new SOP Instance UID) that keeps only the first
    series of the original's evidence."""
    dataset = pydicom.dcmread(BytesIO(kos_bytes(uid)))
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for study in dataset.CurrentRequestedProcedureEvidenceSequence:
        del study.ReferencedSeriesSequence[1:]
    out = BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def provide_bundle(
    documents: Iterable[tuple[dict[str, Any], dict[str, Any] | None]],
    submission: dict[str, Any] | None = None,
    *,
    folders: Iterable[dict[str, Any]] = (),
    profile: str = MINIMAL_PROVIDE,
) -> dict[str, Any]:
    """An ITI-65 Provide Document Bundle (Minimal metadata unless `profile` says otherwise,
    as the MADO examples carry): a SubmissionSet listing each
    DocumentReference (and Folder), and each document's Binary (when given) that its first
    attachment.url names by its urn:uuid fullUrl; every entry a POST.

    `submission=None` builds a default SubmissionSet; `{}` leaves it out. A SubmissionSet or
    Folder without `entry` lists every document."""
    docs: list[dict[str, Any]] = []
    binaries: list[dict[str, Any]] = []
    for docref, content in documents:
        docref = copy.deepcopy(docref)
        if content is not None:
            bin_url = urn()
            docref["content"][0].setdefault("attachment", {})["url"] = bin_url
            binaries.append(_post(bin_url, content))
        docs.append(_post(urn(), docref))
    doc_items = [{"item": {"reference": e["fullUrl"]}} for e in docs]
    lists = []
    for folder in folders:
        lists.append(_post(urn(), {"entry": doc_items, **copy.deepcopy(folder)}))
    if submission is None:
        submission = submission_set()
    if submission:
        items = doc_items + [{"item": {"reference": e["fullUrl"]}} for e in lists]
        lists.insert(0, _post(urn(), {"entry": items, **copy.deepcopy(submission)}))
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [profile]},
        "type": "transaction",
        "entry": lists + docs + binaries,
    }


def _post(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def kos_bundle(uid: str, docref: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    """An ITI-65 Bundle registering a MADO study's KOS manifest (docref + Binary)."""
    return provide_bundle([(docref or kos_docref(uid), kos_binary(uid))], **kw)


# -- HTTP ----------------------------------------------------------------------------------------


def provide(
    client: TestClient, bundle: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    """ITI-65: POST the Provide Document Bundle to the service base."""
    return client.post(
        "/fhir", json=bundle, headers={"content-type": "application/fhir+json", **(headers or {})}
    )


def provided(
    client: TestClient, bundle: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """ITI-65 that must succeed: the logical ids it created, by type, in entry order."""
    response = provide(client, bundle, headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    out: dict[str, list[str]] = {}
    for entry in body["entry"]:
        assert entry["response"]["status"].startswith("201"), entry
        type_name, id_ = entry["response"]["location"].split("/_history/")[0].split("/")[-2:]
        out.setdefault(type_name, []).append(id_)
    return out


def put_mado_patient(client: TestClient) -> None:
    response = client.put(f"/fhir/Patient/{MADO_PATIENT}", json=mado_patient())
    assert response.status_code in (200, 201), response.text


def read(client: TestClient, ref: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{ref}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def search(
    client: TestClient, type_name: str, params: Any = (), *, post: bool = False
) -> list[dict[str, Any]]:
    """The matches of a search (GET, or POST `_search` with a form body)."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    pairs.append(("_count", "200"))
    if post:
        response = client.post(f"/fhir/{type_name}/_search", data=dict(_group(pairs)))
    else:
        response = client.get(f"/fhir/{type_name}", params=pairs)
    assert response.status_code == 200, f"{type_name}?{pairs}: {response.text}"
    body = response.json()
    assert "next" not in {link["relation"] for link in body.get("link", [])}
    return [e["resource"] for e in body.get("entry", []) if e["search"]["mode"] == "match"]


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def query_pairs(query: str, ids: dict[str, str]) -> list[tuple[str, str]]:
    """`a=1&b=2` with `{name}` placeholders filled in from `ids`, as (key, value) pairs (values
    unescaped: the client encodes them)."""
    out = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        out.append((key, value.format(**ids)))
    return out


def search_ids(
    client: TestClient, type_name: str, params: Any = (), *, post: bool = False
) -> set[str]:
    """The logical ids of a search's matches."""
    return {r["id"] for r in search(client, type_name, params, post=post)}


def counts(client: TestClient) -> dict[str, int]:
    """How many resources of each type an ITI-65 may write (or imply) are stored."""
    return {t: len(search(client, t)) for t in WRITTEN_TYPES}


def issue_expressions(response: Response) -> list[str]:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def issue_codes(response: Response) -> list[str]:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return [issue["code"] for issue in outcome["issue"]]


# -- the ITI-66 / ITI-67 data set ------------------------------------------------------------------


@dataclass
class Dataset:
    """A client on the registered data set, and the logical ids it holds by name."""

    client: TestClient
    ids: dict[str, str]

    def names(self, found: set[str]) -> set[str]:
        """The names of found logical ids (an id the data set does not name stands for itself)."""
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id.get(i, i) for i in found}


SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
FORMAT_CODES = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
MADO_CATEGORY = (
    "http://hl7.eu/fhir/eu-health-data-api/CodeSystem/eehrxf-document-priority-category-cs"
    "|Medical-Imaging"
)
MARTIN_ID = ("urn:oid:1.2.250.1.999.3", "MARTIN-1")
SOURCE_A, SOURCE_B = "urn:oid:1.2.250.1.999.1", "urn:oid:1.2.250.1.999.9"


def _create(client: TestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _report(subject: str, text: bytes, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return text_document(subject, **fields), binary(text)


def register_find_dataset(client: TestClient) -> dict[str, str]:
    """Registers, through ITI-65, what the ITI-66 and ITI-67 tests search; returns logical ids by
    name. Documents: the four MADO manifests of the MADO patient (kos101, kos102, fhir101,
    fhir102) and a report R1 by a Practitioner; for a second patient (Martin) a patient-authored
    note P1, replaced by P2 (P1 becomes superseded). Lists: SubmissionSets SS1 (MADO), SS2 (R1),
    SS3 (P1), SS4 (P2), Folders F1 (with R1) and F2 (retired, with P1)."""
    ids: dict[str, str] = {"mado": MADO_PATIENT}
    put_mado_patient(client)
    ids["martin"] = _create(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": MARTIN_ID[0], "value": MARTIN_ID[1]}],
            "name": [{"family": "MARTIN", "given": ["Claire"]}],
            "gender": "female",
            "birthDate": "1980-01-02",
        },
    )
    for name, family, given in (
        ("smitty", "Smitty", "Gerald"),
        ("sherry", "Dopplemeyer", "Sherry"),
    ):
        ids[name] = _create(
            client,
            {"resourceType": "Practitioner", "name": [{"family": family, "given": [given]}]},
        )
    martin = f"Patient/{ids['martin']}"

    # SS1: the MADO manifests (KOS as DICOM, FHIR manifests as their document Bundles).
    created = provided(
        client,
        provide_bundle(
            [
                (kos_docref(STUDY_101), kos_binary(STUDY_101)),
                (kos_docref(STUDY_102), kos_binary(STUDY_102)),
                (fhir_docref(STUDY_101), fhir_manifest_binary(STUDY_101)),
                (fhir_docref(STUDY_102), fhir_manifest_binary(STUDY_102)),
            ],
            submission_set(
                source_id=SOURCE_A,
                date="2024-03-01T10:05:00+01:00",
                extension=[
                    {"url": SOURCE_ID_URL, "valueIdentifier": {"value": SOURCE_A}},
                    {"url": DESIGNATION_TYPE_URL, "valueCodeableConcept": coding(LOINC, "18748-4")},
                ],
            ),
        ),
    )
    ids["SS1"] = created["List"][0]
    ids.update(
        zip(("kos101", "kos102", "fhir101", "fhir102"), created["DocumentReference"], strict=True)
    )
    for uid in (STUDY_101, STUDY_102):
        (study,) = search(client, "ImagingStudy", {"identifier": study_identifier(uid)})
        ids[f"study{uid[-3:]}"] = study["id"]

    # SS2 + F1: a radiology report by Dr Smitty about study 101.
    created = provided(
        client,
        provide_bundle(
            [
                _report(
                    f"Patient/{MADO_PATIENT}",
                    b"CT head: no acute finding.",
                    identifier=[{"system": "urn:oid:1.2.250.1.999.4", "value": "R1-ext"}],
                    type=coding(LOINC, "18782-3"),
                    category=[coding(LOINC, "LP29684-5")],
                    date="2024-03-01T10:00:00+01:00",
                    author=[{"reference": f"Practitioner/{ids['smitty']}"}],
                    securityLabel=[coding(CONFIDENTIALITY, "R")],
                    content=[
                        {
                            "attachment": {
                                "contentType": "text/plain",
                                "creation": "2024-03-01T09:30:00+01:00",
                            },
                            "format": {"system": FORMAT_CODES, "code": "urn:ihe:rad:TEXT"},
                        }
                    ],
                    context={
                        "event": [coding(DCM, "CT")],
                        "period": {
                            "start": "2024-02-28T08:00:00+01:00",
                            "end": "2024-02-28T09:00:00+01:00",
                        },
                        "facilityType": coding(SNOMED, "22232009"),
                        "practiceSetting": coding(SNOMED, "394914008"),
                        "related": [{"reference": f"ImagingStudy/{ids['study101']}"}],
                    },
                )
            ],
            submission_set(
                source_id=SOURCE_A,
                date="2024-03-02T11:00:00+01:00",
                source={"reference": f"Practitioner/{ids['smitty']}"},
                extension=[
                    {"url": SOURCE_ID_URL, "valueIdentifier": {"value": SOURCE_A}},
                    {"url": DESIGNATION_TYPE_URL, "valueCodeableConcept": coding(LOINC, "18782-3")},
                ],
            ),
            folders=[folder(date="2024-03-02T11:00:00+01:00")],
        ),
    )
    ids["SS2"], ids["F1"] = created["List"]
    (ids["R1"],) = created["DocumentReference"]

    # SS3 + F2: a note the patient Martin wrote herself.
    patient_note: dict[str, Any] = {
        "type": coding(LOINC, "51855-5"),
        "category": [coding(LOINC, "LP173421-1")],
        "securityLabel": [coding(CONFIDENTIALITY, "N")],
        "context": {
            "event": [coding(DCM, "MG")],
            "period": {"start": "2023-05-01", "end": "2023-05-02"},
            "facilityType": coding(SNOMED, "225732001"),
            "practiceSetting": coding(SNOMED, "394581000"),
        },
    }
    created = provided(
        client,
        provide_bundle(
            [
                _report(
                    martin,
                    b"My mammography went fine.",
                    identifier=[{"system": "urn:oid:1.2.250.1.999.4", "value": "P1-ext"}],
                    date="2023-05-10T08:00:00Z",
                    author=[{"reference": martin}],
                    content=[
                        {
                            "attachment": {
                                "contentType": "text/plain",
                                "creation": "2023-05-10T07:00:00Z",
                            }
                        }
                    ],
                    **patient_note,
                )
            ],
            submission_set(
                martin,
                source_id=SOURCE_B,
                date="2023-05-10T08:05:00Z",
                source={"reference": martin},
            ),
            folders=[folder(martin, status="retired", date="2023-05-10T08:05:00Z")],
        ),
    )
    ids["SS3"], ids["F2"] = created["List"]
    (ids["P1"],) = created["DocumentReference"]

    # SS4: P2, a corrected note by Dr Dopplemeyer, replaces P1.
    created = provided(
        client,
        provide_bundle(
            [
                _report(
                    martin,
                    b"Mammography: normal.",
                    date="2023-05-12T08:00:00Z",
                    author=[{"reference": f"Practitioner/{ids['sherry']}"}],
                    relatesTo=[
                        {
                            "code": "replaces",
                            "target": {"reference": f"DocumentReference/{ids['P1']}"},
                        }
                    ],
                    content=[
                        {
                            "attachment": {
                                "contentType": "text/plain",
                                "creation": "2023-05-12T07:00:00Z",
                            }
                        }
                    ],
                    **patient_note,
                )
            ],
            submission_set(
                martin,
                source_id=SOURCE_B,
                date="2023-05-12T08:05:00Z",
                source={"reference": f"Practitioner/{ids['sherry']}"},
            ),
        ),
    )
    (ids["SS4"],) = created["List"]
    (ids["P2"],) = created["DocumentReference"]
    return ids


def case(query: str, *expected: str | set[str]) -> Any:
    """A search test case: the query (`{name}` stands for the logical id of a registered
    resource) and the names of the resources it must find, exactly."""
    names: set[str] = set()
    for item in expected:
        names |= item if isinstance(item, set) else {item}
    return pytest.param(query, names, id=query)
