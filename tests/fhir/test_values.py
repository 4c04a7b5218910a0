"""FHIR primitive values as search sees them: date ranges with precision, numbers, normalisation.

Pure unit tests of app/fhir/values.py (no database, no HTTP).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from app.errors import Invalid
from app.fhir.values import (
    MAX_DATETIME,
    date_range,
    format_instant,
    http_date,
    normalize,
    now_utc,
    number_range,
    parse_search_date,
)

D = datetime

# -- date_range: the [low, high) interval a value denotes, given its precision -----------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("1970", D(1970, 1, 1), D(1971, 1, 1)),
        ("1970-05", D(1970, 5, 1), D(1970, 6, 1)),
        ("1970-12", D(1970, 12, 1), D(1971, 1, 1)),
        ("2024-02", D(2024, 2, 1), D(2024, 3, 1)),
        ("1970-05-17", D(1970, 5, 17), D(1970, 5, 18)),
        ("2024-02-29", D(2024, 2, 29), D(2024, 3, 1)),
        ("1999-12-31", D(1999, 12, 31), D(2000, 1, 1)),
        ("2020-01-01T10:20", D(2020, 1, 1, 10, 20), D(2020, 1, 1, 10, 21)),
        ("2020-01-01T10:20:30", D(2020, 1, 1, 10, 20, 30), D(2020, 1, 1, 10, 20, 31)),
        ("2020-01-01T10:20:30Z", D(2020, 1, 1, 10, 20, 30), D(2020, 1, 1, 10, 20, 31)),
        (
            "2020-01-01T10:20:30.5Z",
            D(2020, 1, 1, 10, 20, 30, 500_000),
            D(2020, 1, 1, 10, 20, 30, 600_000),
        ),
        (
            "2020-01-01T10:20:30.123Z",
            D(2020, 1, 1, 10, 20, 30, 123_000),
            D(2020, 1, 1, 10, 20, 30, 124_000),
        ),
        (
            "2020-01-01T10:20:30.123456Z",
            D(2020, 1, 1, 10, 20, 30, 123_456),
            D(2020, 1, 1, 10, 20, 30, 123_457),
        ),
        ("  2020-01-01 ", D(2020, 1, 1), D(2020, 1, 2)),
    ],
)
def test_date_range_follows_precision(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize(
    ("text", "low"),
    [
        ("2020-01-01T10:00:00+02:00", D(2020, 1, 1, 8)),
        ("2020-01-01T01:00:00+02:00", D(2019, 12, 31, 23)),
        ("2020-01-01T22:30:00-05:00", D(2020, 1, 2, 3, 30)),
        ("2020-01-01T10:00:00+05:30", D(2020, 1, 1, 4, 30)),
        ("2020-01-01T10:00:00+00:00", D(2020, 1, 1, 10)),
        ("2020-01-01T10:00:00Z", D(2020, 1, 1, 10)),
    ],
)
def test_date_range_converts_time_zones_to_utc(text: str, low: datetime) -> None:
    assert date_range(text) == (low, low + timedelta(seconds=1))


def test_same_instant_in_two_time_zones_is_the_same_range() -> None:
    assert date_range("2020-06-01T12:00:00+02:00") == date_range("2020-06-01T05:00:00-05:00")


def test_date_range_results_are_naive() -> None:
    low, high = date_range("2020-01-01T10:00:00+02:00")
    assert low.tzinfo is None and high.tzinfo is None


def test_date_range_of_the_last_year_stays_representable() -> None:
    assert date_range("9999") == (D(9999, 1, 1), MAX_DATETIME)
    assert date_range("9999-12") == (D(9999, 12, 1), MAX_DATETIME)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "70",
        "1970-5",
        "1970-13",
        "1970-00",
        "2023-02-29",
        "1970-05-32",
        "1970/05/01",
        "1970-05-01T25:00:00Z",
        "1970-05-01T10:61:00Z",
        "1970-05-01T10",
        "1970-05-01T10:00:00+2",
        "gt1970",
    ],
)
def test_date_range_rejects_invalid_values(text: str) -> None:
    with pytest.raises(ValueError):
        date_range(text)


def test_parse_search_date_turns_bad_values_into_client_errors() -> None:
    assert parse_search_date("1970", "birthdate") == date_range("1970")
    with pytest.raises(Invalid) as caught:
        parse_search_date("1970-13", "birthdate")
    assert caught.value.status == 400
    assert "birthdate" in caught.value.diagnostics
    assert "1970-13" in caught.value.diagnostics


# -- number_range: implicit precision -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("100", 99.5, 100.5),
        ("100.00", 99.995, 100.005),
        ("0.5", 0.45, 0.55),
        ("-3", -3.5, -2.5),
    ],
)
def test_number_range_follows_significant_figures(text: str, low: float, high: float) -> None:
    got_low, got_high = number_range(text)
    assert got_low == pytest.approx(low)
    assert got_high == pytest.approx(high)


def test_number_range_rejects_non_numbers() -> None:
    with pytest.raises(ValueError):
        number_range("ten")


# -- normalize: case, accents, punctuation ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Éléonore", "eleonore"),
        ("ÉLÉONORE", "eleonore"),
        ("eleonore", "eleonore"),
        ("Jean-Pierre", "jean pierre"),
        ("JEAN  PIERRE", "jean pierre"),
        ("jean_pierre", "jean pierre"),
        ("O'Brien", "o brien"),
        ("O\u2019Brien", "o brien"),
        ("St. Louis, MO", "st louis mo"),
        ("  -Zoë- ", "zoe"),
        ("Straße", "strasse"),
        ("Ærø", "ærø"),
        ("Çağlar Şahin", "caglar sahin"),
        ("ﬁne", "fine"),
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_normalize_makes_prefixes_of_normalised_names_match() -> None:
    # String search is starts-with on normalised values: the search text must normalise to a
    # prefix of the stored name.
    assert normalize("Éléonore Dupont").startswith(normalize("ELEO"))
    assert normalize("Jean-Pierre").startswith(normalize("jean p"))


# -- instants -----------------------------------------------------------------------------------


def test_format_instant_keeps_milliseconds_in_utc() -> None:
    value = D(2024, 1, 2, 3, 4, 5, 678_901)
    assert format_instant(value) == "2024-01-02T03:04:05.678Z"
    assert format_instant(D(2024, 1, 2)) == "2024-01-02T00:00:00.000Z"


def test_formatted_instant_parses_back_to_its_millisecond() -> None:
    value = D(2024, 1, 2, 3, 4, 5, 678_000)
    assert date_range(format_instant(value)) == (value, value + timedelta(milliseconds=1))


def test_http_date() -> None:
    assert http_date(D(2024, 1, 2, 3, 4, 5)) == "Tue, 02 Jan 2024 03:04:05 GMT"


def test_now_utc_is_naive_and_whole_milliseconds() -> None:
    now = now_utc()
    assert now.tzinfo is None
    assert now.microsecond % 1000 == 0
