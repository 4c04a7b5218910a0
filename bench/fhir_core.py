"""FHIR-core benchmark: ImagingStudy ingest through transaction Bundles, then the priors search.

What it does, in order:

1. creates a throwaway database (PostgreSQL: ``rix_bench_<db>_<size>_<hex>`` on the local
   server 127.0.0.1:5432 as user postgres; SQLite: a file under ``bench/out/``), unless
   ``--reuse URL`` names one kept from an earlier run (``--keep``);
2. runs ``rix db upgrade`` and starts ``rix serve --workers N`` as a subprocess on a free
   127.0.0.1 port, with RIX_DATA_DIR under ``bench/out/`` (development token keys, audit key);
3. generates realistic Patients (site identifier, name, birthDate, gender) and ImagingStudies
   (study-UID and accession identifiers, status, modality, started, description, 1-12 series
   with modality, body site and instance counts, numberOfSeries/numberOfInstances, subject)
   as transaction Bundles of 100 entries: 9 Patients + 91 ImagingStudies (1-20 per patient,
   ~10.1 on average) whose ``subject`` is the ``urn:uuid:`` fullUrl of their Patient in the
   same Bundle. Each Bundle comes from one of 12 sites and is sent with that site's
   ``site-system`` development token (the policy checks the site's identifier namespace).
   The Bundles are generated once into ``bench/out/bundles_<seed>_<studies>.ndjson`` before
   the clock starts (reused by later runs), so the load generator costs little CPU;
4. ingest: ``--clients`` concurrent httpx clients POST them to ``/fhir`` with
   ``Prefer: return=minimal``, a new connection per Bundle (uvicorn's workers share one
   listening socket: a few long-lived connections tend to land on one worker). Reported:
   resources/s over the whole load, Bundle latency, client and server CPU seconds.
   Optionally only ``--api-resources`` go through HTTP and the rest is filled with
   ``--fill inprocess`` (``app.services.bundles.process_bundle``, the code path of POST /fhir,
   in ``--fill-procs`` processes) or ``--fill api`` (``--fill-clients`` clients); each phase
   is reported on its own;
5. PostgreSQL only: ``ANALYZE`` (what autovacuum does soon after a bulk load anyway; SQLite is
   left as the server leaves it);
6. priors search through HTTP, single client, keep-alive, as a radiologist:
   ``GET /fhir/ImagingStudy?patient=Patient/<random existing>&_sort=-started``; ``--warmup``
   requests, then ``--searches`` measured ones -> p50/p95/p99 (ms);
7. the same searches' SQL, with the server stopped: statements compiled exactly as the server
   compiles them (``SearchParser`` + ``Compiler``, same snapshot) and executed on a direct
   connection from ``make_engine`` -- the snapshot ``max(pk)``, the ``count`` (Bundle.total)
   and the page query; the API/SQL ratio of the p50s; PostgreSQL: ``EXPLAIN (ANALYZE,
   BUFFERS)`` of the page and count queries, SQLite: ``EXPLAIN QUERY PLAN``;
8. writes a JSON summary to ``bench/out/`` and drops the database unless ``--keep``.

Examples::

    python bench/fhir_core.py --db postgresql --studies 100000
    python bench/fhir_core.py --db sqlite --studies 1000000 --keep
    # the search measurements again, on a database kept by an earlier run:
    python bench/fhir_core.py --db postgresql --studies 1000000 \\
        --reuse postgresql+psycopg://postgres@127.0.0.1:5432/rix_bench_po_1m_xxxxxxxx
    python bench/fhir_core.py --drop postgresql+psycopg://postgres@127.0.0.1:5432/rix_bench_x
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
# Run as `python bench/fhir_core.py`, this file's folder comes first on sys.path and its name
# would shadow the `fhir_core` package that fhir.resources imports: put the project root there.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

OUT = ROOT / "bench" / "out"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PATIENTS_PER_BUNDLE = 9
STUDIES_PER_BUNDLE = 91  # 9 + 91 = 100 entries; 91 / 9 = ~10.1 studies per patient
FHIR_JSON = "application/fhir+json"

# -- realistic content ------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FAMILY = _words(
    "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent "
    "Lefebvre Michel Garcia David Bertrand Roux Vincent Fournier Morel Girard Andre Mercier "
    "Dupont Lambert Bonnet Francois Martinez Legrand Garnier Faure Rousseau Blanc Guerin "
    "Muller Henry Roussel Nicolas Perrin Morin Mathieu Clement Gauthier Dumont Lopez Fontaine "
    "Chevalier Robin Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann "
    "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti "
    "De Luca Mancini Costa Giordano Rizzo Lombardi Moretti Janssens Peeters Maes Jacobs Mertens "
    "Willems Claes Goossens Wouters De Smet Dupuis O'Brien Smith Jones Williams Brown Taylor"
)
GIVEN_F = _words(
    "Marie Jeanne Françoise Monique Catherine Nathalie Isabelle Sylvie Anne Sophie Julie Léa "
    "Emma Chloé Camille Manon Sarah Laura Inès Zoé Hélène Élodie Claire Agnès Anna Giulia Eva"
)
GIVEN_M = _words(
    "Jean Pierre Michel André Philippe René Louis Alain Jacques Bernard Marcel Daniel Lucas "
    "Hugo Thomas Nicolas Julien Antoine Léo Louis Gabriel Arthur Raphaël Paul Jules Marco Luca"
)
# (modality, description, (body site code, display), series range, instances per series range)
PROCEDURES = (
    ("CT", "CT THORAX WITH CONTRAST", ("51185008", "Thorax"), (2, 5), (80, 600)),
    ("CT", "CT ABDOMEN PELVIS", ("818981001", "Abdomen"), (2, 6), (100, 900)),
    ("CT", "CT HEAD WITHOUT CONTRAST", ("69536005", "Head"), (1, 4), (30, 300)),
    ("MR", "MRI BRAIN WITH AND WITHOUT CONTRAST", ("12738006", "Brain"), (4, 12), (20, 200)),
    ("MR", "MRI LUMBAR SPINE", ("122496007", "Lumbar spine"), (3, 8), (15, 60)),
    ("MR", "MRI KNEE RIGHT", ("72696002", "Knee"), (4, 9), (20, 40)),
    ("CR", "XR CHEST PA AND LATERAL", ("51185008", "Thorax"), (1, 2), (1, 2)),
    ("DX", "XR HAND LEFT 3 VIEWS", ("85562004", "Hand"), (1, 3), (1, 3)),
    ("MG", "MAMMOGRAPHY SCREENING BILATERAL", ("76752008", "Breast"), (1, 1), (4, 4)),
    ("US", "US ABDOMEN COMPLETE", ("818981001", "Abdomen"), (1, 2), (10, 60)),
    ("NM", "NM BONE SCAN WHOLE BODY", ("38266002", "Entire body"), (1, 3), (2, 20)),
    ("PT", "PET-CT WHOLE BODY FDG", ("38266002", "Entire body"), (3, 6), (200, 700)),
)
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SITES = 12  # patients and accessions come from a dozen hospitals of the region
IPP_PREFIX = "https://fhir.rix.example/sid/ipp/"  # app.fhir.naming: a site's patient ids


def site_of(index: int) -> str:
    """The site (organisation id) that sends bundle number `index`."""
    return f"site-{index % SITES:02d}"


def _uid(rng: random.Random) -> str:
    """A DICOM UID derived from a UUID (PS3.5 B.2: the 2.25 root)."""
    return f"2.25.{rng.getrandbits(122)}"


def _patient(rng: random.Random, number: int, site: str) -> dict[str, Any]:
    gender = rng.choice(("female", "male"))
    given = rng.choice(GIVEN_F if gender == "female" else GIVEN_M)
    birth = datetime(1930, 1, 1) + timedelta(days=rng.randrange(0, 365 * 90))
    return {
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                "system": IPP_PREFIX + site,
                "value": f"MRN{number:09d}",
            }
        ],
        "active": True,
        "name": [{"use": "official", "family": rng.choice(FAMILY), "given": [given]}],
        "gender": gender,
        "birthDate": birth.strftime("%Y-%m-%d"),
    }


def _study(rng: random.Random, number: int, site: str, patient_url: str) -> dict[str, Any]:
    modality, description, (site_code, site_display), nseries, ninst = rng.choice(PROCEDURES)
    started = datetime(2005, 1, 1) + timedelta(seconds=rng.randrange(0, 20 * 365 * 86400))
    series = []
    for i in range(rng.randint(*nseries)):
        series.append(
            {
                "uid": _uid(rng),
                "number": i + 1,
                "modality": {"system": DCM, "code": modality},
                "description": f"{description.split()[0]} SERIES {i + 1}",
                "numberOfInstances": rng.randint(*ninst),
                "bodySite": {"system": SCT, "code": site_code, "display": site_display},
            }
        )
    return {
        "resourceType": "ImagingStudy",
        "identifier": [
            {"system": "urn:dicom:uid", "value": f"urn:oid:{_uid(rng)}"},
            {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                "system": f"https://fhir.rix.example/sid/accession/{site}",
                "value": f"ACC{number:010d}",
            },
        ],
        "status": "available",
        "modality": [{"system": DCM, "code": modality}],
        "subject": {"reference": patient_url},
        "started": started.strftime("%Y-%m-%dT%H:%M:%S") + rng.choice(("Z", "+01:00", "+02:00")),
        "numberOfSeries": len(series),
        "numberOfInstances": sum(s["numberOfInstances"] for s in series),
        "description": description,
        "series": series,
    }


def bundle_counts(studies: int) -> list[int]:
    """Studies in each bundle: 91 each, the last one takes the remainder."""
    full, rest = divmod(studies, STUDIES_PER_BUNDLE)
    return [STUDIES_PER_BUNDLE] * full + ([rest] if rest else [])


def make_bundle(seed: int, index: int, n_studies: int) -> dict[str, Any]:
    """Transaction Bundle number `index` (deterministic): its patients, then their studies."""
    rng = random.Random(seed * 1_000_003 + index)
    site = site_of(index)
    n_patients = min(PATIENTS_PER_BUNDLE, n_studies)
    # 1-20 studies per patient (~10 on average), summing to n_studies
    weights = [rng.random() + 0.05 for _ in range(n_patients)]
    counts = [1] * n_patients
    for _ in range(n_studies - n_patients):
        counts[rng.choices(range(n_patients), weights)[0]] += 1
    entries: list[dict[str, Any]] = []
    studies: list[dict[str, Any]] = []
    study_no = index * STUDIES_PER_BUNDLE
    for p in range(n_patients):
        url = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        entries.append(
            {
                "fullUrl": url,
                "resource": _patient(rng, index * PATIENTS_PER_BUNDLE + p, site),
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        for _ in range(counts[p]):
            studies.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}",
                    "resource": _study(rng, study_no, site, url),
                    "request": {"method": "POST", "url": "ImagingStudy"},
                }
            )
            study_no += 1
    rng.shuffle(studies)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries + studies}


# -- databases --------------------------------------------------------------------------------


def create_database(kind: str, studies: int) -> str:
    """A new empty database; returns its SQLAlchemy URL."""
    tag = f"{studies // 1000}k" if studies < 1_000_000 else f"{studies // 1_000_000}m"
    name = f"rix_bench_{kind[:2]}_{tag}_{uuid.uuid4().hex[:8]}"
    if kind == "sqlite":
        OUT.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{OUT / (name + '.db')}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a benchmark database (only names starting with rix_bench_) and its data dir."""
    shutil.rmtree(data_dir(url), ignore_errors=True)
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        assert path.name.startswith("rix_bench_"), path
        for suffix in ("", "-wal", "-shm", "-writer.lock"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return
    name = make_url(url).database
    assert name and name.startswith("rix_bench_"), name
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def database_size(engine: Engine) -> int:
    """Bytes used by the database."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        size = conn.exec_driver_sql("PRAGMA page_size").scalar()
        return int(pages or 0) * int(size or 0)


def analyze(engine: Engine) -> float | None:
    """PostgreSQL: ANALYZE after the bulk load (what autovacuum does soon after anyway); returns
    the seconds it took. SQLite is left as the server leaves it (nothing analyses it)."""
    if engine.dialect.name != "postgresql":
        return None
    start = time.perf_counter()
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    return time.perf_counter() - start


# -- server -----------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def data_dir(url: str) -> Path:
    """RIX_DATA_DIR shared by the server and the bench (development token keys, audit key)."""
    name = make_url(url).database or "db"
    return OUT / f"data-{Path(name).stem}"


def settings_for(url: str) -> Any:
    """The server's settings, as the bench process sees them."""
    from app.config import Settings

    return Settings(env="development", database_url=url, data_dir=data_dir(url))


def bearer(url: str, role: str, org: str | None) -> dict[str, str]:
    """An Authorization header with a development token of `role` (at site `org`)."""
    from app.auth.tokens import issue_dev_token

    token = issue_dev_token(
        settings_for(url),
        subject=f"bench-{role}-{org or 'region'}",
        name=f"Benchmark {role} {org or ''}".strip(),
        role=role,
        organization_id=org,
        organization_name=org,
        ttl=24 * 3600,
    )
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Server:
    """A `rix serve` subprocess."""

    url: str
    workers: int
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log: Path = OUT / "server.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RIX_DATABASE_URL=self.url,
            RIX_DATA_DIR=str(data_dir(self.url)),
            RIX_LOG_LEVEL="warning",
            RIX_ENV="development",
        )
        return env

    def upgrade(self) -> None:
        subprocess.run(["rix", "db", "upgrade"], env=self.env(), check=True, cwd=ROOT)

    def start(self) -> str:
        self.port = free_port()
        cmd = ["rix", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", str(self.workers)]
        self.log = OUT / f"server-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        base = f"http://127.0.0.1:{self.port}/fhir"
        for _ in range(600):  # up to 60 s
            if self.proc.poll() is not None:
                raise RuntimeError(f"rix serve exited; see {self.log}")
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("rix serve did not answer within 60 s")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by the server's processes (parent and workers)."""
        out: dict[str, float] = {}
        if not self.proc:
            return out
        tick = os.sysconf("SC_CLK_TCK")
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[str(pid)] = round((int(fields[11]) + int(fields[12])) / tick, 1)
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# -- ingest -----------------------------------------------------------------------------------


@dataclass
class IngestStats:
    """What one ingest phase did."""

    how: str
    bundles: int = 0
    resources: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    client_cpu: float | None = None

    def rate(self) -> float:
        return self.rate_at(self.seconds)

    def rate_at(self, seconds: float) -> float:
        return self.resources / seconds if seconds else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "how": self.how,
            "bundles": self.bundles,
            "resources": self.resources,
            "seconds": round(self.seconds, 2),
            "resources_per_s": round(self.rate(), 1),
        }
        if self.latencies:
            out["bundle_ms"] = percentiles(self.latencies)
        if self.client_cpu is not None:
            out["client_cpu_s"] = round(self.client_cpu, 1)
        return out


