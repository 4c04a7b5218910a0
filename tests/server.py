"""Run the real `rix` command in a subprocess: free loopback ports, RIX_* environment, logs.

Used by the tests that talk to a real `rix serve` process (FHIR client libraries, several
processes on one database) and by the CLI tests. Servers listen on 127.0.0.1 only, on a port the
kernel picked; they are stopped by PID (terminate, then kill after a bounded wait).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.tokens import issue_dev_token
from app.config import Settings

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.1


def rix_executable() -> str:
    """The `rix` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("rix")
    if beside.is_file():
        return str(beside)
    found = shutil.which("rix")
    if found is None:
        raise RuntimeError("the `rix` console script is not installed (pip install -e .[test])")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rix_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """A copy of this environment with every inherited RIX_* variable replaced by ours."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RIX_")}
    env.update(
        {
            "RIX_ENV": "test",
            "RIX_DATABASE_URL": database_url,
            "RIX_DATA_DIR": str(data_dir),
            "RIX_LOG_LEVEL": "warning",
        }
    )
    env.update({f"RIX_{k.upper()}": v for k, v in extra.items()})
    return env


def run_rix(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run `rix ARGS` to completion and capture its output."""
    return subprocess.run(
        [rix_executable(), *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class RixServer:
    """A `rix serve` process listening on 127.0.0.1:port."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    data_dir: Path

    def token(self, role: str = "admin", **claims: Any) -> str:
        """A development token this server accepts (servers of one workdir share the key)."""
        settings = Settings(env="test", data_dir=self.data_dir)
        return issue_dev_token(
            settings, subject=f"test-{role}", name=f"Test {role}", role=role, **claims
        )

    def headers(self, role: str = "admin") -> dict[str, str]:
        """An Authorization header for `role`."""
        return {"Authorization": f"Bearer {self.token(role)}"}

    @property
    def url(self) -> str:
        """The server root (health probes live here)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def fhir_base(self) -> str:
        """The FHIR base URL."""
        return f"{self.url}/fhir"

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Terminate by PID; kill if it has not exited after a bounded wait."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)


def spawn_server(database_url: str, workdir: Path, name: str = "rix") -> RixServer:
    """Start `rix serve` on a free port without waiting for it (see `wait_healthy`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"{name}-{port}.log"
    # One data directory per workdir: processes serving one database share the development
    # issuer's key and the audit-chain key, as production processes share RIX_JWKS/RIX_AUDIT_KEY.
    data_dir = workdir / "rix-data"
    env = rix_env(database_url, data_dir)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [rix_executable(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return RixServer(process, port, log_path, data_dir)


def wait_healthy(server: RixServer, timeout: float = STARTUP_TIMEOUT) -> bool:
    """Poll /healthz until it answers 200, the process exits, or the deadline passes."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            try:
                if http.get(f"{server.url}/healthz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            try:  # the pause between polls doubles as the check that the process still runs
                server.process.wait(timeout=POLL_INTERVAL)
                return False
            except subprocess.TimeoutExpired:
                continue
    return False


def start_servers(database_url: str, workdir: Path, count: int = 1) -> list[RixServer]:
    """Start `count` servers on one database and wait until each is healthy.

    A server that dies before answering because its port was taken in the meantime is retried
    on a new port (twice at most); any other failure fails the test with the server's log.
    """
    spawned = [spawn_server(database_url, workdir, f"rix{i}") for i in range(count)]
    ready: list[RixServer] = []
    try:
        for i, server in enumerate(spawned):
            for attempt in range(3):
                if wait_healthy(server):
                    break
                log = server.log()
                server.stop()
                if attempt == 2 or "address already in use" not in log.lower():
                    pytest.fail(f"rix serve did not become healthy; its log:\n{log}")
                server = spawn_server(database_url, workdir, f"rix{i}")
                spawned.append(server)
            ready.append(server)
    except BaseException:
        for server in spawned:
            server.stop()
        raise
    return ready


@contextmanager
def running_servers(database_url: str, workdir: Path, count: int = 1) -> Iterator[list[RixServer]]:
    """`count` healthy servers on one database, stopped by PID on exit."""
    servers = start_servers(database_url, workdir, count)
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()
