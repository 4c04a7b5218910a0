"""Search and history results as FHIR Bundles (searchset, history), with absolute links."""

from __future__ import annotations

from typing import Any

from app.fhir.bundles import bundle, paging_links, subset
from app.services.resources import HistoryResult, SearchResult


def searchset(base: str, url: str, result: SearchResult) -> dict[str, Any]:
    """The searchset Bundle of a search result, with links pinned to its snapshot."""
    query = result.query
    if result.next_offset is not None:
        has_next = True
    elif result.total is not None:
        has_next = query.offset + len(result.matches) < result.total
    else:
        has_next = len(result.matches) == query.count and query.count > 0
    links = paging_links(
        url,
        query.used,
        offset=query.offset,
        count=query.count,
        snapshot=query.snapshot or 0,
        has_next=has_next and query.summary != "count",
        next_offset=result.next_offset,
    )
    entries = [
        {
            "fullUrl": f"{base}/{s.type}/{s.id}",
            "resource": subset(s.resource, query.elements, query.summary),
            "search": {"mode": mode},
        }
        for mode, items in (("match", result.matches), ("include", result.included))
        for s in items
    ]
    return bundle("searchset", entries, total=result.total, links=links)


def history(
    base: str, url: str, pairs: list[tuple[str, str]], result: HistoryResult
) -> dict[str, Any]:
    """The history Bundle of a page of versions, newest first."""
    entries = []
    for s in result.entries:
        entry: dict[str, Any] = {"fullUrl": f"{base}/{s.type}/{s.id}"}
        if s.deleted:
            entry["request"] = {"method": "DELETE", "url": f"{s.type}/{s.id}"}
            entry["response"] = {"status": "204 No Content", "etag": f'W/"{s.version}"'}
        else:
            posted = s.method == "POST"
            entry["resource"] = s.resource
            entry["request"] = {
                "method": "POST" if posted else "PUT",
                "url": s.type if posted else f"{s.type}/{s.id}",
            }
            entry["response"] = {
                "status": "201 Created" if s.version == 1 else "200 OK",
                "etag": f'W/"{s.version}"',
                "lastModified": s.resource["meta"]["lastUpdated"],
            }
        entries.append(entry)
    if result.next_offset is not None:
        has_next = True
    elif result.total is not None:
        has_next = result.offset + len(result.entries) < result.total
    else:
        has_next = len(result.entries) == result.count and result.count > 0
    links = paging_links(
        url,
        pairs,
        offset=result.offset,
        count=result.count,
        snapshot=result.snapshot,
        has_next=has_next,
        next_offset=result.next_offset,
    )
    return bundle("history", entries, total=result.total, links=links)
