"""Search and history results as FHIR Bundles (searchset, history), with absolute links."""

from __future__ import annotations

from typing import Any

from app.fhir.bundles import bundle, paging_links, subset
from app.services.resources import HistoryResult, SearchResult


def searchset(base: str, url: str, result: SearchResult) -> dict[str, Any]:
    """The searchset Bundle of a search result, with links pinned to its snapshot."""
    query = result.query
    has_next = _has_next(
        result.next_offset, result.total, query.offset, len(result.matches), query.count
    )
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
    has_next = _has_next(
        result.next_offset, result.total, result.offset, len(result.entries), result.count
    )
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


def _has_next(
    next_offset: int | None, total: int | None, offset: int, shown: int, count: int
) -> bool:
    """Whether a page has a next one: it was filled past hidden items (`next_offset`), the
    total says more follow, or, without a total, the page is full."""
    if next_offset is not None:
        return True
    if total is not None:
        return offset + shown < total
    return shown == count and count > 0
