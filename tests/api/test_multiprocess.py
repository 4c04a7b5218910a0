"""Two `rix serve` processes on one PostgreSQL database behave as one FHIR server.

This is the scale-out deployment (several replicas behind a load balancer): nothing a client
sees may depend on which process answers. PostgreSQL only: SQLite is the single-process
embedded mode.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from app.config import Settings
from app.services.runtime import Runtime
from app.storage.db import transaction
from tests.server import RixServer, running_servers

FHIR_JSON = "application/fhir+json"
MATCHING = 25
PAGE = 10


def _truncate(url: str) -> None:
    """Empty every table the migrations created (as conftest does), keeping alembic's own."""
    engine = create_engine(url)
    names = ", ".join(n for n in inspect(engine).get_table_names() if n != "alembic_version")
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(scope="module")
def servers(
    pg_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RixServer, RixServer]]:
    """Processes A and B on one PostgreSQL database (started once for this module)."""
    _truncate(pg_database)
    with running_servers(pg_database, tmp_path_factory.mktemp("servers"), count=2) as (a, b):
        yield a, b


@pytest.fixture
def clients(
    servers: tuple[RixServer, RixServer], pg_database: str
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """An HTTP client on the FHIR base of each process, over an emptied database."""
    _truncate(pg_database)  # the processes keep no state of their own: the database is all
    a, b = servers
    headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON, **a.headers("admin")}
    with (
        httpx.Client(base_url=a.fhir_base, headers=headers, timeout=30) as ca,
        httpx.Client(base_url=b.fhir_base, headers=headers, timeout=30) as cb,
    ):
        yield ca, cb


def _patient(family: str, given: str = "Jeanne") -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}]}


def _create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(f"/{resource['resourceType']}", json=resource)
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _on(url: str, server: httpx.Client) -> str:
    """`url` (an absolute link from one process) aimed at another process, as a balancer does."""
    target = urlsplit(str(server.base_url))
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, target.netloc, parts.path, parts.query, parts.fragment))


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def _portable(bundle: dict[str, Any], base: str) -> dict[str, Any]:
    """A Bundle without what legitimately differs between processes (its own time, its host)."""
    out = {k: v for k, v in bundle.items() if k not in ("meta", "link")}
    for entry in out.get("entry", []):
        entry["fullUrl"] = entry["fullUrl"].removeprefix(base)
    return out


