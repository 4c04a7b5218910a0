"""Operational endpoints: liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from app.auth.keys import dev_jwks
from app.config import Settings
from app.storage.db import ping


async def healthz() -> JSONResponse:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """The database answers; 503 otherwise (so a load balancer stops routing here)."""
    try:
        await run_in_threadpool(ping, request.app.state.rix.engine)
    except SQLAlchemyError:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


async def jwks(request: Request) -> JSONResponse:
    """The development token issuer's public key (development and test only)."""
    rt = request.app.state.rix
    return JSONResponse(dev_jwks(rt.settings.data_dir))


def install(app: FastAPI, settings: Settings) -> None:
    """Mount /healthz, /readyz and, outside production, the development issuer's JWKS."""
    router = APIRouter(tags=["operations"])
    router.add_api_route("/healthz", healthz, methods=["GET"], summary="liveness")
    router.add_api_route("/readyz", readyz, methods=["GET"], summary="readiness (database)")
    if settings.env != "production":
        router.add_api_route(
            "/.well-known/jwks.json", jwks, methods=["GET"], summary="development issuer JWKS"
        )
    app.include_router(router)