def _check_response(response: httpx.Response, n_entries: int) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"transaction failed: {response.status_code} {response.text[:500]}")
    entries = response.json().get("entry") or []
    if len(entries) != n_entries or any(
        not e["response"]["status"].startswith("201") for e in entries
    ):
        raise RuntimeError(f"unexpected transaction-response: {response.text[:500]}")


def _bundle_line(job: tuple[int, int, int]) -> str:
    seed, index, n_studies = job
    bundle = make_bundle(seed, index, n_studies)
    text = json.dumps(bundle, ensure_ascii=False, separators=(",", ":"))
    return f"{index}\t{len(bundle['entry'])}\t{text}\n"


def prepare_bundles(seed: int, counts: list[int], procs: int) -> Path:
    """Generate the bundles once into bench/out (one per line), so that the load generator's
    CPU during the measured ingest is little more than sending bytes. Reused when present."""
    path = OUT / f"bundles_{seed}_{sum(counts)}.ndjson"
    if path.exists():
        return path
    start = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    jobs = [(seed, i, n) for i, n in enumerate(counts)]
    with (
        tmp.open("w", encoding="utf-8") as out,
        multiprocessing.get_context("spawn").Pool(procs) as pool,
    ):
        for line in pool.imap(_bundle_line, jobs, chunksize=16):
            out.write(line)
    tmp.replace(path)
    size = path.stat().st_size / 2**20
    print(f"generated {path.name} ({size:.0f} MiB) in {time.perf_counter() - start:.0f} s")
    return path


