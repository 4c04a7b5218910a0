"""FHIR primitive values as search sees them: date ranges with precision, normalised strings."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from app.errors import Invalid

MIN_DATETIME = datetime(1, 1, 1)
MAX_DATETIME = datetime(9999, 12, 31, 23, 59, 59)

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _add_months(value: datetime, months: int) -> datetime:
    month = value.month - 1 + months
    return value.replace(year=value.year + month // 12, month=month % 12 + 1)


def date_range(text: str) -> tuple[datetime, datetime]:
    """The [low, high) interval, in naive UTC, that a FHIR date/dateTime/instant denotes.

    `2024` is the whole year, `2024-03` the month, a value to the second is that second.
    Values without a time zone are taken as UTC (the server's local time).
    """
    match = _DATE_RE.match(text.strip())
    if not match:
        raise ValueError(f"not a FHIR date/dateTime: {text!r}")
    g = match.groupdict()
    year = int(g["y"])
    try:
        if g["m"] is None:
            low = datetime(year, 1, 1)
            return low, _add_months(low, 12) if year < 9999 else MAX_DATETIME
        month = int(g["m"])
        if g["d"] is None:
            low = datetime(year, month, 1)
            return low, _add_months(low, 1) if (year, month) < (9999, 12) else MAX_DATETIME
        day = int(g["d"])
        if g["H"] is None:
            low = datetime(year, month, day)
            return low, low + timedelta(days=1)
        low = datetime(year, month, day, int(g["H"]), int(g["M"]), int(g["S"] or 0))
        if g["f"]:
            low = low.replace(microsecond=int(float(g["f"]) * 1_000_000))
        if g["tz"] and g["tz"] != "Z":
            sign = 1 if g["tz"][0] == "+" else -1
            hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
            low -= sign * timedelta(hours=hours, minutes=minutes)
        if g["f"]:
            step = timedelta(microseconds=10 ** (6 - min(len(g["f"]) - 1, 6)))
        elif g["S"] is not None:
            step = timedelta(seconds=1)
        else:
            step = timedelta(minutes=1)
        return low, low + step
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid date: {text!r}") from exc


def parse_search_date(text: str, param: str) -> tuple[datetime, datetime]:
    """date_range for a search value; a bad value is the client's error."""
    try:
        return date_range(text)
    except ValueError as exc:
        raise Invalid(f"Invalid date '{text}' for search parameter '{param}'") from exc


def number_range(text: str) -> tuple[float, float]:
    """The interval a decimal denotes given its precision: 100 is [99.5, 100.5)."""
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {text!r}") from exc
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return float(value - half), float(value + half)


_PUNCT = re.compile(r"[\s\-_'\u2019.,]+")


def normalize(text: str) -> str:
    """Case-, accent- and punctuation-insensitive form used by string search.

    `Éléonore` -> `eleonore`; `Jean-Pierre` and `JEAN  PIERRE` -> `jean pierre`.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _PUNCT.sub(" ", stripped.casefold()).strip()


def now_utc() -> datetime:
    """The current time as naive UTC, at the millisecond (the precision FHIR instants keep)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_instant(value: datetime) -> str:
    """A naive UTC datetime as a FHIR instant (`2024-01-02T03:04:05.678Z`)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def http_date(value: datetime) -> str:
    """A naive UTC datetime as an RFC 9110 HTTP-date (Last-Modified)."""
    return value.replace(tzinfo=UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
