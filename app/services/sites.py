"""Site operations over the resource service: the endpoints' health (`$health`) and the probe
that `rix sites check` runs."""

from __future__ import annotations

from typing import Any

import httpx

from app.services.resources import ResourceService
from app.sites import health
from app.storage.repository import Stored

_ALL = "1000"  # a region has tens of sites: one page holds them all


def endpoints(svc: ResourceService, *, active_only: bool = False) -> list[Stored]:
    """Every Endpoint of the registry (read through the policy like any search)."""
    pairs = [("_count", _ALL)] + ([("status", "active")] if active_only else [])
    return svc.search("Endpoint", pairs).matches


def health_report(svc: ResourceService) -> dict[str, Any]:
    """`GET /fhir/Endpoint/$health`: each endpoint's last successful contact and last error
    (administrators only)."""
    svc.policy.start_operation(svc.principal, "health")
    return health.report(svc.repo, endpoints(svc))


def check(svc: ResourceService, client: httpx.Client) -> list[tuple[Stored, health.Contact]]:
    """Probe every active endpoint now and record the outcomes."""
    results = [(e, health.probe(e.resource, client)) for e in endpoints(svc, active_only=True)]
    for endpoint, contact in results:
        health.record(svc.repo.session, endpoint.id, contact)
    return results
