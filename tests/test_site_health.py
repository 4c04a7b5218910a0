"""Site health: `rix sites check` probes every active PACS endpoint (QIDO-RS) and records the
outcome; administrators read it with `GET /fhir/Endpoint/$health`."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import cli
from app.config import Settings
from app.sites.registry import Site, SiteEndpoint, apply_sites
from tests.conftest import Token


class _Pacs(BaseHTTPRequestHandler):
    """A DICOMweb endpoint that answers QIDO-RS with an empty list, or fails with 503."""

    failing = False

    def do_GET(self) -> None:
        status = 503 if self.failing else 200
        body = b"[]" if status == 200 else b"busy"
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        return


class _Failing(_Pacs):
    failing = True


@pytest.fixture
def pacs() -> Iterator[dict[str, str]]:
    """Base URLs: a healthy PACS, a failing one, and one nobody listens on."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (_Pacs, _Failing)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    yield {
        "up": f"http://127.0.0.1:{servers[0].server_port}/dicom-web",
        "failing": f"http://127.0.0.1:{servers[1].server_port}/dicom-web",
        "down": f"http://127.0.0.1:{closed}/dicom-web",
    }
    for server in servers:
        server.shutdown()
        server.server_close()


def _sites(client: TestClient, pacs: dict[str, str]) -> None:
    sites = [
        Site(
            id=site_id,
            name=f"Site {site_id}",
            endpoints=(
                SiteEndpoint(
                    address=pacs[kind], ae_title=f"AE{site_id}", timeout_seconds=Decimal(2)
                ),
            ),
        )
        for site_id, kind in (("901", "up"), ("902", "failing"), ("903", "down"))
    ]
    apply_sites(client.app.state.rix, sites)  # type: ignore[attr-defined]


def _health(client: TestClient) -> dict[str, dict[str, Any]]:
    response = client.get("/fhir/Endpoint/$health")
    assert response.status_code == 200, response.text
    out = {}
    for site in response.json()["parameter"]:
        parts = {
            p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in site["part"]
        }
        out[parts["address"]] = parts
    return out


def test_check_records_each_endpoint_s_health(
    client: TestClient,
    settings: Settings,
    pacs: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _sites(client, pacs)
    assert all("lastSuccess" not in h for h in _health(client).values())  # never contacted
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    assert cli.main(["sites", "check"]) == 1  # some endpoint fails
    out = capsys.readouterr().out
    assert "3 active endpoints checked, 2 failing" in out
    health = _health(client)
    assert "lastSuccess" in health[pacs["up"]] and "lastError" not in health[pacs["up"]]
    assert health[pacs["failing"]]["lastError"] == "HTTP 503"
    assert "lastSuccess" not in health[pacs["down"]]
    assert "ConnectError" in health[pacs["down"]]["lastError"]


def test_only_administrators_see_health(client: TestClient, token: Token) -> None:
    for role in ("site-system", "radiologist", "dpo", "identity-officer"):
        response = client.get("/fhir/Endpoint/$health", headers=token(role, org="423"))
        assert response.status_code == 403, role
        assert response.json()["resourceType"] == "OperationOutcome"
