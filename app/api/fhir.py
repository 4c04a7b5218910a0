"""The FHIR REST edge: ONE table of interactions, registered for every type of the registry.

Handlers parse the wire format, call the resource service, and render FHIR JSON or XML; no
business rules and no SQL live here.
"""

from __future__ import annotations

import base64
import binascii
from contextlib import AbstractContextManager as ContextManager
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.api import media
from app.api.auth import authenticate
from app.api.errors import request_id
from app.errors import Invalid, PreconditionFailed
from app.fhir.bundles import HORIZON_PARAM, information, pin_horizon, subset
from app.fhir.capability import capability_statement
from app.fhir.values import http_date, parse_search_date
from app.services import rendering
from app.services.bundles import process_bundle
from app.services.resources import ResourceService
from app.services.runtime import Runtime
from app.storage.repository import Stored

# OpenAPI: every FHIR answer and body comes in JSON or XML (the XML as a document).
_FHIR_CONTENT = {
    media.FHIR_JSON: {"schema": {"type": "object"}},
    media.FHIR_XML: {"schema": {"type": "string"}},
}
_OUTCOME = {"description": "OperationOutcome", "content": _FHIR_CONTENT}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: _OUTCOME for code in (400, 401, 403, 404, 405, 406, 409, 410, 412, 415, 422)
}


def runtime(request: Request) -> Runtime:
    """The process runtime attached by create_app."""
    rt: Runtime = request.app.state.rix
    return rt


def base_url(request: Request) -> str:
    """The absolute FHIR base URL used in links, Location and fullUrl."""
    configured = runtime(request).settings.base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


def unit_of_work(request: Request, *, write: bool = False) -> ContextManager[ResourceService]:
    """The resource service for this request's principal, in one database transaction."""
    return runtime(request).resources(
        base_url(request),
        write=write,
        principal=request.state.principal,
        request_id=request_id(request),
    )


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """The query string as (key, value) pairs, repetitions kept."""
    return list(request.query_params.multi_items())


def _criteria(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in query_pairs(request) if k not in ("_format", "_pretty")]


def _result_pairs(request: Request) -> list[tuple[str, str]]:
    """Search and history parameters: `_format` stays, so that paging links keep it."""
    return [(k, v) for k, v in query_pairs(request) if k != "_pretty"]


def _pinned_horizon(
    pairs: list[tuple[str, str]],
) -> tuple[list[tuple[str, str]], datetime | None]:
    """The pairs without `_horizon`, and the horizon a paging link pinned (None on a first
    page). It belongs to a snapshot: alone it would promise what no read checked."""
    values = [v for k, v in pairs if k == HORIZON_PARAM]
    if not values:
        return pairs, None
    if len(values) > 1 or not any(k == "_snapshot" for k, _ in pairs):
        raise Invalid(f"{HORIZON_PARAM} comes once, with the _snapshot of the page it belongs to")
    kept = [(k, v) for k, v in pairs if k != HORIZON_PARAM]
    return kept, parse_search_date(values[0], HORIZON_PARAM)[0]


