"""Site health: the last successful contact with each site's PACS endpoint and its last error.

Whatever contacts a site records the outcome here (`record`); `rix sites check` probes every
active endpoint (a QIDO-RS `studies?limit=1`, DICOM PS3.18). Administrators read it with
`GET /fhir/Endpoint/$health`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from app.fhir.naming import ENDPOINT_TIMEOUT_URL
from app.fhir.values import format_instant, now_utc
from app.storage.repository import Repository, Stored
from app.storage.tables import SITE_HEALTH

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Contact:
    """The outcome of one contact with an endpoint."""

    ok: bool
    error: str | None = None


def record(session: Session, endpoint_id: str, contact: Contact) -> None:
    """Remember the outcome of a contact with an endpoint."""
    now = now_utc()
    values: dict[str, Any] = (
        {"last_success": now} if contact.ok else {"last_error_at": now, "last_error": contact.error}
    )
    done = session.execute(
        select(SITE_HEALTH.c.endpoint_id).where(SITE_HEALTH.c.endpoint_id == endpoint_id)
    ).first()
    if done:
        session.execute(
            update(SITE_HEALTH).where(SITE_HEALTH.c.endpoint_id == endpoint_id).values(**values)
        )
    else:
        session.execute(insert(SITE_HEALTH).values(endpoint_id=endpoint_id, **values))


def timeout_of(endpoint: dict[str, Any]) -> float:
    """The endpoint's configured timeout (site registry extension), else the default."""
    for ext in endpoint.get("extension", []) or []:
        if isinstance(ext, dict) and ext.get("url") == ENDPOINT_TIMEOUT_URL:
            value = ext.get("valueDecimal")
            if value is not None and float(value) > 0:
                return float(value)
    return DEFAULT_TIMEOUT


def probe(endpoint: dict[str, Any], client: httpx.Client) -> Contact:
    """Ask a DICOMweb endpoint for one study (QIDO-RS); any answer below 500 proves it alive
    (an empty PACS, or one refusing our unauthenticated probe, is still reachable)."""
    base = str(endpoint.get("address", "")).rstrip("/")
    try:
        response = client.get(
            f"{base}/studies",
            params={"limit": "1"},
            headers={"Accept": "application/dicom+json"},
            timeout=timeout_of(endpoint),
        )
    except httpx.HTTPError as exc:
        return Contact(False, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
    if response.status_code >= 500:
        return Contact(False, f"HTTP {response.status_code}")
    return Contact(True)


def report(repo: Repository, endpoints: list[Stored]) -> dict[str, Any]:
    """The health of these endpoints as a Parameters resource (one `endpoint` part each)."""
    ids = [e.id for e in endpoints]
    rows = {
        row.endpoint_id: row
        for row in repo.session.execute(
            select(SITE_HEALTH).where(SITE_HEALTH.c.endpoint_id.in_(ids))
        )
    }
    parameters = []
    for endpoint in sorted(endpoints, key=lambda e: e.id):
        resource = endpoint.resource
        row = rows.get(endpoint.id)
        parts: list[dict[str, Any]] = [
            {"name": "endpoint", "valueReference": {"reference": f"Endpoint/{endpoint.id}"}},
            {"name": "status", "valueCode": resource.get("status", "active")},
            {"name": "address", "valueUrl": resource.get("address", "")},
        ]
        organization = resource.get("managingOrganization")
        if isinstance(organization, dict) and organization.get("reference"):
            parts.append({"name": "organization", "valueReference": organization})
        if row is not None:
            parts += _instant("lastSuccess", row.last_success)
            parts += _instant("lastErrorAt", row.last_error_at)
            if row.last_error:
                parts.append({"name": "lastError", "valueString": row.last_error})
        parameters.append({"name": "site", "part": parts})
    return {"resourceType": "Parameters", "parameter": parameters}


def _instant(name: str, value: datetime | None) -> list[dict[str, Any]]:
    return [{"name": name, "valueInstant": format_instant(value)}] if value else []
