"""FHIR operations: on Patient (identity) PIXm ITI-83 `$ihe-pix`, PDQm ITI-119 `$match`,
identity vigilance's `$link` / `$unlink`, the priors list, `$break-glass`; on Endpoint the
sites' `$health`; on the system `$access-check`. Registered before the type routes, whose
`/{id}` would otherwise take `$ihe-pix` for an id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.api import media
from app.api.fhir import base_url, unit_of_work
from app.errors import Invalid
from app.fhir import models
from app.fhir.bundles import bundle
from app.services import access, breakglass, manifests, priors, rendering, sites
from app.services.identity import MATCH_GRADE_URL, IdentityOperations
from app.services.resources import ResourceService


async def pix_get(request: Request) -> Response:
    """ITI-83 Get Corresponding Identifiers: GET [base]/Patient/$ihe-pix?sourceIdentifier=..."""
    fmt = media.wanted_format(request)
    source, targets = None, []
    for key, value in request.query_params.multi_items():
        if key == "sourceIdentifier":
            if source is not None:
                raise Invalid("sourceIdentifier may be given once")
            source = value
        elif key == "targetSystem":
            targets += [t for t in value.split(",") if t]
        elif key not in ("_format", "_pretty"):
            raise Invalid(f"$ihe-pix has no parameter '{key}'")
    return await _pix(request, source, targets, fmt)


async def pix_post(request: Request) -> Response:
    """ITI-83 Get Corresponding Identifiers, POST form (a Parameters resource)."""
    fmt = media.wanted_format(request)
    body = await media.read_resource(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise Invalid("POST $ihe-pix takes a Parameters resource")
    models.validate(body, "Parameters")  # value types checked: a 400, never a crash
    source, targets = None, []
    for p in body.get("parameter", []) or []:
        name = p.get("name") if isinstance(p, dict) else None
        if name == "sourceIdentifier":
            ident = p.get("valueIdentifier")
            source = (
                f"{ident.get('system', '')}|{ident.get('value', '')}"
                if isinstance(ident, dict)
                else p.get("valueString")
            )
        elif name == "targetSystem":
            target = p.get("valueUri") or p.get("valueString")
            if isinstance(target, str):
                targets.append(target)
        else:
            raise Invalid(f"$ihe-pix has no parameter '{name}'")
    return await _pix(request, source, targets, fmt)


async def _pix(request: Request, source: str | None, targets: list[str], fmt: str) -> Response:
    if not source:
        raise Invalid("$ihe-pix needs sourceIdentifier=system|value")

    def run() -> dict[str, Any]:
        with unit_of_work(request) as svc:
            return IdentityOperations(svc).pix(source, targets)

    return media.fhir_response(await run_in_threadpool(run), fmt=fmt)


async def match(request: Request) -> Response:
    """ITI-119 Patient Demographics Match: POST [base]/Patient/$match with a Parameters
    resource (`resource`, `onlyCertainMatches`, `count`); a searchset Bundle of scored
    candidates with the match-grade extension."""
    fmt = media.wanted_format(request)
    body = await media.read_resource(request)
    base = base_url(request)

    def run() -> dict[str, Any]:
        with unit_of_work(request) as svc:
            results = IdentityOperations(svc).match(body)
        entries = [
            {
                "fullUrl": f"{base}/Patient/{stored.id}",
                "resource": stored.resource,
                "search": {
                    "mode": "match",
                    "score": score,
                    "extension": [{"url": MATCH_GRADE_URL, "valueCode": grade}],
                },
            }
            for stored, score, grade in results
        ]
        return bundle("searchset", entries, total=len(entries), links=[])

    return media.fhir_response(await run_in_threadpool(run), fmt=fmt)


async def link(request: Request, id: str) -> Response:
    """Identity vigilance: POST [base]/Patient/{id}/$link (`other`, `reason`)."""
    return await _decide(request, id, unlink=False)


async def unlink(request: Request, id: str) -> Response:
    """Identity vigilance: POST [base]/Patient/{id}/$unlink (`other`, `reason`)."""
    return await _decide(request, id, unlink=True)


async def _decide(request: Request, patient_id: str, *, unlink: bool) -> Response:
    fmt = media.wanted_format(request)
    body = await media.read_resource(request)

    def run() -> dict[str, Any]:
        with unit_of_work(request, write=True) as svc:
            return IdentityOperations(svc).link(patient_id, body, unlink=unlink)

    return media.fhir_response(await run_in_threadpool(run), fmt=fmt)


async def endpoint_health(request: Request) -> Response:
    """Site registry: GET [base]/Endpoint/$health, each endpoint's last successful contact and
    last error (administrators)."""
    fmt = media.wanted_format(request)

    def run() -> dict[str, Any]:
        with unit_of_work(request) as svc:
            return sites.health_report(svc)

    return media.fhir_response(await run_in_threadpool(run), fmt=fmt)


async def priors_of(request: Request, id: str) -> Response:
    """The priors list: GET [base]/Patient/{id}/$priors[?modality=&since=&until=&_count=]."""
    return await _priors(request, id)


async def priors_by_identifier(request: Request) -> Response:
    """The priors list by identifier: GET [base]/Patient/$priors?identifier=system|value."""
    return await _priors(request, None)


async def _priors(request: Request, patient_id: str | None) -> Response:
    fmt = media.wanted_format(request)
    base = base_url(request)
    pairs = list(request.query_params.multi_items())

    def run() -> dict[str, Any]:
        with unit_of_work(request) as svc:
            found = priors.priors(svc, patient_id, pairs)
        url = f"{base}/Patient/{found.patient_id}/$priors"
        return rendering.searchset(base, url, found.result)

    return media.fhir_response(await run_in_threadpool(run), fmt=fmt)


async def study_kos(request: Request, id: str) -> Response:
    """XDS-I.b: GET [base]/ImagingStudy/{id}/$kos, the study as a DICOM Key Object Selection
    manifest (application/dicom, PS3.3 A.35.4)."""

    def run() -> bytes:
        with unit_of_work(request) as svc:
            return manifests.kos_of(svc, id)

    return Response(
        content=await run_in_threadpool(run),
        media_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="{id}.dcm"'},
    )


async def break_glass(request: Request) -> Response:
    """Break-glass: POST [base]/Patient/$break-glass (`patient` or `identifier`, `reason`) with
    a token whose purpose of use is ETREAT or BTG: a time-boxed, audited grant the DPO reviews."""
    return await _write_operation(request, breakglass.break_glass)


async def access_check(request: Request) -> Response:
    """POST [base]/$access-check (`item`...; for the DPO and admins, the person to check):
    the policy seam's decision for each item, audited."""
    fmt = media.wanted_format(request)
    body = await media.read_resource(request)

    def run() -> dict[str, Any]:
        with unit_of_work(request) as svc:
            return access.access_check(svc, body)

    return media.fhir_response(await run_in_threadpool(run), fmt=fmt)


