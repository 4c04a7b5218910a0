"""The README stays true: its curl examples work against `rix serve` on the demo data, and its
role table is the policy's matrix."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from app.fhir.registry import SERVED_TYPES
from app.policy.principal import ROLES
from app.policy.rules import MATRIX
from tests.server import rix_env, rix_executable, run_rix, running_servers

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(heading_text: str) -> str:
    text = README.read_text("utf-8")
    start = text.index(heading_text)
    match = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert match, f"no sh block after {heading_text!r}"
    return match.group(1)


def test_curl_examples_work(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'readme.db'}"
    workdir = tmp_path / "server"
    workdir.mkdir()
    env = rix_env(database, workdir / "rix-data")
    assert run_rix(["demo"], env, workdir).returncode == 0
    script = _block_after("Examples (with `rix serve` running on the demo data")
    script = script.replace(".venv/bin/rix", rix_executable())
    with running_servers(database, workdir) as (server,):
        # `curl -f` makes any HTTP error fail the script; every line must succeed.
        prelude = f'set -euo pipefail\ncurl() {{ command curl -f "$@"; }}\nB={server.fhir_base}\n'
        script = re.sub(r"^B=.*$", "", script, flags=re.M)
        result = subprocess.run(
            ["bash", "-c", prelude + script],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CapabilityStatement" in result.stdout
    assert "ACC401-2001" in result.stdout and "ACC401-2002" in result.stdout  # the priors
    assert '"resourceType":"DocumentReference"' in result.stdout  # and the revincluded report
    assert '"total":1' in result.stdout  # the site and the patient searches find the demo data


def test_role_table_matches_the_policy() -> None:
    text = README.read_text("utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(ROLES) + 1 and cells[0] in SERVED_TYPES:
            rows[cells[0]] = cells[1:]
    assert set(rows) == set(SERVED_TYPES)
    for type_name, cells in rows.items():
        for role, cell in zip(ROLES, cells, strict=True):
            grants = MATRIX[role]
            expected = grants.get(type_name, grants.get("*", "")) or "—"
            assert cell == expected, (type_name, role)
