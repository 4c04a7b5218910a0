"""Nominative-access benchmark: what authentication and the audit trail cost.

1. Audit on vs off: two `rix serve` processes on ONE throwaway PostgreSQL database (same data,
   same tokens), one with RIX_AUDIT=true and one with RIX_AUDIT=false. A single client runs the
   same read-heavy mix against each, interleaved in rounds so that machine noise hits both
   alike: read Patient, priors search `ImagingStudy?patient=...&_sort=-started`, read the first
   study. Reported: requests/s of each and the ratio on/off (target >= 0.8).
2. Token verification: TokenVerifier.verify + Principal.from_claims on an RS256 development
   token, in process, many times -> p50/p95 in ms (target p50 <= 1 ms).

Usage::

    python bench/audit_overhead.py [--patients 200] [--rounds 10] [--per-round 60]

Writes a JSON summary to bench/out/ and drops the database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from app.auth.keys import KeySet, dev_jwks  # noqa: E402
from app.auth.tokens import TokenVerifier, issue_dev_token  # noqa: E402
from app.config import Settings  # noqa: E402
from app.fhir.naming import ipp_system  # noqa: E402
from app.policy.principal import Principal  # noqa: E402
from app.services.bundles import process_bundle  # noqa: E402
from app.services.runtime import Runtime  # noqa: E402
from app.storage.migrations import upgrade  # noqa: E402

OUT = ROOT / "bench" / "out"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load(settings: Settings, patients: int) -> list[str]:
    rt = Runtime.build(settings)
    ids: list[str] = []
    for start in range(0, patients, 10):
        entries = []
        for i in range(start, min(start + 10, patients)):
            url = f"urn:uuid:{uuid.uuid4()}"
            entries.append(
                {
                    "fullUrl": url,
                    "resource": {
                        "resourceType": "Patient",
                        # Known at the radiologist's site (423): the policy lets him see them.
                        "identifier": [{"system": ipp_system("423"), "value": str(i)}],
                        "name": [{"family": f"Bench{i}", "given": ["Alice"]}],
                    },
                    "request": {"method": "POST", "url": "Patient"},
                }
            )
            for k in range(5):
                entries.append(
                    {
                        "resource": {
                            "resourceType": "ImagingStudy",
                            "status": "available",
                            "subject": {"reference": url},
                            "started": f"20{10 + k}-0{1 + k}-15T10:00:00Z",
                            "modality": [
                                {
                                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                                    "code": "CT",
                                }
                            ],
                        },
                        "request": {"method": "POST", "url": "ImagingStudy"},
                    }
                )
        result = process_bundle(
            rt,
            "http://bench/fhir",
            {"resourceType": "Bundle", "type": "transaction", "entry": entries},
            return_pref="minimal",
        )
        ids += [
            e["response"]["location"].split("/")[1]
            for e in result["entry"]
            if e["response"]["location"].startswith("Patient/")
        ]
    rt.engine.dispose()
    return ids


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    rix = Path(sys.executable).with_name("rix")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(rix), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start: {log.read_text()}")


def _mix(client: httpx.Client, base: str, patient: str) -> None:
    for response in (
        client.get(f"{base}/Patient/{patient}"),
        studies := client.get(
            f"{base}/ImagingStudy", params={"patient": f"Patient/{patient}", "_sort": "-started"}
        ),
    ):
        response.raise_for_status()
    first = studies.json()["entry"][0]["resource"]["id"]
    client.get(f"{base}/ImagingStudy/{first}").raise_for_status()


def _token_cost(data_dir: Path, n: int) -> dict[str, float]:
    settings = Settings(env="test", data_dir=data_dir)
    verifier = TokenVerifier(settings, KeySet(keys=dev_jwks(data_dir)["keys"]))
    token = issue_dev_token(
        settings, subject="rpps-1", name="Dr Bench", role="radiologist", organization_id="423"
    )
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        Principal.from_claims(verifier.verify(token))
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"n": n, "p50_ms": round(samples[n // 2], 3), "p95_ms": round(samples[int(n * 0.95)], 3)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=60, help="mixes per server per round")
    parser.add_argument("--token-samples", type=int, default=5000)
    parser.add_argument(
        "--sync-reads",
        action="store_true",
        help="RIX_AUDIT_SYNC_READS=true: reads wait for their audit record to reach the disk",
    )
    args = parser.parse_args()

    name = f"rix_bench_audit_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    work = Path(tempfile.mkdtemp(prefix="rix-bench-audit-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(url)
        settings = Settings(env="test", database_url=url, data_dir=work / "data")
        patients = _load(settings, args.patients)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("RIX_")}
        base_env.update(
            RIX_ENV="test",
            RIX_DATABASE_URL=url,
            RIX_DATA_DIR=str(work / "data"),
            RIX_LOG_LEVEL="warning",
        )
        ports = {}
        for mode in ("on", "off"):
            ports[mode] = _free_port()
            env = {**base_env, "RIX_AUDIT": "true" if mode == "on" else "false"}
            env["RIX_AUDIT_SYNC_READS"] = "true" if args.sync_reads else "false"
            processes.append(_serve(env, ports[mode], work / f"{mode}.log"))
        token = issue_dev_token(
            settings, subject="rpps-1", name="Dr Bench", role="radiologist", organization_id="423"
        )
        headers = {"Authorization": f"Bearer {token}"}
        rng = random.Random(7)
        elapsed = {"on": 0.0, "off": 0.0}
        with httpx.Client(headers=headers, timeout=30) as client:
            for mode in ("on", "off"):  # warm-up
                for _ in range(20):
                    _mix(client, f"http://127.0.0.1:{ports[mode]}/fhir", rng.choice(patients))
            for r in range(args.rounds):
                order = ("on", "off") if r % 2 == 0 else ("off", "on")
                for mode in order:
                    base = f"http://127.0.0.1:{ports[mode]}/fhir"
                    t0 = time.perf_counter()
                    for _ in range(args.per_round):
                        _mix(client, base, rng.choice(patients))
                    elapsed[mode] += time.perf_counter() - t0
        requests = args.rounds * args.per_round * 3
        summary: dict[str, Any] = {
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "nproc": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg": os.getloadavg(),
            },
            "patients": args.patients,
            "audit_sync_reads": args.sync_reads,
            "requests_per_mode": requests,
            "audit_on_rps": round(requests / elapsed["on"], 1),
            "audit_off_rps": round(requests / elapsed["off"], 1),
            "ratio_on_off": round(elapsed["off"] / elapsed["on"], 3),
            "token_verification": _token_cost(work / "data", args.token_samples),
        }
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"audit_overhead_{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"written {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
