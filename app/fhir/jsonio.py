"""FHIR JSON in and out, decimals kept exactly as written (FHIR R4 json.html: `1.50` stays
`1.50`; a binary float would make it `1.5`)."""

from __future__ import annotations

from typing import Any

import simplejson


def loads(text: str | bytes) -> Any:
    """Parse FHIR JSON; decimal numbers become `Decimal`s that remember their precision."""
    return simplejson.loads(text, use_decimal=True)


def dumps(value: Any) -> str:
    """Compact FHIR JSON (UTF-8 text, decimals written back as they were read)."""
    return simplejson.dumps(value, use_decimal=True, ensure_ascii=False, separators=(",", ":"))
