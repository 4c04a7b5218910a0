"""IHE MHD ITI-67 Find Document References: every search parameter of the transaction (and the
MADO imaging ones RIX adds) returns exactly the DocumentReferences it should, by GET and by POST
`_search`, over the data set of `register_find_dataset` (tests/mhd/support.py)."""

from __future__ import annotations

import pytest

from tests.mhd.support import (
    CONFIDENTIALITY,
    DCM,
    FORMAT_CODES,
    KOS_SOP_CLASS,
    LOINC,
    MADO_CATEGORY,
    MADO_MRN,
    MADO_PATIENT,
    MARTIN_ID,
    SNOMED,
    STUDY_101,
    STUDY_102,
    Dataset,
    case,
    query_pairs,
    read,
    search_ids,
    study_identifier,
)

MADO4 = {"kos101", "kos102", "fhir101", "fhir102"}
MADO_DOCS = MADO4 | {"R1"}
MARTIN_DOCS = {"P1", "P2"}
MARTIN = f"{MARTIN_ID[0]}|{MARTIN_ID[1]}"


CASES = {
    "patient": [
        case(f"patient=Patient/{MADO_PATIENT}", MADO_DOCS),
        case("patient=Patient/{martin}", MARTIN_DOCS),
        case("patient={martin}", MARTIN_DOCS),
    ],
    "patient.identifier": [
        case(f"patient.identifier={MADO_MRN}", MADO_DOCS),
        case(f"patient.identifier={MARTIN}", MARTIN_DOCS),
        case("patient.identifier=urn:oid:1.2.250.1.999.3|nobody"),
    ],
    "status": [
        case("status=current", MADO_DOCS, "P2"),
        case("status=superseded", "P1"),
        case("status=current,superseded", MADO_DOCS, MARTIN_DOCS),
        case("patient={martin}&status=current", "P2"),
    ],
    "author.given": [
        case("author.given=Gerald", "R1"),
        case("author.given=Claire", "P1"),
        case("author.given=Sherry", "P2"),
        case("author.given=John"),
    ],
    "author.family": [
        case("author.family=Smitty", "R1"),
        case("author.family=MARTIN", "P1"),
        case("author.family=Dopplemeyer", "P2"),
    ],
    "category": [
        case(f"category={MADO_CATEGORY}", MADO4),
        case(f"category={LOINC}|LP29684-5", "R1"),
        case("category=LP173421-1", MARTIN_DOCS),
    ],
    "creation": [
        case("creation=2026-06-19", MADO4),
        case("creation=ge2024-03-01&creation=lt2024-03-02", "R1"),
        case("creation=lt2024-01-01", MARTIN_DOCS),
        case("creation=2023-05-12", "P2"),
    ],
    "date": [
        case("date=2022-08-22", MADO4),
        case("date=ge2024-01-01", "R1"),
        case("date=2023-05", MARTIN_DOCS),
        case("date=lt2022-01-01"),
    ],
    "event": [
        case(f"event={DCM}|CT", "R1"),
        case("event=MG", MARTIN_DOCS),
    ],
    "facility": [
        case(f"facility={SNOMED}|22232009", "R1"),
        case("facility=225732001", MARTIN_DOCS),
    ],
    "format": [
        case(f"format={KOS_SOP_CLASS}", "kos101", "kos102"),
        case(f"format={FORMAT_CODES}|urn:ihe:rad:MADO:fhir-manifest:2026", "fhir101", "fhir102"),
        case("format=urn:ihe:rad:TEXT", "R1"),
    ],
    "identifier": [
        case("identifier=http://example.org/fhir/document-ids|mado-bundle--2047166866", "fhir101"),
        case("identifier=mado-bundle--2047166865", "fhir102"),
        case("identifier=urn:oid:1.2.250.1.999.4|R1-ext", "R1"),
        case("identifier=P1-ext", "P1"),
    ],
    "period": [
        case("period=2024-02-28", "R1"),
        case("period=2023-05", MARTIN_DOCS),
        # The MADO manifests' periods have a start only: they go on, so later dates overlap.
        case("period=ge2025-01-01", MADO4),
        case("period=lt2022-01-01"),
    ],
    "related": [
        case("related=ImagingStudy/{study101}", "kos101", "R1"),
        case("related=ImagingStudy/{study102}", "kos102"),
    ],
    "security-label": [
        case(f"security-label={CONFIDENTIALITY}|R", "R1"),
        case("security-label=N", MARTIN_DOCS),
    ],
    "setting": [
        case(f"setting={SNOMED}|394914008", "R1"),
        case("setting=394581000", MARTIN_DOCS),
    ],
    "type": [
        case(f"type={LOINC}|18748-4", MADO4),
        case(f"type={LOINC}|18782-3", "R1"),
        case("type=51855-5", MARTIN_DOCS),
    ],
    "accession-number": [
        case("accession-number=1731954284869428", "kos101", "fhir101"),
        case(
            "accession-number=http://example.org/fhir/ris-ids|8529258169397744",
            "kos102",
            "fhir102",
        ),
        case("accession-number=0000"),
    ],
    "study-instance-uid": [
        case(f"study-instance-uid={study_identifier(STUDY_101)}", "kos101", "fhir101"),
        case(f"study-instance-uid={study_identifier(STUDY_102)}", "kos102", "fhir102"),
        case(
            f"study-instance-uid={study_identifier(STUDY_102)}&patient=Patient/{MADO_PATIENT}"
            "&status=current",
            "kos102",
            "fhir102",
        ),
    ],
    "modality": [
        case("modality=CT", MADO4),
        case(f"modality={DCM}|KO", "kos102", "fhir102"),
        case("modality=MR"),
    ],
    "anatomical-region": [
        case(f"anatomical-region={SNOMED}|774007", "fhir101", "fhir102"),
        case(f"anatomical-region={SNOMED}|38266002", "fhir102"),
    ],
}


def check(dataset: Dataset, query: str, expected: set[str]) -> None:
    params = query_pairs(query, dataset.ids)
    for post in (False, True):
        found = dataset.names(search_ids(dataset.client, "DocumentReference", params, post=post))
        assert found == expected, f"{'POST _search' if post else 'GET'} ?{query}"


def _params(name: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(("query", "expected"), CASES[name])


@_params("patient")
def test_patient(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("patient.identifier")
def test_patient_identifier(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("status")
def test_status(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("author.given")
def test_author_given(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("author.family")
def test_author_family(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("category")
def test_category(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("creation")
def test_creation(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("date")
def test_date(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("event")
def test_event(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("facility")
def test_facility(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("format")
def test_format(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("identifier")
def test_identifier(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


def test_identifier_finds_the_master_identifier(dataset: Dataset) -> None:
    """The KOS manifests' uniqueIds were made up for the Bundle: each finds its document."""
    for name in ("kos101", "kos102", "R1", "P2"):
        master = read(dataset.client, f"DocumentReference/{dataset.ids[name]}")["masterIdentifier"]
        check(dataset, f"identifier={master['system']}|{master['value']}", {name})


@_params("period")
def test_period(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("related")
def test_related(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("security-label")
def test_security_label(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("setting")
def test_setting(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("type")
def test_type(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("accession-number")
def test_accession_number(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("study-instance-uid")
def test_study_instance_uid(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("modality")
def test_modality(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("anatomical-region")
def test_anatomical_region(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)
