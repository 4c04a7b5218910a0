"""Token verification (IHE IUA ITI-72): the bad-token matrix at the verifier level."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

from app.auth.keys import DEV_KID, KeySet, dev_jwks, dev_private_pem
from app.auth.tokens import TokenVerifier, issue_dev_token
from app.config import Settings
from app.errors import Unauthorized
from app.policy.principal import Principal


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(env="test", data_dir=tmp_path, database_url="sqlite://")


@pytest.fixture
def verifier(settings: Settings) -> TokenVerifier:
    return TokenVerifier(settings, KeySet(keys=dev_jwks(settings.data_dir)["keys"]))


def _claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "dr-house",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": "user/*.rs",
        "extensions": {"ihe_iua": {"subject_name": "Dr House", "subject_role": "radiologist"}},
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(settings: Settings, claims: dict[str, Any], kid: str = DEV_KID) -> str:
    pem = dev_private_pem(settings.data_dir).decode()
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})


def test_dev_token_round_trip(settings: Settings, verifier: TokenVerifier) -> None:
    token = issue_dev_token(
        settings,
        subject="rpps-10001",
        name="Dr Martin",
        role="radiologist",
        organization_id="423",
        organization_name="CH Romorantin",
        purpose="ETREAT",
        npi="10001",
    )
    principal = Principal.from_claims(verifier.verify(token))
    assert principal.subject == "rpps-10001"
    assert principal.role == "radiologist"
    assert principal.organization_id == "423"
    assert principal.purpose_of_use == "ETREAT"
    assert principal.national_provider_identifier == "10001"
    assert principal.scopes == ("user/*.cruds",)


def test_top_level_claims_are_accepted(settings: Settings, verifier: TokenVerifier) -> None:
    claims = _claims(settings, extensions=None, subject_role="dpo", subject_name="Mme DPO")
    principal = Principal.from_claims(verifier.verify(_sign(settings, claims)))
    assert (principal.role, principal.name) == ("dpo", "Mme DPO")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not-yet-valid",
        "wrong-aud",
        "wrong-iss",
        "unknown-kid",
        "alg-none",
        "hs256-with-public-key",
        "tampered-payload",
        "missing-exp",
        "garbage",
        "es256-on-rsa-key",
    ],
)
def test_bad_tokens_are_refused(settings: Settings, verifier: TokenVerifier, case: str) -> None:
    now = int(time.time())
    if case == "expired":
        token = _sign(settings, _claims(settings, exp=now - 3600, nbf=now - 7200))
    elif case == "not-yet-valid":
        token = _sign(settings, _claims(settings, nbf=now + 3600, exp=now + 7200))
    elif case == "wrong-aud":
        token = _sign(settings, _claims(settings, aud="someone-else"))
    elif case == "wrong-iss":
        token = _sign(settings, _claims(settings, iss="https://evil.example"))
    elif case == "unknown-kid":
        token = _sign(settings, _claims(settings), kid="other-key")
    elif case == "alg-none":
        token = f"{_b64({'alg': 'none', 'kid': DEV_KID})}.{_b64(_claims(settings))}."
    elif case == "hs256-with-public-key":
        # The classic confusion attack: HMAC-sign with the issuer's *public* key as secret.
        public = dev_jwks(settings.data_dir)["keys"][0]
        pem = jwk.construct(public, "RS256").to_pem()
        signing_input = f"{_b64({'alg': 'HS256', 'kid': DEV_KID})}.{_b64(_claims(settings))}"
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    elif case == "tampered-payload":
        header, _, signature = _sign(settings, _claims(settings)).split(".")
        forged = _claims(settings, extensions={"ihe_iua": {"subject_role": "admin"}})
        token = f"{header}.{_b64(forged)}.{signature}"
    elif case == "missing-exp":
        token = _sign(settings, _claims(settings, exp=None))
    elif case == "garbage":
        token = "not-a-jwt"
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        token = jwt.encode(
            _claims(settings), pem.decode(), algorithm="ES256", headers={"kid": DEV_KID}
        )
    with pytest.raises(Unauthorized):
        verifier.verify(token)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": None},
        {"extensions": {"ihe_iua": {"subject_role": "superuser"}}},
        {"extensions": {"ihe_iua": {"subject_role": "radiologist", "purpose_of_use": "FUN"}}},
    ],
)
def test_missing_or_unknown_claims_are_refused(
    settings: Settings, verifier: TokenVerifier, claims: dict[str, Any]
) -> None:
    with pytest.raises(Unauthorized):
        Principal.from_claims(verifier.verify(_sign(settings, _claims(settings, **claims))))


def test_hs256_only_when_configured_for_development(tmp_path: Path) -> None:
    base = Settings(env="development", data_dir=tmp_path, jwt_hs256_secret="s3cret-for-dev")
    token = jwt.encode(_claims(base), "s3cret-for-dev", algorithm="HS256")
    keys = KeySet(keys=dev_jwks(tmp_path)["keys"])
    assert TokenVerifier(base, keys).verify(token)["sub"] == "dr-house"
    production = base.model_copy(update={"env": "production"})
    with pytest.raises(Unauthorized):
        TokenVerifier(production, keys).verify(token)


def test_unknown_kid_refreshes_a_url_key_set_once(settings: Settings) -> None:
    import httpx

    calls = []
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    new_key = {
        **jwk.construct(public.decode(), "RS256").to_dict(),
        "kid": "rotated",
        "alg": "RS256",
    }
    new_key = {k: v.decode() if isinstance(v, bytes) else v for k, v in new_key.items()}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url)
        return httpx.Response(200, json={"keys": [new_key]})

    keys = KeySet(url="https://issuer.invalid/jwks", transport=httpx.MockTransport(handler))
    verifier = TokenVerifier(settings, keys)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    token = jwt.encode(
        _claims(settings), pem.decode(), algorithm="RS256", headers={"kid": "rotated"}
    )
    assert verifier.verify(token)["sub"] == "dr-house"
    forged = _sign(settings, _claims(settings), kid="forged-kid")
    for _ in range(3):
        with pytest.raises(Unauthorized):
            verifier.verify(forged)
    assert len(calls) == 1  # one fetch for the new kid, none for repeated unknown kids


def test_dev_issuer_refused_in_production(tmp_path: Path) -> None:
    settings = Settings(env="production", data_dir=tmp_path)
    with pytest.raises(RuntimeError):
        issue_dev_token(settings, subject="x", name="x", role="admin")


def test_dev_tokens_match_the_published_claims_schema(settings: Settings) -> None:
    import jsonschema

    schema_path = Path(__file__).resolve().parents[2] / "profiles" / "rix-access-token.schema.json"
    schema = json.loads(schema_path.read_text("utf-8"))
    for role in ("radiologist", "patient", "site-system"):
        token = issue_dev_token(
            settings, subject="s", name="n", role=role, organization_id="423", patient="p1"
        )
        jsonschema.validate(jwt.get_unverified_claims(token), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {
                "iss": "x",
                "aud": "y",
                "sub": "z",
                "exp": 1,
                "extensions": {"ihe_iua": {"subject_role": "root"}},
            },
            schema,
        )
