"""What identity matching compares in a Patient (pure functions): normalised names, the INS and
its FR Core identity status, day/month transposition, edit distance, and `compare`."""

from __future__ import annotations

from typing import Any

import pytest

from app.identity.traits import (
    compare,
    edit_distance,
    identity_status,
    parse_names,
    same_name_and_birth,
    traits_of,
    transposed,
)
from tests.identity.support import (
    INS_DEMO,
    INS_NIR,
    INS_TEST,
    ipp,
    patient,
    reliability,
)


def person(
    family: str = "DUPONT", given: str = "Jean", birth: str | None = "1970-03-04", **kw: Any
) -> Any:
    """The traits of a Romorantin Patient."""
    return traits_of("p", patient("423", "x", family, given, birth, **kw))


# -- normalisation ---------------------------------------------------------------------------


def test_names_ignore_case_accents_hyphens_and_extra_spaces() -> None:
    traits = traits_of(
        "p", {"name": [{"family": "  Éléonore-DUPONT ", "given": ["Jean-Pierre", "Marie"]}]}
    )
    assert traits.names == frozenset({("eleonore dupont", "jean pierre marie")})


def test_every_name_counts_including_the_birth_name() -> None:
    traits = traits_of(
        "p",
        {
            "name": [
                {"use": "official", "family": "Martin", "given": ["Anne"]},
                {"use": "maiden", "family": "Lefèvre", "given": ["Anne"]},
            ]
        },
    )
    assert traits.names == frozenset({("martin", "anne"), ("lefevre", "anne")})


def test_names_key_round_trips() -> None:
    traits = traits_of(
        "p", {"name": [{"family": "Martin", "given": ["Anne"]}, {"family": "Lefèvre"}]}
    )
    assert parse_names(traits.names_key) == traits.names
    assert parse_names("") == frozenset()


def test_identifier_systems_are_collected() -> None:
    traits = person(ins="1234567890123", status="VALI")
    assert traits.systems == frozenset({ipp("423"), INS_TEST})


# -- INS and identity status -------------------------------------------------------------------


@pytest.mark.parametrize("status", ["VALI", "QUAL"])
def test_validated_or_qualified_ins_is_trusted(status: str) -> None:
    traits = person(ins="1234567890123", status=status)
    assert traits.ins == f"{INS_TEST}|1234567890123"
    assert traits.ins_trusted


@pytest.mark.parametrize("status", ["PROV", "RECUP", None])
def test_provisional_recovered_or_unqualified_ins_is_not_trusted(status: str | None) -> None:
    traits = person(ins="1234567890123", status=status)
    assert traits.ins == f"{INS_TEST}|1234567890123"
    assert not traits.ins_trusted


@pytest.mark.parametrize("system", [INS_NIR, INS_TEST, INS_DEMO])
def test_production_test_and_demo_ins_oids_are_ins(system: str) -> None:
    assert person(ins="1234567890123", status="QUAL", ins_system=system).ins_trusted


def test_a_qualified_status_without_ins_trusts_nothing() -> None:
    traits = person(status="QUAL")
    assert traits.ins is None
    assert not traits.ins_trusted


def test_identity_status_from_value_coding() -> None:
    assert identity_status({"extension": [reliability("QUAL")]}) == "QUAL"


def test_identity_status_in_any_case() -> None:
    assert identity_status({"extension": [reliability("vali")]}) == "VALI"


def test_identity_status_absent_or_in_another_extension() -> None:
    assert identity_status({}) is None
    other = {
        "url": "https://example.org/other",
        "extension": [{"url": "identityStatus", "valueCoding": {"code": "VALI"}}],
    }
    assert identity_status({"extension": [other]}) is None


# -- transposition and edit distance -----------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "swapped"),
    [
        ("1970-03-04", "1970-04-03"),
        ("1970-12-01", "1970-01-12"),
        ("1970-03-13", None),  # day 13 cannot be a month
        ("1970-03-03", None),  # nothing to swap
        ("1970-03", None),
        ("", None),
        (None, None),
    ],
)
def test_transposed(birth: str | None, swapped: str | None) -> None:
    assert transposed(birth) == swapped


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("dupont", "dupont", 0),
        ("dupont", "dupond", 1),  # substitution
        ("dupont", "dupon", 1),  # deletion
        ("martin", "matrin", 1),  # adjacent transposition counts once
        ("kitten", "sitting", 3),
        ("", "abc", 3),
        ("abc", "", 3),
    ],
)
def test_edit_distance(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


# -- compare -----------------------------------------------------------------------------------


def test_same_name_and_birth_date_is_the_strongest_resemblance() -> None:
    found = compare(person(), person(given="JEAN"))
    assert found is not None
    assert found[1] == pytest.approx(0.9)


def test_same_first_given_name_is_the_same_name() -> None:
    found = compare(person(given="Jean"), person(given="Jean Marie"))
    assert found is not None
    assert found[1] == pytest.approx(0.9)


def test_close_spelling_with_the_same_birth_date() -> None:
    found = compare(person(family="DUPONT"), person(family="DUPOND"))
    assert found is not None
    assert found[1] == pytest.approx(0.7)


def test_long_names_tolerate_two_typos_short_names_one() -> None:
    assert compare(person(family="BERTRANDE"), person(family="BETRANDI")) is not None
    assert compare(person(family="DUPONT"), person(family="DUPONS")) is not None
    assert compare(person(family="DUPONT"), person(family="DUPAND")) is None


def test_day_and_month_transposed() -> None:
    found = compare(person(birth="1970-03-04"), person(birth="1970-04-03"))
    assert found is not None
    assert "transposed" in found[0]
    assert found[1] == pytest.approx(0.6)


def test_different_birth_dates_never_compare() -> None:
    assert compare(person(birth="1970-03-04"), person(birth="1971-03-04")) is None


def test_different_names_never_compare() -> None:
    assert compare(person(family="DUPONT"), person(family="MARTIN")) is None
    assert compare(person(given="Jean"), person(given="Paul")) is None


def test_records_without_birth_date_never_compare() -> None:
    """`compare` documents that only records with the same (or transposed) birth date
    compare; a missing birth date is neither (BUG: two records without a birth date, or one
    born on the 13th..31st against one without a birth date, come back as 'day and month of
    birth transposed', because transposed(None) == None)."""
    assert compare(person(birth=None), person(birth=None)) is None
    assert compare(person(birth="1970-03-13"), person(birth=None)) is None


def test_same_name_and_birth_needs_a_birth_date() -> None:
    assert same_name_and_birth(person(), person(given="JEAN"))
    assert not same_name_and_birth(person(birth=None), person(birth=None))
    assert not same_name_and_birth(person(), person(family="DUPOND"))
