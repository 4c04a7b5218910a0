"""Conformance with the official FHIR R4 examples (npm package hl7.fhir.r4.examples@4.0.1).

Every example of a served type is accepted as published (the file's bytes sent unchanged, by
update-as-create with its own id; by create for AuditEvent, which is immutable and create-only)
and reads back equal apart from the server-managed meta.versionId and meta.lastUpdated. Decimals
are compared as written, so lost precision is a failure too. Broken variants of a few examples
are refused with 400 and an OperationOutcome whose issue.expression points at the offending
element, and nothing is stored.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from app.auth.tokens import issue_dev_token
from app.fhir.registry import SERVED_TYPES
from tests.npm_packages import npm_package

# Every example of a served type in the package, by type (checked against the package below).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "Patient": (
        *("animal", "ch-example", "dicom", "example", "f001", "f201", "genetics-example1"),
        *("glossy", "ihe-pcd", "infant-fetal", "infant-mom", "infant-twin-1", "infant-twin-2"),
        *("mom", "newborn", "pat1", "pat2", "pat3", "pat4", "proband", "xcda", "xds"),
    ),
    "Practitioner": (
        *("example", "f001", "f002", "f003", "f004", "f005", "f006", "f007", "f201", "f202"),
        *("f203", "f204", "xcda-author", "xcda1"),
    ),
    "PractitionerRole": ("example",),
    "Organization": (
        *("1", "1832473e-2fe0-452d-abe9-3cdb9879522f", "2", "2.16.840.1.113883.19.5", "3"),
        *("f001", "f002", "f003", "f201", "f203", "hl7", "hl7pay", "mmanu"),
    ),
    "Endpoint": ("direct-endpoint", "example", "example-iid", "example-wadors"),
    "ServiceRequest": (
        *("ambulation", "appendectomy-narrative", "benchpress", "colon-biopsy", "colonoscopy"),
        *("di", "do-not-turn", "education", "example", "example-implant", "example-pgx", "ft4"),
        *("lipid", "myringotomy", "ob", "og-example1", "physical-therapy", "physiotherapy"),
        *("subrequest", "vent"),
    ),
    "ImagingStudy": ("example", "example-xr"),
    "DocumentReference": ("example",),
    "List": (
        *("current-allergies", "example", "example-double-cousin-relationship", "example-empty"),
        *("example-simple-empty", "f201", "genetic", "long", "med-list", "prognosis"),
    ),
    "Binary": ("example", "f006"),
    "Consent": tuple(
        f"consent-example-{name}"
        for name in (
            *("Emergency", "Out", "basic", "grantor", "notAuthor", "notOrg", "notThem"),
            *("notThis", "notTime", "pkb", "signature", "smartonfhir"),
        )
    ),
    "AuditEvent": (
        *("example", "example-disclosure", "example-error", "example-login", "example-logout"),
        *("example-media", "example-pixQuery", "example-rest", "example-search"),
    ),
    "Task": tuple(f"{prefix}example{n}" for prefix in ("", "fm-") for n in range(1, 7)),
    "Provenance": (
        *("consent-signature", "example", "example-biocompute-object", "example-cwl"),
        "signature",
    ),
}
CASES = [f"{type_name}/{id_}" for type_name, ids in EXAMPLES.items() for id_ in ids]


@pytest.fixture(scope="session")
def examples() -> Path:
    """The unpacked hl7.fhir.r4.examples package (its files are named Type-id.json)."""
    return npm_package("hl7.fhir.r4.examples@4.0.1")


def example_bytes(examples: Path, ref: str) -> bytes:
    """The published file of the example `Type/id`."""
    return (examples / f"{ref.replace('/', '-', 1)}.json").read_bytes()


def exact(text: str | bytes) -> Any:
    """JSON with decimals kept as written (1.50 stays "1.50")."""
    return json.loads(text, parse_float=str)


def without_version(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource less meta.versionId and meta.lastUpdated (other meta is kept)."""
    out = dict(resource)
    meta = {k: v for k, v in out.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    return {**out, "meta": meta} if meta else out


def test_examples_list_matches_package(examples: Path) -> None:
    """EXAMPLES names every example of every served type in the package, and nothing else."""
    assert set(EXAMPLES) == set(SERVED_TYPES)
    found = set()
    for path in examples.glob("*.json"):
        data = json.loads(path.read_bytes())
        if isinstance(data, dict) and data.get("resourceType") in SERVED_TYPES:
            found.add(f"{data['resourceType']}/{data['id']}")
    assert found == set(CASES)


def write(client: TestClient, ref: str, body: bytes) -> Response:
    """PUT the example with its id. A create-only type (AuditEvent: records are immutable, and
    only site systems may write them) gets a POST from a site system."""
    type_name = ref.split("/")[0]
    headers = {"content-type": "application/fhir+json"}
    rt = client.app.state.rix  # type: ignore[attr-defined]
    if "update" in rt.registry.get(type_name).interactions:
        return client.put(f"/fhir/{ref}", content=body, headers=headers)
    token = issue_dev_token(
        rt.settings,
        subject="site-pacs",
        name="Site PACS",
        role="site-system",
        organization_id="site",
    )
    headers["authorization"] = f"Bearer {token}"
    return client.post(f"/fhir/{type_name}", content=body, headers=headers)


def round_trip_problem(client: TestClient, examples: Path, ref: str) -> str | None:
    """What goes wrong when the example `ref` is written and read back, if anything."""
    raw = example_bytes(examples, ref)
    written = write(client, ref, raw)
    if written.status_code != 201 or written.headers.get("etag") != 'W/"1"':
        etag = written.headers.get("etag")
        return f"write answered {written.status_code} ETag {etag}: {written.text[:800]}"
    location = urlsplit(written.headers["location"]).path.split("/_history/")[0]
    read = client.get(location)
    if read.status_code != 200:
        return f"read of {location} answered {read.status_code}: {read.text[:800]}"
    stored, published = exact(read.content), exact(raw)
    if stored.get("meta", {}).get("versionId") != "1":
        return f"meta.versionId is {stored.get('meta', {}).get('versionId')!r}, not '1'"
    if not location.endswith(f"/{published['id']}"):  # created: the server chose the id
        published["id"] = stored["id"]
    if without_version(stored) != without_version(published):
        return f"reads back different: {json.dumps(stored)[:800]}"
    return None


@pytest.mark.parametrize("type_name", list(EXAMPLES))
def test_examples_are_accepted_and_read_back_equal(
    client: TestClient, examples: Path, type_name: str
) -> None:
    """Grouped per type: one app per test, and app start-up costs more than ten examples."""
    problems = {
        ref: problem
        for ref in (f"{type_name}/{id_}" for id_ in EXAMPLES[type_name])
        if (problem := round_trip_problem(client, examples, ref))
    }
    assert not problems, "\n".join(f"{ref}: {text}" for ref, text in problems.items())


# (example, dotted path to change, new value, expected issue.expression)
INVALID = [
    pytest.param("Patient/example", "active", "yes", "Patient.active", id="string-for-boolean"),
    pytest.param("Patient/example", "birthDate", 19741225, "Patient.birthDate", id="number-date"),
    pytest.param(
        "ImagingStudy/example",
        "series.0.numberOfInstances",
        "1",
        "ImagingStudy.series[0].numberOfInstances",
        id="string-for-unsignedInt",
    ),
    pytest.param(
        "DocumentReference/example",
        "content.0.attachment.size",
        -1,
        "DocumentReference.content[0].attachment.size",
        id="negative-unsignedInt",
    ),
    pytest.param(
        "Provenance/example", "recorded", "yesterday", "Provenance.recorded", id="bad-instant"
    ),
    pytest.param(
        "Patient/example", "favouriteColour", "blue", "Patient.favouriteColour", id="unknown"
    ),
    pytest.param(
        "ImagingStudy/example",
        "series.0.instance.0.sopClassUid",
        "1.2.840.10008.5.1.4.1.1.2",
        "ImagingStudy.series[0].instance[0].sopClassUid",
        id="unknown-nested",
    ),
    pytest.param("Patient/example", "gender", "robot", "Patient.gender", id="binding"),
    pytest.param(
        "Patient/example",
        "contact.0.gender",
        "F",
        "Patient.contact[0].gender",
        id="binding-nested",
    ),
    pytest.param("ImagingStudy/example", "status", "done", "ImagingStudy.status", id="binding-2"),
    pytest.param("Task/example1", "intent", "wish", "Task.intent", id="binding-task"),
    pytest.param(
        "Consent/consent-example-basic", "status", "signed", "Consent.status", id="binding-consent"
    ),
]


def changed(resource: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `resource` with the element at the dotted `path` (list indexes as numbers) set."""
    out = copy.deepcopy(resource)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return out


@pytest.mark.parametrize(("ref", "path", "value", "expression"), INVALID)
def test_invalid_variant_is_rejected_at_its_element(
    client: TestClient, examples: Path, ref: str, path: str, value: Any, expression: str
) -> None:
    body = changed(json.loads(example_bytes(examples, ref)), path, value)
    response = write(client, ref, json.dumps(body).encode())
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    errors = [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]
    assert [expression] in [i.get("expression") for i in errors], outcome
    assert client.get(f"/fhir/{ref}").status_code == 404
