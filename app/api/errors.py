"""Every error leaves as an OperationOutcome with the right status and the correlation id, in
the format the client asked for (JSON when that format is what cannot be given)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from app.api.media import error_format, fhir_response
from app.errors import FhirError, Issue
from app.fhir.bundles import operation_outcome

log = logging.getLogger("rix.errors")

_HTTP_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "business-rule",
}


def request_id(request: Request) -> str | None:
    """The X-Request-Id of this request (accepted from the client or generated)."""
    return getattr(request.state, "request_id", None)


def render(request: Request, error: FhirError) -> Response:
    """The OperationOutcome response for a domain error."""
    outcome = operation_outcome(error.issues, request_id(request))
    return fhir_response(outcome, error.status, error.headers, error_format(request))


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an OperationOutcome."""

    @app.exception_handler(FhirError)
    async def _fhir_error(request: Request, exc: FhirError) -> Response:
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        issues = [
            Issue("invalid", f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}")
            for e in exc.errors()
        ]
        outcome = operation_outcome(issues, request_id(request))
        return fhir_response(outcome, 400, fmt=error_format(request))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        status = exc.status_code
        text = {404: f"No such endpoint: {request.url.path}", 405: "Method not allowed here"}.get(
            status, str(exc.detail)
        )
        issue = Issue(_HTTP_CODES.get(status, "processing"), text)
        outcome = operation_outcome([issue], request_id(request))
        return fhir_response(outcome, status, dict(exc.headers or {}), error_format(request))

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> Response:
        log.error("database unavailable (request %s): %s", request_id(request), exc)
        issue = Issue("transient", "The database is unavailable; retry later")
        outcome = operation_outcome([issue], request_id(request))
        return fhir_response(outcome, 503, fmt=error_format(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error (request %s)", request_id(request))
        issue = Issue("exception", "Internal error; quote the request id to the operators")
        # Starlette answers this one outside the middleware stack: echo the request id here.
        rid = request_id(request)
        headers = {"X-Request-Id": rid} if rid else None
        return fhir_response(operation_outcome([issue], rid), 500, headers, error_format(request))
