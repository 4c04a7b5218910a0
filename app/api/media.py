"""FHIR wire formats at the edge: accepted media types, body parsing, response rendering."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from app.errors import Invalid, NotAcceptable, UnsupportedMediaType
from app.fhir import jsonio

FHIR_JSON = "application/fhir+json"
JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir", "text/json"}
JSON_PATCH = "application/json-patch+json"
XML_TYPES = {"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"}
_FORMAT_ALIASES = {"json": FHIR_JSON, "xml": "application/fhir+xml", "html": "text/html"}


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type header, lower-cased."""
    return (header or "").split(";", 1)[0].strip().lower()


def wanted_format(request: Request) -> str:
    """The response format asked by `_format` or Accept; only FHIR JSON is produced."""
    fmt = request.query_params.get("_format")
    if fmt:
        wanted = _FORMAT_ALIASES.get(fmt, fmt.split(";")[0].strip())
        if wanted not in JSON_TYPES:
            raise NotAcceptable(f"_format '{fmt}' is not supported; use json")
        return FHIR_JSON
    accept = request.headers.get("accept")
    if not accept:
        return FHIR_JSON
    for part in accept.split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in JSON_TYPES or kind in ("*/*", "application/*", ""):
            return FHIR_JSON
    raise NotAcceptable(f"Cannot answer in '{accept}'; this server speaks {FHIR_JSON}")


async def read_json(request: Request, *, allow: set[str] | None = None) -> Any:
    """The request body parsed as JSON after checking its Content-Type."""
    allowed = allow or JSON_TYPES
    kind = media_type(request.headers.get("content-type"))
    body = await request.body()
    if kind and kind not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type '{kind}' is not supported here; send {', '.join(sorted(allowed))}"
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
) -> Response:
    """A FHIR JSON response (a stored JSON string is sent as is, without re-encoding)."""
    if body is None:
        return Response(status_code=status, headers=headers)
    text = body if isinstance(body, str) else jsonio.dumps(body)
    return Response(
        content=text.encode("utf-8"),
        status_code=status,
        headers=headers,
        media_type=f"{FHIR_JSON}; charset=utf-8",
    )