def read_bundles(path: Path, first: int, stop: int) -> Iterator[tuple[int, int, bytes]]:
    """(index, entries, body) of bundles first..stop-1 from a prepared file."""
    with path.open("rb") as lines:
        for line in lines:
            index, entries, body = line.rstrip(b"\n").split(b"\t", 2)
            if first <= int(index) < stop:
                yield int(index), int(entries), body


async def ingest_api(
    url: str,
    base: str,
    bundles: Iterator[tuple[int, int, bytes]],
    clients: int,
    progress: int,
) -> IngestStats:
    """POST the prepared bundles with `clients` concurrent clients."""
    stats = IngestStats(how=f"HTTP POST /fhir, {clients} concurrent clients")
    cpu0 = time.process_time()
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal"}
    # each site's PACS feeds its own patients (the policy checks the identifier namespace)
    tokens = {site_of(i): bearer(url, "site-system", site_of(i)) for i in range(SITES)}
    start = time.perf_counter()
    last = [start, 0]

    # A new connection per bundle: uvicorn's workers share one listening socket, and a few
    # long-lived connections tend to land on the same worker (one busy core, one idle).
    limits = httpx.Limits(max_keepalive_connections=0)

    async def client() -> None:
        async with httpx.AsyncClient(
            base_url=base, timeout=600, headers=headers, limits=limits
        ) as http:
            for i, n, body in bundles:
                t0 = time.perf_counter()
                response = await http.post(base, content=body, headers=tokens[site_of(i)])
                stats.latencies.append(time.perf_counter() - t0)
                _check_response(response, n)
                stats.bundles += 1
                stats.resources += n
                if stats.bundles % progress == 0:
                    now = time.perf_counter()
                    window = (stats.resources - last[1]) / (now - last[0])
                    last[:] = [now, stats.resources]
                    print(
                        f"  {stats.resources:>9,} resources  {stats.rate_at(now - start):7.0f}/s "
                        f"overall  {window:7.0f}/s last {progress} bundles",
                        flush=True,
                    )

    await asyncio.gather(*(client() for _ in range(clients)))
    stats.seconds = time.perf_counter() - start
    stats.client_cpu = time.process_time() - cpu0
    return stats


