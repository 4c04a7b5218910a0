"""Settings read from RIX_ environment variables; built by create_app, never at import time."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a RIX process. Each field is the variable RIX_<NAME> (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="RIX_", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite:///./rix.db"
    data_dir: Path = Path("./.rix")
    base_url: str | None = Field(
        default=None,
        description="Public base URL of the FHIR endpoint (e.g. https://rix.example/fhir); "
        "derived from each request when unset.",
    )
    default_page_size: int = Field(default=20, ge=1)
    max_page_size: int = Field(default=500, ge=1)
    max_include: int = Field(default=1000, ge=1, description="Cap on _include/_revinclude rows")
    db_pool_size: int = Field(default=10, ge=1)
    jwks_file: Path | None = Field(default=None, description="JWKS of the trusted token issuer")
    jwks_url: str | None = Field(default=None, description="JWKS URL of the trusted token issuer")
    jwt_issuer: str = Field(default="rix-dev-issuer", description="Required `iss` of tokens")
    jwt_audience: str = Field(default="rix", description="Required `aud` of tokens")
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwt_hs256_secret: str | None = Field(
        default=None, description="Development only: also accept HS256 tokens signed with this"
    )
    audit: bool = Field(
        default=True, description="Write BALP AuditEvents (off refused in production)"
    )
    audit_sync_reads: bool = Field(
        default=False,
        description="Wait for the disk when committing a read's audit record (PostgreSQL)",
    )
    audit_seal_interval: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between passes linking new audit records into the hash chain",
    )
    audit_retention_days: int = Field(default=730, ge=1)
    audit_key: str | None = Field(
        default=None, description="MAC key of the audit hash chain (required in production)"
    )
    community_policy: Literal["opt-out", "opt-in"] = Field(
        default="opt-out",
        description="The community's base consent policy: opt-out (implicit consent with a "
        "right of opposition, as MIRC/PANORAMA) or opt-in (an exam leaves its producing site "
        "only for a patient who consented to community sharing, as IMAG)",
    )
    consent_enforcement: bool = Field(
        default=True,
        description="Enforce patients' Consents (off refused in production; for benchmarks)",
    )
    break_glass_hours: float = Field(
        default=4.0,
        gt=0,
        le=72,
        description="How long a break-glass grant ($break-glass) lets its holder see a patient",
    )
    deletion_approval: Literal["auto", "admin"] = Field(
        default="admin",
        description="Patients' deletion requests (Task deletion-request): carried out at once "
        "(auto) or once an admin or the DPO accepts them (admin)",
    )
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"


@lru_cache
def get_settings() -> Settings:
    """The process settings from the environment (overridable in tests via create_app)."""
    return Settings()
