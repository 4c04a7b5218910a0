"""Search indexer: turns a resource's JSON into typed index rows, driven by its search params."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from app.fhir.fhirpath import iter_strings
from app.fhir.registry import ResourceDefinition
from app.fhir.values import MAX_DATETIME, MIN_DATETIME, date_range, normalize

Row = dict[str, Any]
_MAX_TEXT = 1000
# Narrower index columns (PostgreSQL enforces widths): longer values are clipped to fit.
_WIDTHS = {"system": 512, "code": 512, "identifier_system": 512, "identifier_value": 512}
_MAX_ID = 64


def clip(column: str, value: str) -> str:
    """`value` cut to the width of its index column; search values are cut alike, so very
    long values compare on their first characters (512 for codes, 1000 for text)."""
    return value[: _WIDTHS.get(column, _MAX_TEXT)]


def _tokens(nodes: Iterable[Any], code: str) -> Iterator[Row]:
    for node in nodes:
        if isinstance(node, bool):
            yield {"param": code, "system": None, "code": "true" if node else "false"}
        elif isinstance(node, str | int | float):
            yield {"param": code, "system": None, "code": str(node)}
        elif isinstance(node, dict):
            if "coding" in node or ("text" in node and "value" not in node):
                text = node.get("text")
                for coding in node.get("coding") or []:
                    yield {
                        "param": code,
                        "system": coding.get("system"),
                        "code": coding.get("code"),
                        "text": normalize(coding.get("display") or text or "") or None,
                    }
                if text and not node.get("coding"):
                    yield {"param": code, "system": None, "code": None, "text": normalize(text)}
            elif "value" in node:  # Identifier, ContactPoint
                value = node.get("value")
                type_text = (node.get("type") or {}).get("text")
                yield {
                    "param": code,
                    "system": node.get("system"),
                    "code": value,
                    "text": normalize(type_text) if type_text else None,
                }
                for coding in (node.get("type") or {}).get("coding") or []:
                    yield {
                        "param": f"{code}:of-type",
                        "system": f"{coding.get('system') or ''}|{coding.get('code') or ''}",
                        "code": value,
                    }
            elif "code" in node:  # Coding
                yield {
                    "param": code,
                    "system": node.get("system"),
                    "code": node.get("code"),
                    "text": normalize(node.get("display") or "") or None,
                }


def _strings(nodes: Iterable[Any], code: str) -> Iterator[Row]:
    seen: set[str] = set()
    for text in iter_strings(nodes):
        if text in seen:
            continue
        seen.add(text)
        yield {"param": code, "value": normalize(text), "exact": text}


def _dates(nodes: Iterable[Any], code: str) -> Iterator[Row]:
    for node in nodes:
        try:
            if isinstance(node, str):
                low, high = date_range(node)
            elif isinstance(node, dict) and ("start" in node or "end" in node):
                low = date_range(node["start"])[0] if node.get("start") else MIN_DATETIME
                high = date_range(node["end"])[1] if node.get("end") else MAX_DATETIME
            elif isinstance(node, dict) and "event" in node:  # Timing
                yield from _dates(node["event"], code)
                continue
            else:
                continue
        except ValueError:
            continue
        yield {"param": code, "low": low, "high": high}


def _references(nodes: Iterable[Any], code: str) -> Iterator[Row]:
    for node in nodes:
        if isinstance(node, str):  # canonical
            yield {"param": code, "url": node}
            continue
        if not isinstance(node, dict):
            continue
        row: Row = {"param": code}
        reference = node.get("reference")
        if isinstance(reference, str) and not reference.startswith("#"):
            target_type, target_id = split_local_reference(reference)
            if target_type:
                row.update(target_type=target_type, target_id=target_id)
            else:
                row["url"] = reference
        identifier = node.get("identifier")
        if isinstance(identifier, dict) and identifier.get("value"):
            row.update(
                identifier_system=identifier.get("system"), identifier_value=identifier["value"]
            )
        if len(row) > 1:
            yield row


def split_local_reference(reference: str) -> tuple[str | None, str | None]:
    """`Patient/1` or `Patient/1/_history/2` -> (Patient, 1); anything else -> (None, None)."""
    parts = reference.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    # A type or id longer than FHIR allows names no local resource: keep it as a URL.
    if (
        len(parts) == 2
        and parts[0][:1].isupper()
        and parts[0].isalnum()
        and 0 < len(parts[1]) <= _MAX_ID
        and len(parts[0]) <= _MAX_ID
    ):
        return parts[0], parts[1]
    return None, None


def _uris(nodes: Iterable[Any], code: str) -> Iterator[Row]:
    for node in nodes:
        if isinstance(node, str):
            yield {"param": code, "value": node}


def _numbers(nodes: Iterable[Any], code: str) -> Iterator[Row]:
    for node in nodes:
        if isinstance(node, int | float | Decimal) and not isinstance(node, bool):
            yield {"param": code, "low": float(node), "high": float(node)}


_EXTRACTORS = {
    "token": _tokens,
    "string": _strings,
    "date": _dates,
    "reference": _references,
    "uri": _uris,
    "number": _numbers,
}


def index_rows(definition: ResourceDefinition, resource: dict[str, Any]) -> dict[str, list[Row]]:
    """The index rows of `resource`, by search type, without resource_pk/resource_type."""
    out: dict[str, list[Row]] = {t: [] for t in _EXTRACTORS}
    for param in definition.params.values():
        if param.path is None:
            continue
        nodes = param.path.evaluate(resource)
        if not nodes:
            continue
        seen: set[tuple[tuple[str, Any], ...]] = set()
        for row in _EXTRACTORS[param.type](nodes, param.code):
            for key, value in row.items():
                if isinstance(value, str) and key != "param":
                    row[key] = clip(key, value)
            identity = tuple(sorted(row.items()))
            if identity not in seen:
                seen.add(identity)
                out[param.type].append(row)
    return out
