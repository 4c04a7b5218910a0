"""Who is calling: the principal read from a verified token's claims (IHE IUA, SMART scopes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.errors import Unauthorized

ROLES = (
    "admin",
    "identity-officer",
    "site-system",
    "radiologist",
    "clinician",
    "gp",
    "registry",
    "dpo",
    "patient",
)
PURPOSES = ("TREAT", "ETREAT", "BTG", "HPAYMT", "HOPERAT", "PATRQT", "PUBHLTH", "SYSADMIN")


def _code(value: Any) -> str | None:
    """A claim that may be a string, a Coding-like object or a list of them -> its code."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("code")
    return str(value) if value not in (None, "") else None


@dataclass(frozen=True)
class Principal:
    """The authenticated person or system a request acts for."""

    subject: str
    name: str
    role: str
    organization_id: str | None = None
    organization_name: str | None = None
    purpose_of_use: str = "TREAT"
    national_provider_identifier: str | None = None
    person_id: str | None = None
    patient: str | None = None
    scopes: tuple[str, ...] = field(default_factory=tuple)
    token_id: str | None = None

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        """Read IUA claims (`extensions.ihe_iua.*`), falling back to top-level equivalents."""
        iua = (claims.get("extensions") or {}).get("ihe_iua") or {}

        def claim(name: str) -> Any:
            return iua.get(name) if iua.get(name) not in (None, "") else claims.get(name)

        subject = claims.get("sub")
        role = _code(claim("subject_role"))
        if not subject or not isinstance(subject, str):
            raise Unauthorized("token without subject")
        if role not in ROLES:
            raise Unauthorized(f"token with unknown subject_role {role!r}")
        purpose = _code(claim("purpose_of_use")) or "TREAT"
        if purpose not in PURPOSES:
            raise Unauthorized(f"token with unknown purpose_of_use {purpose!r}")
        scope = claims.get("scope") or ""
        scopes = tuple(scope.split()) if isinstance(scope, str) else tuple(map(str, scope))
        org = claim("subject_organization_id")
        return cls(
            subject=subject,
            name=str(claim("subject_name") or claims.get("name") or subject),
            role=role,
            organization_id=str(org) if org else None,
            organization_name=claim("subject_organization"),
            purpose_of_use=purpose,
            national_provider_identifier=claim("national_provider_identifier"),
            person_id=claim("person_id"),
            patient=claims.get("patient") or (claim("person_id") if role == "patient" else None),
            scopes=scopes,
            token_id=claims.get("jti"),
        )


# The server itself (CLI, demo loader, maintenance jobs): audited under this name.
SYSTEM = Principal(
    subject="rix-system",
    name="RIX system",
    role="admin",
    scopes=("system/*.cruds",),
    purpose_of_use="SYSADMIN",
)
