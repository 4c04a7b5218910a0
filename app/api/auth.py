"""Bearer-token authentication at the edge (IHE IUA ITI-72): a FastAPI dependency that turns a
verified JWT into the request's Principal, or answers 401 — audited, without details."""

from __future__ import annotations

import logging

from fastapi import Request
from jose import jwt
from jose.exceptions import JOSEError
from starlette.concurrency import run_in_threadpool

from app.api.errors import request_id
from app.errors import Unauthorized
from app.policy.principal import Principal

log = logging.getLogger("rix.auth")

CHALLENGE = 'Bearer realm="rix", error="invalid_token"'


def _claimed_subject(token: str) -> str | None:
    """The unverified `sub`, for the audit record of a refused token only."""
    try:
        sub = jwt.get_unverified_claims(token).get("sub")
    except (JOSEError, AttributeError):
        return None
    return str(sub)[:128] if sub else None


async def authenticate(request: Request) -> Principal:
    """The caller's Principal; 401 with `WWW-Authenticate` for a missing or invalid token."""
    rt = request.app.state.rix
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    try:
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("no bearer token")
        principal = Principal.from_claims(rt.verifier.verify(token))
    except Unauthorized as exc:
        log.warning("authentication failed (request %s): %s", request_id(request), exc.diagnostics)
        await run_in_threadpool(
            rt.record_authentication_failure,
            request_id(request),
            _claimed_subject(token) if token else None,
            exc.diagnostics,
        )
        error = Unauthorized("Authentication required: present a valid bearer token")
        error.headers["WWW-Authenticate"] = CHALLENGE
        raise error from None
    request.state.principal = principal
    return principal
