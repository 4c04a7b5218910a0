"""Real FHIR client libraries against a real `rix serve` process (SQLite and PostgreSQL).

fhirpy (sync and async) and SMART's fhirclient are what integrators use; each library has its
own expectations of the wire (plain application/json bodies, conditional-create criteria in the
query string, absolute `next` links, ids in response bodies, a strictly typed
CapabilityStatement). The server runs as a subprocess exactly as deployed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle as SmartBundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.fhirsearch import FHIRSearch
from fhirclient.models.patient import Patient as SmartPatient
from fhirclient.server import FHIRNotFoundException
from fhirpy import AsyncFHIRClient, SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, ResourceNotFound

from tests.server import RixServer, running_servers

PAGE = 10
MATCHING = 25
SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[RixServer]:
    """A `rix serve` process on the parametrised database."""
    with running_servers(database_url, tmp_path / "server") as (rix,):
        yield rix


@pytest.fixture
def base(server: RixServer) -> str:
    """The FHIR base URL of the running server."""
    return server.fhir_base


@pytest.fixture
def auth(server: RixServer) -> str:
    """The Authorization header value of an administrator (IUA bearer token)."""
    return f"Bearer {server.token('admin')}"


def _tag() -> str:
    return uuid.uuid4().hex[:12]


def _patient(family: str, given: str, **extra: Any) -> dict[str, Any]:
    return {"name": [{"family": family, "given": [given]}], **extra}


# -- fhirpy, synchronous ----------------------------------------------------------------------


def test_fhirpy_sync_create_read_update_delete(base: str, auth: str) -> None:
    client = SyncFHIRClient(base, authorization=auth)
    patient = client.resource("Patient", **_patient("Curie", "Marie", birthDate="1867-11-07"))
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"

    fetched = client.reference("Patient", patient.id).to_resource()
    assert fetched.id == patient.id
    assert fetched["name"][0]["family"] == "Curie"
    assert client.resources("Patient").search(_id=patient.id).get().id == patient.id

    fetched["gender"] = "female"
    fetched.save()
    assert fetched["meta"]["versionId"] == "2"
    again = client.get("Patient", patient.id)
    assert again["gender"] == "female"
    assert again["meta"]["versionId"] == "2"
    fetched.refresh()  # If-None-Match on the current version
    assert fetched["meta"]["versionId"] == "2"

    fetched.delete()
    with pytest.raises(ResourceNotFound):  # 410 Gone
        client.get("Patient", patient.id)
    assert client.resources("Patient").search(_id=patient.id).fetch() == []
    with pytest.raises(ResourceNotFound):  # 404
        client.get("Patient", "never-was")


def test_fhirpy_sync_conditional_create(base: str, auth: str) -> None:
    client = SyncFHIRClient(base, authorization=auth)
    value = _tag()
    identifier = [{"system": SYSTEM, "value": value}]
    criteria = f"{SYSTEM}|{value}"

    first = client.resource("Patient", identifier=identifier, **_patient("Cond", "A"))
    first.create(identifier=criteria)  # POST /Patient?identifier=...
    second = client.resource("Patient", identifier=identifier, **_patient("Cond", "B"))
    second.create(identifier=criteria)
    assert second.id == first.id
    assert second["name"][0]["given"] == ["A"]  # the existing resource, untouched

    search = client.resources("Patient").search(identifier=criteria)
    made, created = search.get_or_create(client.resource("Patient", identifier=identifier))
    assert (made.id, created) == (first.id, False)

    other = f"{SYSTEM}|{_tag()}"
    fresh = client.resource("Patient", identifier=[{"system": SYSTEM, "value": other[-12:]}])
    made, created = client.resources("Patient").search(identifier=other).get_or_create(fresh)
    assert created and made.id != first.id
    again, created = client.resources("Patient").search(identifier=other).get_or_create(fresh)
    assert (again.id, created) == (made.id, False)

    twins = _tag()
    for given in ("One", "Two"):
        client.resource("Patient", **_patient(twins, given)).save()
    with pytest.raises(MultipleResourcesFound):  # 412: the criteria are not selective enough
        client.resource("Patient", **_patient(twins, "Three")).create(family=twins)

    assert client.resources("Patient").search(identifier=criteria).count() == 1
    assert client.resources("Patient").search(family=twins).count() == 2


def test_fhirpy_sync_paging_and_count(base: str, auth: str) -> None:
    client = SyncFHIRClient(base, authorization=auth)
    family = f"Pager{_tag()}"
    created = [
        client.resource("Patient", **_patient(family, f"P{i:02d}")).save().id
        for i in range(MATCHING)
    ]
    client.resource("Patient", **_patient(f"Other{_tag()}", "X")).save()

    search = client.resources("Patient").search(family=family).limit(PAGE)
    first = search.fetch_raw()
    assert first["total"] == MATCHING
    assert len(first["entry"]) == PAGE
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert links["next"].startswith(f"{base}/Patient?")  # absolute, on the same base

    everything = search.fetch_all()
    ids = [p.id for p in everything]
    assert len(ids) == MATCHING
    assert sorted(ids) == sorted(created)  # every resource exactly once

    # count() sends fhirpy's `_totalMethod=count`, which RIX accepts as `_total=accurate`
    assert client.resources("Patient").search(family=family).count() == MATCHING


# -- fhirpy, asynchronous ---------------------------------------------------------------------


async def _async_scenario(base: str, auth: str) -> None:
    client = AsyncFHIRClient(base, authorization=auth)
    patient = client.resource("Patient", **_patient("Pasteur", "Louis"))
    await patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"

    fetched = await client.reference("Patient", patient.id).to_resource()
    assert fetched["name"][0]["family"] == "Pasteur"
    fetched["gender"] = "male"
    await fetched.save()
    assert fetched["meta"]["versionId"] == "2"
    assert (await client.get("Patient", patient.id))["gender"] == "male"

    value = _tag()
    identifier = [{"system": SYSTEM, "value": value}]
    one = client.resource("Patient", identifier=identifier)
    await one.create(identifier=f"{SYSTEM}|{value}")
    two = client.resource("Patient", identifier=identifier)
    await two.create(identifier=f"{SYSTEM}|{value}")
    assert one.id == two.id
    search = client.resources("Patient").search(identifier=f"{SYSTEM}|{value}")
    made, created = await search.get_or_create(client.resource("Patient", identifier=identifier))
    assert (made.id, created) == (one.id, False)

    family = f"Async{_tag()}"
    created_ids = []
    for i in range(MATCHING):
        item = client.resource("Patient", **_patient(family, f"A{i:02d}"))
        await item.save()
        created_ids.append(item.id)
    pages = client.resources("Patient").search(family=family).limit(PAGE)
    assert len(await pages.fetch()) == PAGE
    ids = [p.id async for p in pages]
    assert sorted(ids) == sorted(created_ids)
    assert len(await pages.fetch_all()) == MATCHING
    assert await client.resources("Patient").search(family=family).count() == MATCHING

    await fetched.delete()
    with pytest.raises(ResourceNotFound):
        await client.get("Patient", patient.id)


def test_fhirpy_async_crud_conditional_create_and_paging(base: str, auth: str) -> None:
    asyncio.run(_async_scenario(base, auth))


# -- fhirclient (SMART on FHIR client-py, R4 models) -------------------------------------------


def _smart(base: str, auth: str) -> smart_client.FHIRClient:
    smart = smart_client.FHIRClient(settings={"app_id": "rix-test", "api_base": base})
    smart.server.session.headers["Authorization"] = auth
    return smart


def test_fhirclient_reads_metadata_strictly(base: str, auth: str) -> None:
    smart = _smart(base, auth)
    assert smart.prepare()  # fetches /metadata and parses it with strict R4 models
    statement = smart.server.capabilityStatement
    assert isinstance(statement, CapabilityStatement)
    assert statement.fhirVersion == "4.0.1"
    assert statement.kind == "instance"
    assert "application/fhir+json" in statement.format
    rest = statement.rest[0]
    assert rest.mode == "server"
    types = {r.type: r for r in rest.resource}
    patient = types["Patient"]
    assert {i.code for i in patient.interaction} >= {"read", "create", "update", "delete"}
    assert patient.conditionalCreate is True
    # the raw document round-trips through the models without losing anything
    raw = requests.get(f"{base}/metadata", headers={"Accept": "application/fhir+json"}, timeout=10)
    assert raw.headers["content-type"].startswith("application/fhir+json")
    CapabilityStatement(raw.json(), strict=True)


def test_fhirclient_create_read_update_delete(base: str, auth: str) -> None:
    smart = _smart(base, auth)
    server = smart.server
    new = SmartPatient(_patient("Lovelace", "Ada", birthDate="1815-12-10"), strict=True)
    answer = new.create(server)
    assert answer is not None, "create must return the resource (with its id) in the body"
    created = SmartPatient(answer, strict=True)
    assert created.id and created.meta.versionId == "1"

    read = SmartPatient.read(created.id, server)
    assert read.name[0].family == "Lovelace"
    assert read.birthDate.isostring == "1815-12-10"

    read.gender = "female"
    updated = SmartPatient(read.update(), strict=True)
    assert updated.meta.versionId == "2"
    assert SmartPatient.read(created.id, server).gender == "female"

    read.delete()
    with pytest.raises(requests.HTTPError) as gone:
        SmartPatient.read(created.id, server)
    assert gone.value.response is not None and gone.value.response.status_code == 410
    with pytest.raises(FHIRNotFoundException):
        SmartPatient.read("never-was", server)


def test_fhirclient_search_follows_next_links(base: str, auth: str) -> None:
    smart = _smart(base, auth)
    server = smart.server
    family = f"Smart{_tag()}"
    created = []
    for i in range(MATCHING):
        answer = SmartPatient(_patient(family, f"S{i:02d}")).create(server)
        created.append(SmartPatient(answer).id)
    SmartPatient(_patient(f"Other{_tag()}", "Y")).create(server)

    search: FHIRSearch = SmartPatient.where(struct={"family": family, "_count": str(PAGE)})
    bundles: list[SmartBundle] = list(search.perform_iter(server))
    assert [len(b.entry or []) for b in bundles] == [PAGE, PAGE, MATCHING - 2 * PAGE]
    assert all(b.total == MATCHING for b in bundles)
    ids = [r.id for r in search.perform_resources(server)]
    assert len(ids) == MATCHING
    assert sorted(ids) == sorted(created)
    assert all(e.fullUrl == f"{base}/Patient/{e.resource.id}" for b in bundles for e in b.entry)


def test_fhirclient_posts_a_transaction(base: str, auth: str) -> None:
    """fhirclient posts transactions to `[base]/` (its base URI always ends with a slash)."""
    server = _smart(base, auth).server
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    transaction = SmartBundle(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": patient_url,
                    "resource": {"resourceType": "Patient", **_patient("Bundled", "T")},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": {
                        "resourceType": "ServiceRequest",
                        "status": "active",
                        "intent": "order",
                        "subject": {"reference": patient_url},
                    },
                    "request": {"method": "POST", "url": "ServiceRequest"},
                },
            ],
        },
        strict=True,
    )
    answer = SmartBundle(transaction.create(server), strict=True)
    assert answer.type == "transaction-response"
    assert [e.response.status[:3] for e in answer.entry] == ["201", "201"]
    patient_id = answer.entry[0].resource.id
    order = answer.entry[1].resource
    assert order.subject.reference == f"Patient/{patient_id}"
    assert SmartPatient.read(patient_id, server).name[0].family == "Bundled"