_FILL_RT: Any = None


def _fill_init(url: str) -> None:
    global _FILL_RT
    from app.services.runtime import Runtime

    _FILL_RT = Runtime.build(settings_for(url))


def _fill_one(job: tuple[int, int, int]) -> int:
    from app.policy.principal import Principal
    from app.services.bundles import process_bundle

    seed, index, n_studies = job
    body = make_bundle(seed, index, n_studies)
    site = site_of(index)
    principal = Principal(
        subject=f"bench-site-system-{site}",
        name=f"Benchmark site-system {site}",
        role="site-system",
        organization_id=site,
        organization_name=site,
        scopes=("system/*.cruds",),
    )
    result = process_bundle(
        _FILL_RT, "http://localhost/fhir", body, return_pref="minimal", principal=principal
    )
    return len(result.get("entry", []))


def ingest_inprocess(
    url: str, seed: int, counts: list[int], indexes: list[int], procs: int, progress: int
) -> IngestStats:
    """The same transaction code path without HTTP, in `procs` processes."""
    stats = IngestStats(how=f"in-process process_bundle, {procs} processes")
    start = time.perf_counter()
    jobs = [(seed, i, counts[i]) for i in indexes]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs, initializer=_fill_init, initargs=(url,)) as pool:
        for n in pool.imap_unordered(_fill_one, jobs, chunksize=4):
            stats.bundles += 1
            stats.resources += n
            if stats.bundles % progress == 0:
                rate = stats.resources / (time.perf_counter() - start)
                print(f"  {stats.resources:>9,} resources  {rate:7.0f}/s (in-process)", flush=True)
    stats.seconds = time.perf_counter() - start
    return stats