async def _write_operation(
    request: Request, operation: Callable[[ResourceService, Any], dict[str, Any]]
) -> Response:
    fmt = media.wanted_format(request)
    body = await media.read_resource(request)

    def run() -> dict[str, Any]:
        with unit_of_work(request, write=True) as svc:
            return operation(svc, body)

    return media.fhir_response(await run_in_threadpool(run), fmt=fmt)


# (method, path, handler, summary)
OPERATIONS = (
    ("GET", "/Patient/$priors", priors_by_identifier, "The priors list, by identifier"),
    ("GET", "/Patient/{id}/$priors", priors_of, "The priors list of a person, every site"),
    ("GET", "/ImagingStudy/{id}/$kos", study_kos, "XDS-I.b: the study as a DICOM KOS"),
    ("GET", "/Endpoint/$health", endpoint_health, "Site registry: endpoints' health (admin)"),
    ("GET", "/Patient/$ihe-pix", pix_get, "PIXm ITI-83 Get Corresponding Identifiers"),
    ("POST", "/Patient/$ihe-pix", pix_post, "PIXm ITI-83 Get Corresponding Identifiers (POST)"),
    ("POST", "/Patient/$match", match, "PDQm ITI-119 Patient Demographics Match"),
    ("POST", "/Patient/{id}/$link", link, "Identity vigilance: link two records (one person)"),
    ("POST", "/Patient/{id}/$unlink", unlink, "Identity vigilance: unlink (two people)"),
    ("POST", "/Patient/$break-glass", break_glass, "Break-glass: emergency access, audited"),
    ("POST", "/$access-check", access_check, "The policy's decision on items, audited"),
)


def add_operations(
    router: APIRouter, responses: dict[int | str, dict[str, Any]], body: dict[str, Any]
) -> None:
    """Register the operations on the protected /fhir router (`body`: the OpenAPI request
    body of a POST)."""
    for method, path, handler, summary in OPERATIONS:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            tags=[path.split("/")[1]],
            summary=summary,
            operation_id=f"{handler.__name__}_{method.lower()}",
            responses=responses,
            response_class=Response,
            openapi_extra=body if method == "POST" else None,
        )
