"""The application factory: create_app(settings) wires routers, errors and middleware."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import __version__
from app.api import errors, fhir, system
from app.api.middleware import RequestId
from app.audit.sealer import Sealer
from app.config import Settings, get_settings
from app.services.runtime import Runtime

DESCRIPTION = """RIX, the Regional Imaging eXchange: a FHIR R4 server (`/fhir`) for sharing
patients' prior imaging exams across the hospitals and imaging centres of a region."""


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """A RIX application for `settings` (from the environment when omitted); `freeze_heap`
    for the one application of a server process (see `server_app`)."""
    settings = settings or get_settings()
    rt = Runtime.build(settings)
    sealer = Sealer(rt.sessions, rt.trail, settings.audit_seal_interval)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if freeze_heap:
            # What is loaded by now (models, routes, the registry) lives as long as the
            # process: frozen, it is out of the cyclic collector's sight, whose full
            # collections would otherwise rescan it while large responses are built.
            gc.collect()
            gc.freeze()
        sealer.start()
        try:
            yield
        finally:
            sealer.stop()

    app = FastAPI(title="RIX", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.rix = rt
    errors.install(app)
    system.install(app, settings)
    fhir.install(app, rt)
    app.add_middleware(RequestId)
    _declare_bearer_auth(app)
    return app


def server_app() -> FastAPI:
    """The application `rix serve` runs: one per process, for the process's lifetime."""
    return create_app(freeze_heap=True)


PUBLIC_PATHS = {"/fhir/metadata", "/healthz", "/readyz", "/.well-known/jwks.json"}


def _declare_bearer_auth(app: FastAPI) -> None:
    """OpenAPI: every operation needs an IUA bearer JWT except the public ones."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {
            "iuaBearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "IHE IUA access token (claims: see README, Authentication)",
            }
        }
        schema["security"] = [{"iuaBearer": []}]
        for path, operations in schema.get("paths", {}).items():
            if path in PUBLIC_PATHS:
                for operation in operations.values():
                    operation["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
