"""The FHIRPath subset that search-parameter expressions use, evaluated on resource JSON.

Pure unit tests of app/fhir/fhirpath.py (no database, no HTTP), plus a check that every
expression of the served types' R4 search parameters compiles.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.fhir.fhirpath import (
    UnsupportedExpression,
    compile_path,
    iter_strings,
    reference_type,
)
from app.fhir.registry import SERVED_TYPES
from app.fhir.searchparams import load_definitions


def evaluate(expression: str, resource: dict[str, Any]) -> list[Any]:
    """Compile and evaluate in one go."""
    return compile_path(expression).evaluate(resource)


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "name": [
        {"use": "official", "family": "Dupont", "given": ["Jean", "Pierre"]},
        {"family": "Durand", "given": ["Éléonore"]},
    ],
    "telecom": [
        {"system": "phone", "value": "+33 1 23 45 67 89"},
        {"system": "email", "value": "jp@example.org"},
    ],
    "birthDate": "1970-05-17",
    "deceasedDateTime": "2020-01-01T10:00:00Z",
    "managingOrganization": {"reference": "Organization/o1"},
}


# -- paths ----------------------------------------------------------------------------------------


def test_simple_path() -> None:
    assert evaluate("Patient.birthDate", PATIENT) == ["1970-05-17"]


def test_lists_are_flattened_in_document_order() -> None:
    assert evaluate("Patient.name.family", PATIENT) == ["Dupont", "Durand"]
    assert evaluate("Patient.name.given", PATIENT) == ["Jean", "Pierre", "Éléonore"]


def test_missing_elements_give_nothing() -> None:
    assert evaluate("Patient.address.city", PATIENT) == []
    assert evaluate("Patient.gender", PATIENT) == []


def test_null_values_are_skipped() -> None:
    resource = {"resourceType": "Patient", "name": [{"given": ["A", None]}, None]}
    assert evaluate("Patient.name.given", resource) == ["A"]


def test_path_only_applies_to_its_root_type() -> None:
    assert evaluate("Practitioner.name.family", PATIENT) == []


def test_union_collects_every_alternative_of_the_resource_type() -> None:
    doc = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"value": "m"},
        "identifier": [{"value": "a"}, {"value": "b"}],
    }
    expression = "DocumentReference.masterIdentifier | DocumentReference.identifier"
    assert evaluate(expression, doc) == [{"value": "m"}, {"value": "a"}, {"value": "b"}]


def test_multi_type_union_picks_the_alternative_of_the_resource() -> None:
    expression = "Patient.name | Practitioner.name.family"
    practitioner = {"resourceType": "Practitioner", "name": [{"family": "House"}]}
    assert evaluate(expression, practitioner) == ["House"]
    assert evaluate(expression, PATIENT) == PATIENT["name"]


# -- choice types -------------------------------------------------------------------------------


def test_choice_type_is_found_by_its_base_name() -> None:
    assert evaluate("Patient.deceased", PATIENT) == ["2020-01-01T10:00:00Z"]
    boolean = {"resourceType": "Patient", "deceasedBoolean": False}
    assert evaluate("Patient.deceased", boolean) == [False]


def test_choice_type_does_not_match_a_lowercase_continuation() -> None:
    # `deceasedly` is not a choice of `deceased`: the suffix must be a type name.
    resource = {"resourceType": "Patient", "deceasedly": "x"}
    assert evaluate("Patient.deceased", resource) == []


def test_as_selects_one_type_of_a_choice() -> None:
    assert evaluate("(Patient.deceased as dateTime)", PATIENT) == ["2020-01-01T10:00:00Z"]
    boolean = {"resourceType": "Patient", "deceasedBoolean": True}
    assert evaluate("(Patient.deceased as dateTime)", boolean) == []


def test_exists_and_not_false() -> None:
    expression = "Patient.deceased.exists() and Patient.deceased != false"
    assert evaluate(expression, PATIENT) == [True]
    assert evaluate(expression, {"resourceType": "Patient", "deceasedBoolean": True}) == [True]
    assert evaluate(expression, {"resourceType": "Patient", "deceasedBoolean": False}) == [False]
    assert evaluate(expression, {"resourceType": "Patient"}) == [False]


def test_exists_needs_the_same_path_on_both_sides() -> None:
    with pytest.raises(UnsupportedExpression):
        compile_path("Patient.deceased.exists() and Patient.active != false")


# -- where() --------------------------------------------------------------------------------------


def test_where_field_equals() -> None:
    assert evaluate("Patient.telecom.where(system='email')", PATIENT) == [
        {"system": "email", "value": "jp@example.org"}
    ]
    assert evaluate("Patient.telecom.where(system='fax')", PATIENT) == []


def test_where_resolve_is_filters_references_by_type() -> None:
    study = {
        "resourceType": "ImagingStudy",
        "subject": {"reference": "Patient/p1"},
    }
    group_study = {"resourceType": "ImagingStudy", "subject": {"reference": "Group/g1"}}
    expression = "ImagingStudy.subject.where(resolve() is Patient)"
    assert evaluate(expression, study) == [{"reference": "Patient/p1"}]
    assert evaluate(expression, group_study) == []


def test_where_resolve_is_understands_absolute_and_versioned_references() -> None:
    expression = "Task.for.where(resolve() is Patient)"
    absolute = {"resourceType": "Task", "for": {"reference": "https://x.example/fhir/Patient/1"}}
    versioned = {"resourceType": "Task", "for": {"reference": "Patient/1/_history/3"}}
    logical = {"resourceType": "Task", "for": {"identifier": {"value": "123"}}}
    assert evaluate(expression, absolute) == [absolute["for"]]
    assert evaluate(expression, versioned) == [versioned["for"]]
    assert evaluate(expression, logical) == []


def test_extension_by_url_and_where_on_a_path() -> None:
    """`extension('url')` (PDQm mothersMaidenName, MADO modality) and `where(a.b='v')` (MADO
    accession-number: identifiers typed ACSN)."""
    patient = {
        "resourceType": "Patient",
        "extension": [
            {"url": "http://x/maiden", "valueString": "Durand"},
            {"url": "http://x/other", "valueString": "no"},
        ],
    }
    assert evaluate("Patient.extension('http://x/maiden').value", patient) == ["Durand"]
    acsn = {"type": {"coding": [{"code": "ACSN"}]}, "value": "A1"}
    uid = {"system": "urn:dicom:uid", "value": "urn:oid:1.2"}
    doc = {
        "resourceType": "DocumentReference",
        "context": {"related": [{"identifier": acsn}, {"identifier": uid}]},
    }
    expression = "DocumentReference.context.related.identifier.where(type.coding.code='ACSN')"
    assert evaluate(expression, doc) == [acsn]


# -- unsupported expressions fail at compile time -----------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "Patient.name.first()",
        "Patient.extension(url)",
        "Patient.name.where(use = official)",
        "Patient.telecom.where(system='email' or system='phone')",
        "name.family",
        "Patient.name[0]",
        "Patient.deceased as",
    ],
)
def test_unsupported_expressions_are_refused(expression: str) -> None:
    with pytest.raises(UnsupportedExpression):
        compile_path(expression)


def test_every_search_parameter_of_the_served_types_compiles() -> None:
    definitions = load_definitions()
    compiled = 0
    for type_name in SERVED_TYPES:
        for definition in definitions.get(type_name, []):
            path = compile_path(definition["expression"])
            assert path.evaluate({"resourceType": type_name}) is not None
            compiled += 1
    assert compiled > 100


# -- helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/1", "Patient"),
        ("Patient/1/_history/2", "Patient"),
        ("http://rix.example/fhir/ImagingStudy/abc", "ImagingStudy"),
        ("http://rix.example/fhir/ImagingStudy/abc/_history/1", "ImagingStudy"),
        ("urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", None),
        ("#contained", None),
        ("1", None),
    ],
)
def test_reference_type(reference: str, expected: str | None) -> None:
    assert reference_type(reference) == expected


def test_iter_strings_reads_the_text_parts_of_complex_values() -> None:
    name = {
        "use": "official",
        "text": "Dr Jean Dupont",
        "family": "Dupont",
        "given": ["Jean"],
        "prefix": ["Dr"],
        "period": {"start": "2000-01-01"},
        "extension": [{"url": "http://x", "valueString": "hidden"}],
        "_family": {"extension": [{"url": "http://y", "valueString": "hidden"}]},
        "id": "n1",
    }
    assert sorted(iter_strings([name])) == ["Dr", "Dr Jean Dupont", "Dupont", "Jean"]


def test_iter_strings_reads_address_parts() -> None:
    address = {
        "use": "home",
        "line": ["12 rue de la Paix", "Bât. B"],
        "city": "Paris",
        "postalCode": "75002",
        "country": "France",
    }
    assert list(iter_strings([address, "plain"])) == [
        "12 rue de la Paix",
        "Bât. B",
        "Paris",
        "75002",
        "France",
        "plain",
    ]
