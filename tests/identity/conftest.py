"""The identity tests mint the same few tokens many times per test (every site feed, every
clinician request); signing one costs tens of milliseconds (the development key is loaded each
time), so within a test each distinct token is minted once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.identity.support import Token


@pytest.fixture
def token(token: Token) -> Token:
    """The root `token` fixture, memoised per test on its arguments."""
    minted: dict[tuple[Any, ...], dict[str, str]] = {}

    def make(role: str, **kw: Any) -> dict[str, str]:
        key = (role, *sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items()))
        if key not in minted:
            minted[key] = token(role, **kw)
        return dict(minted[key])

    return make
