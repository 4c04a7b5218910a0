"""Signing keys: the trusted issuer's JWKS (file or URL, cached, refreshed on unknown `kid`)
and the development issuer's own key pair, generated on first use under RIX_DATA_DIR."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk

DEV_KEY_FILE = "dev-issuer-key.pem"
DEV_KID = "rix-dev-1"


class KeySet:
    """Public keys by `kid`. A URL source is re-fetched when an unknown `kid` shows up (at most
    once per `min_refresh` seconds, so forged kids cannot hammer the issuer)."""

    def __init__(
        self,
        *,
        keys: list[dict[str, Any]] | None = None,
        url: str | None = None,
        min_refresh: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._keys = {k.get("kid", ""): k for k in keys or []}
        self._url = url
        self._min_refresh = min_refresh
        self._last_fetch = 0.0
        self._lock = threading.Lock()
        self._transport = transport

    @classmethod
    def from_file(cls, path: Path) -> KeySet:
        """Keys from a JWKS JSON file."""
        data = json.loads(path.read_text("utf-8"))
        return cls(keys=list(data.get("keys", [])))

    def get(self, kid: str) -> dict[str, Any] | None:
        """The JWK with this `kid`, refreshing a URL source once if it is unknown."""
        key = self._keys.get(kid)
        if key is None and self._url:
            self._refresh()
            key = self._keys.get(kid)
        return key

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._last_fetch < self._min_refresh and self._last_fetch:
                return
            self._last_fetch = time.monotonic()
            try:
                with httpx.Client(timeout=5.0, transport=self._transport) as client:
                    data = client.get(str(self._url)).raise_for_status().json()
            except (httpx.HTTPError, ValueError):
                return  # keep the keys we have; the unknown kid stays unknown
            self._keys = {k.get("kid", ""): k for k in data.get("keys", [])}

    def jwks(self) -> dict[str, Any]:
        """The keys as a JWKS document."""
        return {"keys": list(self._keys.values())}


def create_secret_file(path: Path, content: bytes) -> None:
    """Write a 0600 file unless it exists; when processes race, the first one wins and the
    others' content is discarded (they read the winner's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    tmp.write_bytes(content)
    tmp.chmod(0o600)
    try:
        os.link(tmp, path)  # atomic, and fails if another process created the file first
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def dev_private_key(data_dir: Path) -> rsa.RSAPrivateKey:
    """The development issuer's RSA key, created (mode 0600) on first use."""
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        create_secret_file(path, pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


def dev_private_pem(data_dir: Path) -> bytes:
    """The development key in PEM (for signing)."""
    return dev_private_key(data_dir).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def dev_jwks(data_dir: Path) -> dict[str, Any]:
    """The development issuer's public key as a JWKS."""
    public = (
        dev_private_key(data_dir)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key = jwk.construct(public.decode("ascii"), "RS256").to_dict()
    key = {k: (v.decode("ascii") if isinstance(v, bytes) else v) for k, v in key.items()}
    key.update(kid=DEV_KID, use="sig", alg="RS256")
    return {"keys": [key]}