# -- search -----------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return {
        "n": len(ordered),
        "p50": round(at(0.50), 2),
        "p95": round(at(0.95), 2),
        "p99": round(at(0.99), 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def patient_ids(engine: Engine) -> list[str]:
    """Every live Patient id (in a stable order)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT resource_id FROM resource WHERE resource_type = 'Patient' "
                "AND deleted = :f ORDER BY pk"
            ),
            {"f": False},
        ).all()
    return [r[0] for r in rows]


PRIORS = "ImagingStudy"


def priors_pairs(patient: str) -> list[tuple[str, str]]:
    """The priors search's query parameters."""
    return [("patient", f"Patient/{patient}"), ("_sort", "-started")]


def search_api(
    url: str, base: str, patients: list[str], warmup: int
) -> tuple[dict[str, float], int]:
    """Sequential single-client priors searches by a radiologist; latency percentiles and the
    number of matches seen."""
    samples: list[float] = []
    matches = 0
    headers = {"Accept": FHIR_JSON, **bearer(url, "radiologist", site_of(0))}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as http:
        for n, patient in enumerate(patients):
            t0 = time.perf_counter()
            response = http.get(f"/{PRIORS}", params=priors_pairs(patient))
            elapsed = time.perf_counter() - t0
            if response.status_code != 200:
                raise RuntimeError(f"search failed: {response.status_code} {response.text[:300]}")
            body = response.json()
            if not body.get("total") or not body.get("entry"):
                raise RuntimeError(f"no priors for Patient/{patient}: {response.text[:300]}")
            starts = [e["resource"]["started"] for e in body["entry"]]
            if n < 5 and len(starts) > 1:  # spot-check the order (instants sort as UTC)
                as_utc = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in starts]
                assert as_utc == sorted(as_utc, reverse=True), starts
            if n >= warmup:
                samples.append(elapsed)
                matches += len(body["entry"])
    return percentiles(samples), matches