def test_create_on_a_read_and_search_on_b(clients: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = clients
    created = _create(a, _patient("Durand"))
    read = b.get(f"/Patient/{created['id']}")
    assert read.status_code == 200
    assert read.json() == created
    assert read.headers["etag"] == 'W/"1"'
    found = b.get("/Patient", params={"family": "Durand"}).json()
    assert found["total"] == 1
    assert _ids(found) == [created["id"]]


def test_update_on_b_with_version_read_on_a(clients: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = clients
    created = _create(a, _patient("Moreau"))
    pid = created["id"]
    etag = a.get(f"/Patient/{pid}").headers["etag"]

    changed = {**created, "gender": "female"}
    updated = b.put(f"/Patient/{pid}", json=changed, headers={"If-Match": etag})
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] == 'W/"2"'
    assert a.get(f"/Patient/{pid}").json()["gender"] == "female"

    stale = a.put(f"/Patient/{pid}", json={**created, "gender": "male"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert b.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "2"


def _race(
    pool: ThreadPoolExecutor, puts: list[tuple[httpx.Client, str, dict[str, Any]]], etag: str
) -> list[httpx.Response]:
    """PUT each (client, path, body) at once (released together by a barrier), same If-Match."""
    start = threading.Barrier(len(puts))

    def put(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
        start.wait(timeout=30)
        return client.put(path, json=body, headers={"If-Match": etag})

    return list(pool.map(lambda args: put(*args), puts))


def test_concurrent_updates_with_one_version_have_one_winner(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = clients
    pid = _create(a, _patient("Lefebvre"))["id"]
    path = f"/Patient/{pid}"
    rounds = 8
    with ThreadPoolExecutor(max_workers=2) as pool:
        for n in range(rounds):
            current = a.get(path)
            etag, body = current.headers["etag"], current.json()
            puts = [
                (client, path, {**body, "name": [{"family": "Lefebvre", "given": [f"{who}{n}"]}]})
                for client, who in ((a, "A"), (b, "B"))
            ]  # both bodies differ from the current version: neither is a no-op
            answers = _race(pool, puts, etag)
            statuses = sorted(r.status_code for r in answers)
            assert statuses in ([200, 409], [200, 412]), [r.text for r in answers]
            winner = next(r for r in answers if r.status_code == 200).json()
            assert winner["meta"]["versionId"] == str(n + 2)
            loser = next(r for r in answers if r.status_code != 200).json()
            assert loser["resourceType"] == "OperationOutcome"
            assert b.get(path).json() == winner == a.get(path).json()

    history = b.get(f"{path}/_history", params={"_count": 100}).json()
    assert history["total"] == rounds + 1
    versions = [e["resource"]["meta"]["versionId"] for e in history["entry"]]
    assert versions == [str(v) for v in range(rounds + 1, 0, -1)]


def test_history_is_identical_on_both(clients: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = clients
    created = _create(a, _patient("Garnier"))
    pid = created["id"]
    assert b.put(f"/Patient/{pid}", json={**created, "gender": "other"}).status_code == 200
    assert a.put(f"/Patient/{pid}", json={**created, "gender": "male"}).status_code == 200
    assert b.delete(f"/Patient/{pid}").status_code == 204
    _create(b, _patient("Roux"))

    for path in (f"/Patient/{pid}/_history", "/Patient/_history", "/_history"):
        on_a = a.get(path).json()
        on_b = b.get(path).json()
        assert on_a["type"] == "history"
        assert _portable(on_a, str(a.base_url)) == _portable(on_b, str(b.base_url)), path
    instance = a.get(f"/Patient/{pid}/_history").json()
    assert instance["total"] == 4
    assert [e["request"]["method"] for e in instance["entry"]] == ["DELETE", "PUT", "PUT", "POST"]
    assert b.get(f"/Patient/{pid}").status_code == 410
    assert a.get(f"/Patient/{pid}/_history/3").json()["gender"] == "male"


def test_transaction_on_a_is_visible_on_b(clients: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = clients
    patient_url = "urn:uuid:8d4a2a63-2c2f-4d8e-9d0b-6f7f3d9f1a01"
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": _patient("Bonnet"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "code": {"text": "CT thorax"},
                    "subject": {"reference": patient_url},
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }
    answer = a.post(str(a.base_url).rstrip("/"), json=transaction)  # POST [base], no slash
    assert answer.status_code == 200, answer.text
    response = answer.json()
    assert response["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in response["entry"]] == ["201", "201"]
    pid = response["entry"][0]["resource"]["id"]

    assert b.get(f"/Patient/{pid}").json()["name"][0]["family"] == "Bonnet"
    orders = b.get("/ServiceRequest", params={"subject": f"Patient/{pid}"}).json()
    assert orders["total"] == 1
    assert orders["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    with_patient = b.get(
        "/ServiceRequest",
        params={"subject": f"Patient/{pid}", "_include": "ServiceRequest:subject"},
    ).json()
    assert sorted(e["resource"]["resourceType"] for e in with_patient["entry"]) == [
        "Patient",
        "ServiceRequest",
    ]


def test_paging_links_from_a_work_on_b(clients: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = clients
    created = {_create(a, _patient("Pager", f"P{i:02d}"))["id"] for i in range(MATCHING)}
    _create(b, _patient("Other"))

    first = a.get("/Patient", params={"family": "Pager", "_count": PAGE}).json()
    # created after the search began: the pages already promised must not shift
    late = _create(b, _patient("Pager", "Late"))["id"]

    pages_a, pages_b = [_ids(first)], [_ids(first)]
    link = _next(first)
    while link:
        page_a = a.get(link).json()
        page_b = b.get(_on(link, b)).json()
        pages_a.append(_ids(page_a))
        pages_b.append(_ids(page_b))
        link = _next(page_a)
        assert _next(page_b) == (_on(link, b) if link else None)

    assert pages_b == pages_a
    assert [len(p) for p in pages_a] == [PAGE, PAGE, MATCHING - 2 * PAGE]
    seen = [i for page in pages_a for i in page]
    assert sorted(seen) == sorted(created)
    assert late not in seen


def _next(bundle: dict[str, Any]) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)


def test_audit_chain_stays_one_chain_under_concurrent_processes(
    clients: tuple[httpx.Client, httpx.Client],
    servers: tuple[RixServer, RixServer],
    pg_database: str,
) -> None:
    """Both processes append at once and both seal into one hash chain in the background;
    `rix audit verify` finds it intact."""
    a, b = clients
    patient = _create(a, _patient("Chain"))
    barrier = threading.Barrier(8)

    def hammer(client: httpx.Client) -> int:
        barrier.wait(timeout=30)
        codes = [client.get(f"/Patient/{patient['id']}").status_code for _ in range(5)]
        codes.append(client.get("/Patient", params={"family": "Chain"}).status_code)
        return sum(c == 200 for c in codes)

    with ThreadPoolExecutor(max_workers=8) as pool:
        ok = sum(pool.map(hammer, [a, b] * 4))
    assert ok == 8 * 6
    settings = Settings(env="test", database_url=pg_database, data_dir=servers[0].data_dir)
    runtime = Runtime.build(settings)
    deadline = time.monotonic() + 20
    while True:  # the servers' sealers run every second
        with transaction(runtime.sessions) as session:
            if not runtime.trail.pending(session):
                break
        assert time.monotonic() < deadline, "the servers never sealed their audit records"
        time.sleep(0.2)
    with transaction(runtime.sessions) as session:
        assert runtime.trail.verify(session) == []
        count = session.execute(text("SELECT count(*) FROM audit_chain")).scalar_one()
    runtime.engine.dispose()
    assert count >= 8 * 6 + 1  # every read and search, plus the create


def test_concurrent_feeds_of_one_person_are_linked(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    """Two processes create, at the same moment, two records with the same qualified INS: the
    identity lock serialises them, so the second sees the first and links them (no lost link)."""
    a, b = clients
    reliability = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"

    def feed(client: httpx.Client, site: str, ins: str, barrier: threading.Barrier) -> str:
        body = {
            "resourceType": "Patient",
            "identifier": [
                {"system": f"https://fhir.rix.example/sid/ipp/{site}", "value": f"p-{ins}"},
                {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": ins},
            ],
            "name": [{"family": "Concurrent", "given": [ins]}],
            "extension": [
                {
                    "url": reliability,
                    "extension": [{"url": "identityStatus", "valueCoding": {"code": "QUAL"}}],
                }
            ],
        }
        barrier.wait(timeout=30)
        return str(_create(client, body)["id"])

    for round_ in range(5):
        ins, barrier = f"29001751234{round_:04d}", threading.Barrier(2)
        with ThreadPoolExecutor(max_workers=2) as pool:
            first, second = pool.map(feed, [a, b], ["423", "401"], [ins, ins], [barrier, barrier])
        shown = a.get(f"/Patient/{first}").json()
        assert {"other": {"reference": f"Patient/{second}"}, "type": "seealso"} in shown["link"]
