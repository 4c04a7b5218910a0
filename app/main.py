"""The application factory: create_app(settings) wires routers, errors and middleware."""

from __future__ import annotations

from fastapi import FastAPI

from app import __version__
from app.api import errors, fhir, system
from app.api.middleware import RequestId
from app.config import Settings, get_settings
from app.services.runtime import Runtime

DESCRIPTION = """RIX, the Regional Imaging eXchange: a FHIR R4 server (`/fhir`) for sharing
patients' prior imaging exams across the hospitals and imaging centres of a region."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A RIX application for `settings` (from the environment when omitted)."""
    settings = settings or get_settings()
    rt = Runtime.build(settings)
    app = FastAPI(title="RIX", version=__version__, description=DESCRIPTION)
    app.state.rix = rt
    errors.install(app)
    system.install(app)
    fhir.install(app, rt)
    app.add_middleware(RequestId)
    return app
