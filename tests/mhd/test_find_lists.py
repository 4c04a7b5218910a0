"""IHE MHD ITI-66 Find Lists: every search parameter of the transaction returns exactly the
SubmissionSets and Folders it should, by GET and by POST `_search`, over the data set of
`register_find_dataset` (tests/mhd/support.py)."""

from __future__ import annotations

import pytest

from tests.mhd.support import (
    LOINC,
    MADO_MRN,
    MADO_PATIENT,
    MARTIN_ID,
    MHD_LIST_TYPES,
    SOURCE_A,
    SOURCE_B,
    Dataset,
    case,
    query_pairs,
    read,
    search_ids,
)

SUBMISSION_SETS = {"SS1", "SS2", "SS3", "SS4"}
MADO_LISTS = {"SS1", "SS2", "F1"}
MARTIN_LISTS = {"SS3", "SS4", "F2"}
MARTIN = f"{MARTIN_ID[0]}|{MARTIN_ID[1]}"

CASES = {
    "code": [
        case(f"code={MHD_LIST_TYPES}|submissionset", SUBMISSION_SETS),
        case("code=folder", "F1", "F2"),
        case(f"code={MHD_LIST_TYPES}|submissionset&patient={{martin}}", "SS3", "SS4"),
    ],
    "date": [
        case("date=2024-03-01", "SS1"),
        case("date=2024-03-02", "SS2", "F1"),
        case("date=lt2024-01-01", MARTIN_LISTS),
        case("date=ge2023-05-11&date=le2023-05-31", "SS4"),
    ],
    "designationType": [
        case(f"designationType={LOINC}|18748-4", "SS1"),
        case("designationType=18782-3", "SS2"),
        case("designationType=51855-5"),
    ],
    "patient": [
        case(f"patient=Patient/{MADO_PATIENT}", MADO_LISTS),
        case("patient=Patient/{martin}", MARTIN_LISTS),
    ],
    "patient.identifier": [
        case(f"patient.identifier={MADO_MRN}", MADO_LISTS),
        case(f"patient.identifier={MARTIN}", MARTIN_LISTS),
    ],
    "source.given": [
        case("source.given=Gerald", "SS2"),
        case("source.given=Claire", "SS3"),
        case("source.given=Sherry", "SS4"),
    ],
    "source.family": [
        case("source.family=Smitty", "SS2"),
        case("source.family=MARTIN", "SS3"),
        case("source.family=Dopplemeyer", "SS4"),
    ],
    "sourceId": [
        case(f"sourceId={SOURCE_A}", "SS1", "SS2"),
        case(f"sourceId={SOURCE_B}", "SS3", "SS4"),
        case("sourceId=urn:oid:1.2.250.1.999.5"),
    ],
    "status": [
        case("status=current", SUBMISSION_SETS, "F1"),
        case("status=retired", "F2"),
        case(f"patient=Patient/{MADO_PATIENT}&code=folder&status=current", "F1"),
    ],
}


def check(dataset: Dataset, query: str, expected: set[str]) -> None:
    params = query_pairs(query, dataset.ids)
    for post in (False, True):
        found = dataset.names(search_ids(dataset.client, "List", params, post=post))
        assert found == expected, f"{'POST _search' if post else 'GET'} ?{query}"


def _params(name: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(("query", "expected"), CASES[name])


@_params("code")
def test_code(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("date")
def test_date(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("designationType")
def test_designation_type(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@pytest.mark.parametrize("name", sorted(SUBMISSION_SETS | {"F1", "F2"}))
def test_identifier(dataset: Dataset, name: str) -> None:
    """Each List is found by each of its identifiers (SubmissionSet uniqueId and entryUUID)."""
    identifiers = read(dataset.client, f"List/{dataset.ids[name]}")["identifier"]
    assert identifiers
    for ident in identifiers:
        check(dataset, f"identifier={ident['system']}|{ident['value']}", {name})
        check(dataset, f"identifier={ident['value']}", {name})


@_params("patient")
def test_patient(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("patient.identifier")
def test_patient_identifier(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("source.given")
def test_source_given(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("source.family")
def test_source_family(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("sourceId")
def test_source_id(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)


@_params("status")
def test_status(dataset: Dataset, query: str, expected: set[str]) -> None:
    check(dataset, query, expected)