def search_sql(url: str, base: str, patients: list[str], warmup: int) -> dict[str, Any]:
    """The same searches' SQL as the server compiles it, timed on a direct connection."""
    from app.config import Settings
    from app.fhir.registry import build_registry
    from app.fhir.search import SearchParser
    from app.storage.compiler import Compiler
    from app.storage.db import make_engine
    from app.storage.tables import RESOURCE

    settings = Settings(database_url=url)
    engine = make_engine(url, pool_size=1)
    parser = SearchParser(
        build_registry(),
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        max_include=settings.max_include,
    )
    compiler = Compiler(base)

    max_pk_stmt = select(func.coalesce(func.max(RESOURCE.c.pk), 0))
    times: dict[str, list[float]] = {"max_pk": [], "count": [], "page": [], "total": []}
    with engine.connect() as conn:
        snapshot = int(conn.execute(max_pk_stmt).scalar_one())
        conn.rollback()
        # Statements are built (as the server builds them) before the clock starts: what is
        # timed is the database work plus the driver round trips.
        statements = []
        for patient in patients:
            query = parser.parse(PRIORS, priors_pairs(patient))
            query.snapshot = snapshot
            statements.append((compiler.select_count(query), compiler.select_page(query)))
        for n, (count_stmt, page_stmt) in enumerate(statements):
            t0 = time.perf_counter()
            assert int(conn.execute(max_pk_stmt).scalar_one()) == snapshot
            t1 = time.perf_counter()
            total = conn.execute(count_stmt).scalar_one()
            t2 = time.perf_counter()
            rows = conn.execute(page_stmt).all()
            t3 = time.perf_counter()
            conn.rollback()
            assert total and rows, patients[n]
            if n >= warmup:
                times["max_pk"].append(t1 - t0)
                times["count"].append(t2 - t1)
                times["page"].append(t3 - t2)
                times["total"].append(t3 - t0)
        plans = explain(conn, compiler, parser, patients[len(patients) // 2], snapshot)
    engine.dispose()
    return {"ms": {k: percentiles(v) for k, v in times.items()}, "plans": plans}


def explain(conn: Any, compiler: Any, parser: Any, patient: str, snapshot: int) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN on SQLite."""
    query = parser.parse(PRIORS, priors_pairs(patient))
    query.snapshot = snapshot
    out = {}
    for name, stmt in (
        ("page", compiler.select_page(query)),
        ("count", compiler.select_count(query)),
    ):
        compiled = stmt.compile(dialect=conn.dialect)
        if conn.dialect.name == "postgresql":
            sql = "EXPLAIN (ANALYZE, BUFFERS) " + str(compiled)
            rows = conn.exec_driver_sql(sql, compiled.params).all()
            out[name] = str(compiled) + "\n\n" + "\n".join(r[0] for r in rows)
        else:
            params = tuple(compiled.params[k] for k in compiled.positiontup)
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params).all()
            out[name] = str(compiled) + "\n\n" + "\n".join(f"{r[1]:>3} {r[3]}" for r in rows)
        conn.rollback()
    return out


# -- the run ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The machine and software versions."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    try:
        pg = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pg = "?"
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg,
        "loadavg_start": os.getloadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), help="required unless --drop")
    parser.add_argument("--studies", type=int, default=100_000, help="ImagingStudies to load")
    parser.add_argument("--clients", type=int, default=4, help="concurrent ingest clients")
    parser.add_argument("--workers", type=int, default=2, help="rix serve --workers")
    parser.add_argument(
        "--api-resources",
        type=int,
        default=None,
        help="ingest only about this many resources through HTTP, the rest with --fill",
    )
    parser.add_argument(
        "--fill", choices=("api", "inprocess"), default="inprocess", help="after --api-resources"
    )
    parser.add_argument("--fill-clients", type=int, default=8, help="clients for --fill api")
    parser.add_argument(
        "--fill-procs", type=int, default=2, help="processes for --fill inprocess and generation"
    )
    parser.add_argument("--searches", type=int, default=500, help="measured priors searches")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up priors searches")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", metavar="URL", help="skip the load: search an existing db")
    parser.add_argument("--drop", metavar="URL", help="drop a kept benchmark database and exit")
    parser.add_argument("--progress", type=int, default=200, help="print every N bundles")
    args = parser.parse_args(argv)

    if args.drop:
        drop_database(args.drop)
        print(f"dropped {args.drop}")
        return 0
    if not args.db:
        parser.error("--db is required")
    OUT.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "db": args.db,
        "studies": args.studies,
        "clients": args.clients,
        "server_workers": args.workers,
    }
    url = args.reuse or create_database(args.db, args.studies)
    result["database"] = url
    print(f"database: {url}", flush=True)
    server = Server(url, args.workers)
    engine = create_engine(url)
    try:
        server.upgrade()
        base = server.start()
        print(f"rix serve --workers {args.workers} at {base}", flush=True)
        if not args.reuse:
            counts = bundle_counts(args.studies)
            indexes = list(range(len(counts)))
            api_bundles = len(indexes)
            if args.api_resources is not None:
                api_bundles = min(len(indexes), -(-args.api_resources // 100))
            phases = []
            print(f"ingest: {len(counts)} bundles of <= 100 entries", flush=True)
            prepared = prepare_bundles(args.seed, counts, args.fill_procs)
            stats = asyncio.run(
                ingest_api(
                    url,
                    base,
                    read_bundles(prepared, 0, api_bundles),
                    args.clients,
                    args.progress,
                )
            )
            phases.append({**stats.summary(), "server_cpu_s": server.cpu_seconds()})
            print(f"ingest (API): {phases[-1]}", flush=True)
            rest = indexes[api_bundles:]
            if rest and args.fill == "api":
                cpu0 = server.cpu_seconds()
                stats = asyncio.run(
                    ingest_api(
                        url,
                        base,
                        read_bundles(prepared, api_bundles, len(counts)),
                        args.fill_clients,
                        args.progress,
                    )
                )
                summary = {**stats.summary(), "server_cpu_s": server.cpu_seconds()}
                phases.append({**summary, "server_cpu_s_before": cpu0})
            elif rest:
                server.stop()
                stats = ingest_inprocess(
                    url, args.seed, counts, rest, args.fill_procs, args.progress
                )
                phases.append(stats.summary())
                base = server.start()
            if len(phases) > 1:
                print(f"ingest (fill): {phases[-1]}", flush=True)
            result["ingest"] = phases
            result["analyze_s"] = analyze(engine)
        with engine.connect() as conn:
            counts_by_type = dict(
                conn.execute(
                    text("SELECT resource_type, count(*) FROM resource GROUP BY resource_type")
                ).all()
            )
        result["resources"] = counts_by_type
        result["db_bytes"] = database_size(engine)
        print(f"resources: {counts_by_type}, db size {result['db_bytes'] / 2**30:.2f} GiB")
        ids = patient_ids(engine)
        rng = random.Random(args.seed)
        sample = [rng.choice(ids) for _ in range(args.warmup + args.searches)]
        result["loadavg_search"] = os.getloadavg()
        api, matches = search_api(url, base, sample, args.warmup)
        result["search_api_ms"] = api
        result["search_matches_avg"] = round(matches / args.searches, 2)
        print(f"priors search via API (ms): {api}", flush=True)
        server.stop()  # the SQL timing runs alone
        sql = search_sql(url, base, sample, args.warmup)
        result["search_sql_ms"] = sql["ms"]
        result["plans"] = sql["plans"]
        for name, plan in sql["plans"].items():
            print(f"--- {name} query plan ---\n{plan}\n")
        print(f"priors search SQL (ms): {json.dumps(sql['ms'])}")
        ratio = api["p50"] / sql["ms"]["total"]["p50"]
        result["api_over_sql_p50"] = round(ratio, 2)
        result["api_over_page_sql_p50"] = round(api["p50"] / sql["ms"]["page"]["p50"], 2)
        print(
            f"API p50 / SQL p50 (max_pk+count+page) = {ratio:.2f}; "
            f"API p50 / page SQL p50 = {result['api_over_page_sql_p50']:.2f}"
        )
    finally:
        server.stop()
        engine.dispose()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = OUT / f"fhir_core_{args.db}_{args.studies}_{stamp}.json"
        path.write_text(json.dumps(result, indent=1, default=str))
        print(f"summary: {path}")
        if args.keep or args.reuse:
            print(f"kept: {url}")
        else:
            drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
