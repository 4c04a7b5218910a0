"""FHIR wire formats at the edge (FHIR R4 http.html#mime-type): the response format asked by
`_format` or Accept, request bodies in JSON or XML, responses rendered in either."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.errors import Invalid, NotAcceptable, UnsupportedMediaType
from app.fhir import jsonio, xmlio

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir", "text/json"}
XML_TYPES = {FHIR_XML, "application/xml", "text/xml", "application/xml+fhir"}
JSON_PATCH = "application/json-patch+json"
_FORMATS = {
    **dict.fromkeys(JSON_TYPES, FHIR_JSON),
    **dict.fromkeys(XML_TYPES, FHIR_XML),
    "json": FHIR_JSON,
    "xml": FHIR_XML,
}
_ANY = {"*/*", "application/*"}  # no preference: JSON
_IN_THREAD = 64 * 1024  # XML bodies larger than this are parsed off the event loop


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type header, lower-cased."""
    return (header or "").split(";", 1)[0].strip().lower()


def wanted_format(request: Request) -> str:
    """FHIR_JSON or FHIR_XML: `_format` when given, else the best of Accept (q-values honoured;
    none, `*/*` or `application/*` is JSON); NotAcceptable for anything else."""
    fmt = request.query_params.get("_format")
    if fmt:
        # `_format=application/fhir+xml` unencoded in a URL reads as "application/fhir xml".
        kind = media_type(fmt).replace(" ", "+")
        if kind not in _FORMATS:
            raise NotAcceptable(f"_format '{fmt}' is not supported; use json or xml")
        return _FORMATS[kind]
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return FHIR_JSON
    best, rank = None, (0.0, False)
    for part in accept.split(","):
        kind, *params = part.split(";")
        kind = kind.strip().lower()
        chosen = _FORMATS.get(kind) or (FHIR_JSON if kind in _ANY else None)
        if chosen is None:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # Highest q first; at equal q a named type beats a wildcard, then the first listed.
        if (q, kind not in _ANY) > rank and q > 0:
            best, rank = chosen, (q, kind not in _ANY)
    if best is None:
        raise NotAcceptable(
            f"Cannot answer in '{accept}'; this server speaks {FHIR_JSON} and {FHIR_XML}"
        )
    return best


def wants_native(request: Request) -> bool:
    """Binary read (FHIR binary.html, MHD ITI-68): the document itself when Accept names a
    non-FHIR type (`application/pdf`, `application/dicom`...) and no FHIR one; a wildcard or
    no Accept keeps the Binary resource, which generic FHIR clients expect."""
    if request.query_params.get("_format"):
        return False
    accept = request.headers.get("accept", "")
    kinds = {media_type(part) for part in accept.split(",") if part.strip()}
    named = kinds - _ANY
    return bool(named) and not named & set(_FORMATS)


def error_format(request: Request) -> str:
    """The format of an error answer: the one asked for, JSON when it cannot be given."""
    try:
        return wanted_format(request)
    except NotAcceptable:
        return FHIR_JSON


async def read_resource(request: Request) -> Any:
    """The request body (a resource) in its JSON form, from FHIR JSON or FHIR XML."""
    kind = media_type(request.headers.get("content-type"))
    body = await request.body()
    if kind in XML_TYPES or (not kind and body.lstrip()[:1] == b"<"):
        if not body.strip():
            raise Invalid("The request body is empty")
        if len(body) > _IN_THREAD:
            return await run_in_threadpool(xmlio.loads, body)
        return xmlio.loads(body)
    return _json_body(kind, body, allowed=JSON_TYPES, offered=JSON_TYPES | XML_TYPES)


async def read_json(request: Request, *, allow: set[str] | None = None) -> Any:
    """The request body parsed as JSON after checking its Content-Type (JSON Patch)."""
    kind = media_type(request.headers.get("content-type"))
    allowed = allow or JSON_TYPES
    return _json_body(kind, await request.body(), allowed=allowed, offered=allowed)


def _json_body(kind: str, body: bytes, *, allowed: set[str], offered: set[str]) -> Any:
    if kind and kind not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type '{kind}' is not supported here; send {', '.join(sorted(offered))}"
        )
    if not body.strip():
        raise Invalid("The request body is empty")
    try:
        return jsonio.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"The body is not valid JSON: {exc}") from None


def fhir_response(
    body: dict[str, Any] | str | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    fmt: str = FHIR_JSON,
) -> Response:
    """A FHIR response in `fmt` (FHIR_JSON or FHIR_XML). A stored JSON string is sent as is in
    JSON, without re-encoding."""
    if body is None:
        return Response(status_code=status, headers=headers)
    if fmt == FHIR_XML:
        resource = jsonio.loads(body) if isinstance(body, str) else body
        text = xmlio.dumps(resource)
    else:
        text = body if isinstance(body, str) else jsonio.dumps(body)
    return Response(
        content=text.encode("utf-8"),
        status_code=status,
        headers=headers,
        media_type=f"{fmt}; charset=utf-8",
    )