def _prefer(request: Request, name: str) -> str | None:
    for part in request.headers.get("prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == name:
            return value.strip().strip('"')
    return None


def _if_match(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if not header:
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise PreconditionFailed(f"If-Match '{header}' is not a version ETag like W/\"3\"")
    return int(value)


def _none_match(request: Request, etag: str) -> bool:
    """If-None-Match by RFC 9110 weak comparison: `*`, or any listed tag of the same version."""
    header = request.headers.get("if-none-match", "").strip()
    if header == "*":
        return True
    return etag.removeprefix("W/") in {t.strip().removeprefix("W/") for t in header.split(",")}


def resource_headers(stored: Stored, base: str, *, location: bool = False) -> dict[str, str]:
    """ETag and Last-Modified (and Location for creates) of a stored version."""
    headers = {"ETag": f'W/"{stored.version}"', "Last-Modified": http_date(stored.last_updated)}
    if location:
        headers["Location"] = f"{base}/{stored.type}/{stored.id}/_history/{stored.version}"
    return headers


def _written(request: Request, stored: Stored, status: int, fmt: str) -> Response:
    base = base_url(request)
    headers = resource_headers(stored, base, location=status == 201)
    prefer = _prefer(request, "return")
    if prefer == "minimal":
        return media.fhir_response(None, status, headers)
    if prefer == "OperationOutcome":
        text = f"{stored.type}/{stored.id} version {stored.version} stored"
        outcome = information(text, request_id(request))
        return media.fhir_response(outcome, status, headers, fmt)
    return media.fhir_response(stored.content, status, headers, fmt)


def _native(stored: Stored) -> Response:
    """A Binary's bytes with its content type (the stored base64 decoded)."""
    resource = stored.resource
    try:
        data = base64.b64decode(resource.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"Binary/{stored.id} holds no decodable content") from None
    return Response(
        content=data,
        media_type=str(resource.get("contentType") or "application/octet-stream"),
        headers={"ETag": f'W/"{stored.version}"'},
    )


def _lenient(request: Request) -> bool:
    return _prefer(request, "handling") == "lenient"


class Interactions:
    """The interactions of one resource type, bound to its name."""

    def __init__(self, type_name: str) -> None:
        self.type = type_name

    async def search(self, request: Request) -> Response:
        """search-type: GET [base]/[type]?params"""
        return await self._search(request, _result_pairs(request))

    async def search_post(self, request: Request) -> Response:
        """search-type: POST [base]/[type]/_search (form body)."""
        kind = media.media_type(request.headers.get("content-type"))
        if kind and kind != "application/x-www-form-urlencoded":
            raise Invalid("POST _search takes application/x-www-form-urlencoded parameters")
        form = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
        return await self._search(request, _result_pairs(request) + form)

    async def _search(self, request: Request, pairs: list[tuple[str, str]]) -> Response:
        fmt = media.wanted_format(request)
        base = base_url(request)

        pairs, horizon = _pinned_horizon(pairs)

        def run() -> dict[str, Any]:
            with unit_of_work(request) as svc:
                result = svc.search(self.type, pairs, lenient=_lenient(request), horizon=horizon)
                searchset = rendering.searchset(base, f"{base}/{self.type}", result)
                if result.horizon is None:
                    return searchset
                return pin_horizon(searchset, result.horizon)

        return media.fhir_response(await run_in_threadpool(run), fmt=fmt)

    async def create(self, request: Request) -> Response:
        """create (and conditional create: If-None-Exist header or query-string criteria)."""
        fmt = media.wanted_format(request)
        body = await media.read_resource(request)
        criteria = _criteria(request)
        header = request.headers.get("if-none-exist")
        if header:
            criteria += parse_qsl(header.lstrip("?"), keep_blank_values=True)

        def run() -> tuple[Stored, int]:
            with unit_of_work(request, write=True) as svc:
                written = svc.create(self.type, body, criteria or None)
                return svc.settled(written.stored), written.status

        stored, status = await run_in_threadpool(run)
        return _written(request, stored, status, fmt)

    async def read(self, request: Request, id: str) -> Response:
        """read: GET [base]/[type]/[id]; a Binary comes back as the document itself (ITI-68
        Retrieve Document) unless a FHIR format is asked for."""
        native = self.type == "Binary" and media.wants_native(request)
        fmt = media.FHIR_JSON if native else media.wanted_format(request)

        def run() -> Stored:
            with unit_of_work(request) as svc:
                return svc.read(self.type, id)

        stored = await run_in_threadpool(run)
        if native:
            return _native(stored)
        return self._render_read(request, stored, fmt)

    async def vread(self, request: Request, id: str, vid: str) -> Response:
        """vread: GET [base]/[type]/[id]/_history/[vid]"""
        fmt = media.wanted_format(request)

        def run() -> Stored:
            with unit_of_work(request) as svc:
                return svc.vread(self.type, id, vid)

        return self._render_read(request, await run_in_threadpool(run), fmt)

    def _render_read(self, request: Request, stored: Stored, fmt: str) -> Response:
        headers = resource_headers(stored, base_url(request))
        if _none_match(request, headers["ETag"]):
            return Response(status_code=304, headers=headers)
        elements = request.query_params.get("_elements")
        summary = request.query_params.get("_summary")
        if elements or summary == "data":
            fields = [e.strip() for e in (elements or "").split(",") if e.strip()] or None
            shown = subset(stored.resource, fields, summary)
            return media.fhir_response(shown, headers=headers, fmt=fmt)
        return media.fhir_response(stored.content, headers=headers, fmt=fmt)

    async def update(self, request: Request, id: str) -> Response:
        """update (update-as-create when the id is new): PUT [base]/[type]/[id]"""
        fmt = media.wanted_format(request)
        body = await media.read_resource(request)
        if_match = _if_match(request)

        def run() -> tuple[Stored, int]:
            with unit_of_work(request, write=True) as svc:
                written = svc.update(self.type, id, body, if_match)
                return svc.settled(written.stored), written.status

        stored, status = await run_in_threadpool(run)
        return _written(request, stored, status, fmt)

    async def conditional_update(self, request: Request) -> Response:
        """conditional update: PUT [base]/[type]?criteria"""
        fmt = media.wanted_format(request)
        body = await media.read_resource(request)
        criteria, if_match = _criteria(request), _if_match(request)

        def run() -> tuple[Stored, int]:
            with unit_of_work(request, write=True) as svc:
                written = svc.conditional_update(self.type, criteria, body, if_match)
                return svc.settled(written.stored), written.status

        stored, status = await run_in_threadpool(run)
        return _written(request, stored, status, fmt)

    async def patch(self, request: Request, id: str) -> Response:
        """patch (JSON Patch): PATCH [base]/[type]/[id]"""
        fmt = media.wanted_format(request)
        ops = await media.read_json(request, allow={media.JSON_PATCH})
        if_match = _if_match(request)

        def run() -> Stored:
            with unit_of_work(request, write=True) as svc:
                return svc.settled(svc.patch(self.type, id, ops, if_match).stored)

        return _written(request, await run_in_threadpool(run), 200, fmt)

    async def conditional_patch(self, request: Request) -> Response:
        """conditional patch: PATCH [base]/[type]?criteria"""
        fmt = media.wanted_format(request)
        ops = await media.read_json(request, allow={media.JSON_PATCH})
        criteria, if_match = _criteria(request), _if_match(request)

        def run() -> Stored:
            with unit_of_work(request, write=True) as svc:
                return svc.settled(svc.conditional_patch(self.type, criteria, ops, if_match).stored)

        return _written(request, await run_in_threadpool(run), 200, fmt)

    async def delete(self, request: Request, id: str) -> Response:
        """delete: DELETE [base]/[type]/[id] (a tombstone; history is kept)."""
        if_match = _if_match(request)

        def run() -> Stored | None:
            with unit_of_work(request, write=True) as svc:
                return svc.delete(self.type, id, if_match)

        stored = await run_in_threadpool(run)
        headers = {"ETag": f'W/"{stored.version}"'} if stored else {}
        return media.fhir_response(None, 204, headers)

    async def conditional_delete(self, request: Request) -> Response:
        """conditional delete: DELETE [base]/[type]?criteria (one match at most)."""
        fmt = media.wanted_format(request)
        criteria = _criteria(request)

        def run() -> Stored | None:
            with unit_of_work(request, write=True) as svc:
                return svc.conditional_delete(self.type, criteria)

        stored = await run_in_threadpool(run)
        if stored is None:
            text = f"No {self.type} matched; nothing deleted"
            return media.fhir_response(information(text, request_id(request)), 200, fmt=fmt)
        return media.fhir_response(None, 204, {"ETag": f'W/"{stored.version}"'})

    async def history_type(self, request: Request) -> Response:
        """history-type: GET [base]/[type]/_history"""
        return await _history(request, self.type, None)

    async def history_instance(self, request: Request, id: str) -> Response:
        """history-instance: GET [base]/[type]/[id]/_history"""
        return await _history(request, self.type, id)


async def _history(request: Request, type_name: str | None, resource_id: str | None) -> Response:
    fmt = media.wanted_format(request)
    base = base_url(request)
    url = "/".join(p for p in (base, type_name, resource_id) if p) + "/_history"
    pairs, horizon = _pinned_horizon(_result_pairs(request))

    def run() -> dict[str, Any]:
        with unit_of_work(request) as svc:
            result = svc.history(type_name, resource_id, pairs, horizon=horizon)
            assert result.horizon is not None
            return pin_horizon(rendering.history(base, url, pairs, result), result.horizon)

    return media.fhir_response(await run_in_threadpool(run), fmt=fmt)


async def history_system(request: Request) -> Response:
    """history-system: GET [base]/_history"""
    return await _history(request, None, None)


async def batch_or_transaction(request: Request) -> Response:
    """batch / transaction: POST [base] with a Bundle (FHIR R4 http.html#transaction)."""
    fmt = media.wanted_format(request)
    body = await media.read_resource(request)
    base = base_url(request)
    return_pref = _prefer(request, "return") or "representation"

    def run() -> dict[str, Any]:
        return process_bundle(
            runtime(request),
            base,
            body,
            return_pref=return_pref,
            principal=request.state.principal,
            request_id=request_id(request),
        )

    return media.fhir_response(await run_in_threadpool(run), fmt=fmt)


async def metadata(request: Request) -> Response:
    """capabilities: GET [base]/metadata (no authentication)."""
    fmt = media.wanted_format(request)
    rt = runtime(request)
    statement = capability_statement(rt.registry, base_url(request), rt.settings)
    return media.fhir_response(statement, fmt=fmt)


# The interaction table: (method, path under /fhir/{type}, handler, FHIR interaction, summary).
TYPE_ROUTES = (
    ("GET", "", "search", "search-type", "search-type"),
    ("POST", "", "create", "create", "create / conditional create"),
    ("PUT", "", "conditional_update", "update", "conditional update"),
    ("PATCH", "", "conditional_patch", "patch", "conditional patch (JSON Patch)"),
    ("DELETE", "", "conditional_delete", "delete", "conditional delete"),
    ("POST", "/_search", "search_post", "search-type", "search-type (POST form)"),
    ("GET", "/_history", "history_type", "history-type", "history-type"),
    ("GET", "/{id}", "read", "read", "read"),
    ("PUT", "/{id}", "update", "update", "update / update-as-create"),
    ("PATCH", "/{id}", "patch", "patch", "patch (JSON Patch)"),
    ("DELETE", "/{id}", "delete", "delete", "delete"),
    ("GET", "/{id}/_history", "history_instance", "history-instance", "history-instance"),
    ("GET", "/{id}/_history/{vid}", "vread", "vread", "vread"),
)

_RESOURCE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: {"schema": {"type": "object"}} for t in sorted(media.JSON_TYPES)},
            **{t: {"schema": {"type": "string"}} for t in sorted(media.XML_TYPES)},
        },
    }
}
_PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {media.JSON_PATCH: {"schema": {"type": "array", "items": {"type": "object"}}}},
    }
}


