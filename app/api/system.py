"""Operational endpoints: liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

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


def install(app: FastAPI) -> None:
    """Mount /healthz and /readyz."""
    router = APIRouter(tags=["operations"])
    router.add_api_route("/healthz", healthz, methods=["GET"], summary="liveness")
    router.add_api_route("/readyz", readyz, methods=["GET"], summary="readiness (database)")
    app.include_router(router)
