"""Bearer token verification (IHE IUA ITI-72 JWT): signature, algorithm allow-list, iss, aud,
exp/nbf with leeway. Every failure is an Unauthorized whose reason is logged and audited but
never detailed to the caller."""

from __future__ import annotations

import time
import uuid
from typing import Any

from jose import jwt
from jose.exceptions import JOSEError

from app.auth.keys import DEV_KID, KeySet, dev_private_pem
from app.config import Settings
from app.errors import Unauthorized

# Asymmetric algorithms only, each tied to the key type it needs: a public key can never be
# used as an HMAC secret, and `none` is never accepted.
_ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}


class TokenVerifier:
    """Verifies bearer JWTs against the trusted issuer's keys."""

    def __init__(self, settings: Settings, keys: KeySet) -> None:
        self.settings = settings
        self.keys = keys

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims; raises Unauthorized with the (internal) reason."""
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError:
            raise Unauthorized("malformed token") from None
        alg = header.get("alg")
        if alg == "HS256" and self.settings.jwt_hs256_secret and self.settings.env != "production":
            key: Any = self.settings.jwt_hs256_secret
        elif alg in _ASYMMETRIC:
            jwk_ = self.keys.get(str(header.get("kid", "")))
            if jwk_ is None:
                raise Unauthorized(f"unknown signing key kid={header.get('kid')!r}")
            if jwk_.get("kty") != _ASYMMETRIC[alg] or jwk_.get("alg", alg) != alg:
                raise Unauthorized(f"algorithm {alg} does not match key {jwk_.get('kid')!r}")
            key = jwk_
        else:
            raise Unauthorized(f"algorithm {alg!r} not allowed")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={
                    "leeway": self.settings.jwt_leeway_seconds,
                    "require_exp": True,
                    "require_iat": False,
                    "require_sub": True,
                    "require_aud": True,
                    "require_iss": True,
                },
            )
        except JOSEError as exc:
            raise Unauthorized(f"token rejected: {exc}") from None
        return claims


def issue_dev_token(
    settings: Settings,
    *,
    subject: str,
    name: str,
    role: str,
    organization_id: str | None = None,
    organization_name: str | None = None,
    purpose: str = "TREAT",
    scopes: list[str] | None = None,
    patient: str | None = None,
    npi: str | None = None,
    ttl: int = 3600,
) -> str:
    """A token signed by the development issuer (refused in production)."""
    if settings.env == "production":
        raise RuntimeError("the development token issuer is disabled when RIX_ENV=production")
    now = int(time.time())
    iua: dict[str, Any] = {
        "subject_name": name,
        "subject_role": {"system": "https://fhir.rix.example/CodeSystem/role", "code": role},
        "purpose_of_use": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "code": purpose,
        },
    }
    if organization_id:
        iua["subject_organization_id"] = organization_id
        iua["subject_organization"] = organization_name or organization_id
    if npi:
        iua["national_provider_identifier"] = npi
    if patient:
        iua["person_id"] = patient
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
        "scope": " ".join(scopes or default_scopes(role)),
        "extensions": {"ihe_iua": iua},
    }
    if patient:
        claims["patient"] = patient
    return jwt.encode(
        claims,
        dev_private_pem(settings.data_dir).decode("ascii"),
        algorithm="RS256",
        headers={"kid": DEV_KID},
    )


def default_scopes(role: str) -> list[str]:
    """The SMART v2 scopes a development token of `role` gets when none are asked for."""
    if role == "patient":
        return ["patient/*.rs"]
    if role in ("site-system", "registry"):
        return ["system/*.cruds"]
    return ["user/*.cruds"]
