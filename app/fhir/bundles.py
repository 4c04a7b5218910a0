"""Bundle and OperationOutcome builders (FHIR R4 Bundle, search paging links)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from app.errors import Issue
from app.fhir.values import format_instant, now_utc

RIX_CANONICAL = "https://fhir.rix.example"
REQUEST_ID_EXTENSION = f"{RIX_CANONICAL}/StructureDefinition/request-id"


def operation_outcome(issues: list[Issue], request_id: str | None = None) -> dict[str, Any]:
    """An OperationOutcome for `issues`, carrying the request's correlation id."""
    outcome: dict[str, Any] = {"resourceType": "OperationOutcome"}
    if request_id:
        outcome["extension"] = [{"url": REQUEST_ID_EXTENSION, "valueString": request_id}]
    outcome["issue"] = [
        {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
            **({"expression": issue.expression} if issue.expression else {}),
        }
        for issue in issues
    ]
    return outcome


def information(text: str, request_id: str | None = None) -> dict[str, Any]:
    """An informational OperationOutcome (Prefer: return=OperationOutcome, deletes)."""
    return operation_outcome([Issue("informational", text, severity="information")], request_id)


def url_with(base: str, pairs: list[tuple[str, str]]) -> str:
    """`base?pairs` with the pairs form-encoded."""
    return f"{base}?{urlencode(pairs)}" if pairs else base


def bundle(
    type_: str,
    entries: list[dict[str, Any]],
    *,
    total: int | None = None,
    links: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """A Bundle of `type_`; `links` are (relation, url)."""
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": format_instant(now_utc())},
        "type": type_,
    }
    if total is not None:
        out["total"] = total
    if links:
        out["link"] = [{"relation": rel, "url": url} for rel, url in links]
    out["entry"] = entries
    if not entries:
        del out["entry"]
    return out


def paging_links(
    self_url: str,
    pairs: list[tuple[str, str]],
    *,
    offset: int,
    count: int,
    snapshot: int,
    has_next: bool,
    next_offset: int | None = None,
) -> list[tuple[str, str]]:
    """self/first/previous/next links; pages are pinned to `snapshot` so they stay stable.
    `next_offset`: where the next page starts when this one read past `offset + count`."""
    kept = [(k, v) for k, v in pairs if k not in ("_offset", "_snapshot", "_count")]

    def page(at: int) -> str:
        return url_with(
            self_url,
            [*kept, ("_count", str(count)), ("_offset", str(at)), ("_snapshot", str(snapshot))],
        )

    links = [("self", url_with(self_url, pairs)), ("first", page(0))]
    if offset > 0 and count:
        links.append(("previous", page(max(offset - count, 0))))
    if has_next:
        links.append(("next", page(offset + count if next_offset is None else next_offset)))
    return links


# The paging parameter that keeps a search's or history's safe horizon on every page of its
# snapshot (RIX's own, like `_snapshot`; clients follow the links and never write it).
HORIZON_PARAM = "_horizon"


def pin_horizon(bundle_: dict[str, Any], horizon: datetime) -> dict[str, Any]:
    """Give a searchset or history Bundle its safe horizon as meta.lastUpdated, and carry it in
    the links of the same snapshot (first, previous, next): every page of one snapshot tells the
    same horizon, the one taken before the snapshot, so a client that pages to the end and asks
    again with `_since=meta.lastUpdated` misses nothing (FHIR R4 http.html#history)."""
    stamp = format_instant(horizon)
    bundle_["meta"] = {**bundle_.get("meta", {}), "lastUpdated": stamp}
    pin = urlencode([(HORIZON_PARAM, stamp)])
    for link in bundle_.get("link", []):
        if link["relation"] != "self":
            link["url"] += ("&" if "?" in link["url"] else "?") + pin
    return bundle_


_MANDATORY = ("resourceType", "id", "meta")
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}


def subset(
    resource: dict[str, Any], elements: list[str] | None, summary: str | None
) -> dict[str, Any]:
    """Apply _elements / _summary=data, marking the result SUBSETTED as the spec requires."""
    if not elements and summary != "data":
        return resource
    if elements:
        keep = set(elements) | set(_MANDATORY)
        out = {k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep}
    else:
        out = {k: v for k, v in resource.items() if k != "text"}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out
