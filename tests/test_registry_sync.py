"""Registry sync of Consents (issue 6): conditional update on `identifier` (FHIR R4 http.html
conditional update), idempotent replay, stale versions refused (409), withdrawal never by
DELETE, the ITI-108 Consent search parameters (IHE PCF), and a change feed that misses nothing
under concurrent writes (`_history?_since=` Bundle.meta.lastUpdated), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.fhir.values import date_range
from app.main import create_app
from app.services.runtime import Runtime
from tests.conftest import Token

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
REGISTRY = "https://registre-imagerie.example/decision"
INS = "urn:oid:1.2.250.1.213.1.4.8"


def _patient(client: TestClient, ins: str = "1840275123456") -> str:
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": INS, "value": ins}],
        "name": [{"family": "MARTIN", "given": ["Paul"]}],
        "birthDate": "1984-02-27",
    }
    response = client.post("/fhir/Patient", json=body)
    assert response.status_code == 201, response.text
    patient_id: str = response.json()["id"]
    return patient_id


def _opposition(patient_id: str, value: str, when: str, status: str = "active") -> dict[str, Any]:
    """The published opposition example, about `patient_id`, decided at `when`."""
    consent: dict[str, Any] = json.loads(
        (PROFILES / "Consent-opposition-withdrawn.json").read_text()
    )
    consent.pop("id")
    consent.pop("organization")
    consent["identifier"] = [{"system": REGISTRY, "value": value}]
    consent["patient"] = {"reference": f"Patient/{patient_id}"}
    consent["performer"] = [{"reference": f"Patient/{patient_id}"}]
    consent["status"] = status
    consent["dateTime"] = when
    return consent


def _push(client: TestClient, consent: dict[str, Any]) -> Any:
    """What a registry sends: PUT Consent?identifier=system|value."""
    ident = consent["identifier"][0]
    return client.put(
        "/fhir/Consent", params={"identifier": f"{ident['system']}|{ident['value']}"}, json=consent
    )


def _versions(client: TestClient, consent_id: str) -> list[str]:
    bundle = client.get(f"/fhir/Consent/{consent_id}/_history").json()
    return [e["resource"]["meta"]["versionId"] for e in bundle.get("entry", [])]


def _audited(client: TestClient, action: str) -> list[dict[str, Any]]:
    bundle = client.get("/fhir/AuditEvent", params={"action": action, "_count": "100"}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


# -- conditional update on identifier ----------------------------------------------------------


def test_conditional_update_creates_then_updates_then_refuses_ambiguity(
    client: TestClient,
) -> None:
    patient = _patient(client)
    first = _push(client, _opposition(patient, "OPP-1", "2025-01-02T10:00:00+01:00"))
    assert first.status_code == 201, first.text
    consent_id = first.json()["id"]
    assert first.headers["ETag"] == 'W/"1"'

    withdrawn = _opposition(patient, "OPP-1", "2025-01-09T09:05:00+01:00", status="inactive")
    second = _push(client, withdrawn)
    assert second.status_code == 200, second.text
    assert second.json()["id"] == consent_id
    assert second.json()["status"] == "inactive"
    assert second.headers["ETag"] == 'W/"2"'

    # Two decisions carrying the same identifier (one created directly): the criteria are
    # ambiguous, 412, and nothing is written.
    other = _opposition(patient, "OPP-1", "2025-02-01T00:00:00Z")
    assert client.post("/fhir/Consent", json=other).status_code == 201
    third = _push(client, _opposition(patient, "OPP-1", "2025-03-01T00:00:00Z"))
    assert third.status_code == 412, third.text
    assert third.json()["resourceType"] == "OperationOutcome"
    assert _versions(client, consent_id) == ["2", "1"]


def test_replaying_the_same_decision_writes_no_version_but_is_audited(client: TestClient) -> None:
    patient = _patient(client)
    consent = _opposition(patient, "OPP-2", "2025-01-02T10:00:00+01:00")
    first = _push(client, consent)
    assert first.status_code == 201
    stored = first.json()

    for replay in (consent, stored):  # the registry's copy, or RIX's own (with id and meta)
        again = _push(client, copy.deepcopy(replay))
        assert again.status_code == 200, again.text
        assert again.headers["ETag"] == first.headers["ETag"] == 'W/"1"'
        assert again.json()["meta"] == stored["meta"]
    assert _versions(client, stored["id"]) == ["1"]
    # Every replay is an interaction of its own in the audit trail (BALP update).
    updates = [
        e
        for e in _audited(client, "U")
        if any(
            (o.get("what") or {}).get("reference", "").startswith(f"Consent/{stored['id']}")
            for o in e.get("entity", [])
        )
    ]
    assert len(updates) == 3


def test_a_stale_version_is_refused_with_409_and_nothing_is_written(client: TestClient) -> None:
    patient = _patient(client)
    assert _push(client, _opposition(patient, "OPP-3", "2025-01-09T09:05:00+01:00")).status_code
    # 08:30Z is 09:30+01:00: later, although its digits read earlier.
    later = _push(client, _opposition(patient, "OPP-3", "2025-01-09T08:30:00Z", "inactive"))
    assert later.status_code == 200, later.text
    consent_id = later.json()["id"]

    # The first decision replayed after its withdrawal: stale.
    stale = _push(client, _opposition(patient, "OPP-3", "2025-01-09T09:05:00+01:00"))
    assert stale.status_code == 409, stale.text
    outcome = stale.json()
    assert outcome["resourceType"] == "OperationOutcome"
    text = " ".join(i["diagnostics"] for i in outcome["issue"])
    assert "2025-01-09T09:05:00+01:00" in text and "2025-01-09T08:30:00Z" in text
    assert _versions(client, consent_id) == ["2", "1"]
    assert client.get(f"/fhir/Consent/{consent_id}").json()["status"] == "inactive"

    # A whole day earlier (date precision) is stale too; the same day is not certainly older.
    day_before = _opposition(patient, "OPP-3", "2025-01-08")
    assert _push(client, day_before).status_code == 409
    same_day = _opposition(patient, "OPP-3", "2025-01-09", "inactive")
    assert _push(client, same_day).status_code == 200

    # The same instant with other content: a correction, applied.
    correction = _opposition(patient, "OPP-3", "2025-01-09", "active")
    response = _push(client, correction)
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"4"'
    # By id and by PATCH the rule is the same.
    stale_by_id = {**_opposition(patient, "OPP-3", "2024-12-31"), "id": consent_id}
    assert client.put(f"/fhir/Consent/{consent_id}", json=stale_by_id).status_code == 409
    patch = [{"op": "replace", "path": "/dateTime", "value": "2020-01-01"}]
    patched = client.patch(
        f"/fhir/Consent/{consent_id}",
        content=json.dumps(patch),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 409
    assert _versions(client, consent_id) == ["4", "3", "2", "1"]


def test_consents_are_withdrawn_never_deleted(client: TestClient) -> None:
    patient = _patient(client)
    created = _push(client, _opposition(patient, "OPP-4", "2025-01-02T10:00:00Z")).json()
    for response in (
        client.delete(f"/fhir/Consent/{created['id']}"),
        client.delete("/fhir/Consent", params={"identifier": f"{REGISTRY}|OPP-4"}),
    ):
        assert response.status_code == 405, response.text
        diagnostics = response.json()["issue"][0]["diagnostics"]
        assert "never deleted" in diagnostics and "status=inactive" in diagnostics
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Consent/{created['id']}"}}],
    }
    assert client.post("/fhir", json=transaction).status_code == 405
    assert client.get(f"/fhir/Consent/{created['id']}").status_code == 200

    statement = client.get("/fhir/metadata").json()
    consent = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Consent")
    assert "delete" not in {i["code"] for i in consent["interaction"]}
    assert consent["conditionalDelete"] == "not-supported"
    paths = client.get("/openapi.json").json()["paths"]
    assert "delete" not in paths["/fhir/Consent/{id}"]
    assert "delete" in paths["/fhir/Patient/{id}"]


# -- ITI-108 search ------------------------------------------------------------------------------


def test_iti_108_consent_search_parameters(client: TestClient) -> None:
    martin = _patient(client, "1840275123456")
    other = _patient(client, "2920175123457")
    recipient = client.post(
        "/fhir/Organization", json={"resourceType": "Organization", "name": "CH"}
    )
    organization = recipient.json()["id"]
    decision = _opposition(martin, "S-1", "2025-01-02T10:00:00Z")
    decision["provision"]["actor"] = [
        {
            "role": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                        "code": "IRCP",
                    }
                ]
            },
            "reference": {"reference": f"Organization/{organization}"},
        }
    ]
    active = _push(client, decision).json()
    inactive = _push(client, _opposition(martin, "S-2", "2025-01-03T10:00:00Z", "inactive")).json()
    elsewhere = _push(client, _opposition(other, "S-3", "2025-01-04T10:00:00Z")).json()

    def ids(**params: str) -> set[str]:
        response = client.get("/fhir/Consent", params=params)
        assert response.status_code == 200, response.text
        return {e["resource"]["id"] for e in response.json().get("entry", [])}

    everything = {active["id"], inactive["id"], elsewhere["id"]}
    assert ids(patient=f"Patient/{martin}") == {active["id"], inactive["id"]}
    assert ids(**{"patient.identifier": f"{INS}|2920175123457"}) == {elsewhere["id"]}
    assert ids(status="active") == {active["id"], elsewhere["id"]}
    assert ids(status="inactive", patient=martin) == {inactive["id"]}
    assert ids(actor=f"Organization/{organization}") == {active["id"]}
    assert ids(consentor=f"Patient/{other}") == {elsewhere["id"]}
    assert ids(category="http://loinc.org|59284-0") == everything
    assert ids(category="https://fhir.rix.example/CodeSystem/consent-kind|opposition") == everything
    assert ids(category="http://loinc.org|64292-6") == set()
    assert ids(identifier=f"{REGISTRY}|S-2") == {inactive["id"]}
    assert ids(identifier="S-3") == {elsewhere["id"]}
    stamp = inactive["meta"]["lastUpdated"]
    assert ids(_lastUpdated=f"ge{stamp}") >= {inactive["id"], elsewhere["id"]}
    assert active["id"] not in ids(_lastUpdated=f"ge{stamp}")
    assert ids(_lastUpdated=f"lt{stamp}") == {active["id"]}


# -- the change feed -----------------------------------------------------------------------------


def _follow(client: TestClient, since: str | None) -> tuple[list[tuple[str, str]], str]:
    """One poll of the Consent feed from `since`: every (id, versionId) of every page, and the
    Bundle.meta.lastUpdated to poll from next (the same on every page)."""
    params = {"_count": "7"} | ({"_since": since} if since else {})
    url: str | None = "/fhir/Consent/_history"
    seen: list[tuple[str, str]] = []
    horizons: set[str] = set()
    first = True
    while url:
        response = client.get(url, params=params if first else None)
        first = False
        assert response.status_code == 200, response.text
        bundle = response.json()
        horizons.add(bundle["meta"]["lastUpdated"])
        seen += [
            (e["resource"]["id"], e["resource"]["meta"]["versionId"])
            for e in bundle.get("entry", [])
        ]
        url = next(
            (link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None
        )
    assert len(horizons) == 1, horizons
    return seen, horizons.pop()


def test_bundles_carry_the_horizon_on_every_page(client: TestClient) -> None:
    patient = _patient(client)
    for n in range(5):
        _push(client, _opposition(patient, f"H-{n}", f"2025-01-0{n + 1}T10:00:00Z"))
    first = client.get("/fhir/Consent/_history", params={"_count": "2"}).json()
    horizon = first["meta"]["lastUpdated"]
    newest = max(e["resource"]["meta"]["lastUpdated"] for e in first["entry"])
    assert date_range(horizon)[0] >= date_range(newest)[0]  # nothing in flight: all is before
    _push(client, _opposition(patient, "H-9", "2025-02-01T10:00:00Z"))  # after the snapshot
    next_url = next(x["url"] for x in first["link"] if x["relation"] == "next")
    assert parse_qs(urlsplit(next_url).query)["_horizon"] == [horizon]
    second = client.get(next_url).json()
    assert second["meta"]["lastUpdated"] == horizon
    assert len(second["entry"]) == 2

    # A search by _lastUpdated is a feed too; other searches take no horizon (no cost).
    feed = {"_count": "2", "_lastUpdated": "ge2020-01-01"}
    search = client.get("/fhir/Consent", params=feed).json()
    assert date_range(search["meta"]["lastUpdated"])[0] >= date_range(horizon)[0]
    next_url = next(x["url"] for x in search["link"] if x["relation"] == "next")
    assert client.get(next_url).json()["meta"]["lastUpdated"] == search["meta"]["lastUpdated"]
    plain = client.get("/fhir/Consent", params={"_count": "2"}).json()
    assert all("_horizon" not in link["url"] for link in plain["link"])
    # A horizon is only ever a snapshot's: alone, it is refused.
    alone = client.get("/fhir/Consent/_history", params={"_horizon": horizon})
    assert alone.status_code == 400


@pytest.fixture(params=[True, False], ids=["audit", "no-audit"])
def feed_client(
    request: pytest.FixtureRequest, settings: Settings, token: Token
) -> Iterator[TestClient]:
    """A client whose reads are, on SQLite, writers holding the lock (audit on: every request
    writes its record) or deferred readers beside the writer (audit off)."""
    app = create_app(settings.model_copy(update={"audit": request.param}))
    with TestClient(app, raise_server_exceptions=False, headers=token("admin")) as c:
        yield c
    app.state.rix.engine.dispose()


def _criteria(consent: dict[str, Any]) -> list[tuple[str, str]]:
    ident = consent["identifier"][0]
    return [("identifier", f"{ident['system']}|{ident['value']}")]


def _write_and_hold(
    runtime: Runtime, consent: dict[str, Any], written: threading.Event, release: threading.Event
) -> None:
    """A registry push whose transaction stays open after it wrote (a slow commit)."""
    with runtime.resources(None, write=True) as svc:
        svc.conditional_update("Consent", _criteria(consent), consent, None)
        written.set()
        assert release.wait(timeout=60)


def test_a_version_committed_late_is_not_missed(feed_client: TestClient) -> None:
    """The interleaving that loses a change when a Bundle's time is the read's clock: a writer
    stamps its version, a poll reads (without it) before it commits, and the next poll starts
    after its stamp. With the horizon, the next poll still covers it."""
    client = feed_client
    runtime: Runtime = client.app.state.rix  # type: ignore[attr-defined]
    patient = _patient(client)
    assert _push(client, _opposition(patient, "L-0", "2025-01-01T10:00:00Z")).status_code == 201
    written, release = threading.Event(), threading.Event()
    slow = threading.Thread(
        target=_write_and_hold,
        args=(runtime, _opposition(patient, "L-1", "2025-01-02T10:00:00Z"), written, release),
    )
    seen: list[tuple[str, str]] = []
    horizon: str | None = None
    slow.start()
    try:
        assert written.wait(timeout=60)
        if runtime.engine.dialect.name == "postgresql":
            # Other writers commit meanwhile (on SQLite they queue behind the open one).
            assert _push(client, _opposition(patient, "L-2", "2025-01-03T10:00:00Z")).status_code
        # On SQLite with audit on, a poll is a writer too: it would queue behind the open one.
        if runtime.engine.dialect.name == "postgresql" or not runtime.settings.audit:
            seen, horizon = _follow(client, None)
    finally:
        release.set()
        slow.join()
    later, _ = _follow(client, horizon)
    everything, _ = _follow(client, None)
    assert len(everything) == (3 if runtime.engine.dialect.name == "postgresql" else 2)
    assert set(everything) <= set(seen) | set(later)


def test_a_feed_followed_under_concurrent_writes_misses_nothing(feed_client: TestClient) -> None:
    """Writers (some holding their transaction open a while) push decisions and withdrawals
    while a poller follows the feed by `_since` = the last Bundle's meta.lastUpdated; at the
    end the poller has seen every version written."""
    client = feed_client
    runtime: Runtime = client.app.state.rix  # type: ignore[attr-defined]
    patient = _patient(client)
    writers, pushes = 4, 6
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(pushes):
                consent = _opposition(
                    patient,
                    f"C-{worker}-{n % 2}",  # each decision is pushed, then withdrawn...
                    f"2025-01-{n + 1:02d}T10:00:00Z",
                    "active" if n % 2 == 0 else "inactive",
                )
                with runtime.resources(None, write=True) as svc:
                    svc.conditional_update("Consent", _criteria(consent), consent, None)
                    if (worker + n) % 3 == 0:
                        time.sleep(0.02)  # ...some slowly: the commit comes well after the stamp
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    seen: set[tuple[str, str]] = set()
    since: str | None = None
    polls = 0
    while any(t.is_alive() for t in threads) or polls == 0:
        page, since = _follow(client, since)
        seen |= set(page)
        polls += 1
    for thread in threads:
        thread.join()
    assert not errors, errors
    page, since = _follow(client, since)  # the poll after the last commit
    seen |= set(page)
    everything, _ = _follow(client, None)
    assert len(everything) == writers * pushes
    assert set(everything) == seen