def build_router(rt: Runtime) -> tuple[APIRouter, APIRouter]:
    """The /fhir router: system interactions, then the table above for every registered type.

    Every route requires a bearer token (IUA) except the CapabilityStatement.
    """
    public = APIRouter(prefix="/fhir", responses=_ERRORS)
    router = APIRouter(prefix="/fhir", responses=_ERRORS, dependencies=[Depends(authenticate)])
    ok: dict[int | str, dict[str, Any]] = {
        200: {"description": "FHIR resource or Bundle", "content": _FHIR_CONTENT}
    }
    public.add_api_route(
        "/metadata",
        metadata,
        methods=["GET"],
        tags=["system"],
        summary="capabilities",
        responses=ok,
        response_class=Response,
    )
    router.add_api_route(
        "",
        batch_or_transaction,
        methods=["POST"],
        tags=["system"],
        summary="batch / transaction",
        responses=ok,
        response_class=Response,
        openapi_extra=_RESOURCE_BODY,
    )
    # fhirclient posts transactions to `[base]/`: answer there too rather than redirect a POST.
    router.add_api_route(
        "/",
        batch_or_transaction,
        methods=["POST"],
        include_in_schema=False,
        response_class=Response,
    )
    router.add_api_route(
        "/_history",
        history_system,
        methods=["GET"],
        tags=["system"],
        summary="history-system",
        responses=ok,
        response_class=Response,
    )
    # Operations first: `/Patient/{id}` would take `$ihe-pix` for an id. (Imported here:
    # the operations module builds on this one's helpers.)
    from app.api.operations import add_operations

    add_operations(router, ok, _RESOURCE_BODY)
    for type_name in rt.registry.names():
        handlers = Interactions(type_name)
        definition = rt.registry.get(type_name)
        for method, path, name, interaction, summary in TYPE_ROUTES:
            if interaction in definition.refused:
                # Refused on purpose (a Consent is withdrawn, never deleted): the route answers
                # 405 with the reason, and is not advertised.
                router.add_api_route(
                    f"/{type_name}{path}",
                    getattr(handlers, name),
                    methods=[method],
                    include_in_schema=False,
                    response_class=Response,
                )
                continue
            if interaction not in definition.interactions:
                continue  # e.g. AuditEvent is immutable: PUT/PATCH/DELETE answer 405
            extra = None
            if method in ("POST", "PUT") and name != "search_post":
                extra = _RESOURCE_BODY
            elif method == "PATCH":
                extra = _PATCH_BODY
            responses: dict[int | str, dict[str, Any]] = dict(ok)
            if name in ("create", "update", "conditional_update"):
                responses[201] = {"description": "Created", "content": _FHIR_CONTENT}
            if name in ("delete", "conditional_delete"):
                responses[204] = {"description": "Deleted"}
            router.add_api_route(
                f"/{type_name}{path}",
                getattr(handlers, name),
                methods=[method],
                tags=[type_name],
                summary=f"{type_name} {summary}",
                operation_id=f"{name}_{type_name}",
                responses=responses,
                response_class=Response,
                openapi_extra=extra,
            )
    return public, router


def install(app: FastAPI, rt: Runtime) -> None:
    """Mount the FHIR API."""
    public, protected = build_router(rt)
    app.include_router(public)
    app.include_router(protected)
