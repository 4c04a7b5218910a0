"""FHIR R4 search (search.html) through the HTTP API, on SQLite and PostgreSQL.

Parameter types (token, string, date, reference, uri), modifiers and prefixes, chains and
reverse chains, the common parameters, result parameters (_sort, _count, _summary, _total,
_elements, _include, _revinclude), paging on a snapshot, errors, and how deletes and updates
show in search.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

BASE = "http://testserver/fhir"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC = "http://loinc.org"

Params = dict[str, str] | list[tuple[str, str]]


# -- helpers ------------------------------------------------------------------------------------


def create(client: TestClient, resource: dict[str, Any]) -> str:
    """POST a resource and return its server-assigned id."""
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


def put(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    """PUT a resource with its id (create or update); the stored JSON."""
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def delete(client: TestClient, type_name: str, rid: str) -> None:
    """DELETE a resource."""
    assert client.delete(f"/fhir/{type_name}/{rid}").status_code == 204


def search(
    client: TestClient,
    type_name: str,
    params: Params | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """GET [type]?params, asserting the status; the JSON body."""
    response = client.get(f"/fhir/{type_name}", params=params or {}, headers=headers)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    if status == 200:
        assert body["resourceType"] == "Bundle"
        assert body["type"] == "searchset"
    else:
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["severity"] == "error"
    return body


def matches(bundle: dict[str, Any]) -> list[str]:
    """Ids of the entries with search.mode=match, in order."""
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def included(bundle: dict[str, Any]) -> set[str]:
    """`Type/id` of the entries with search.mode=include."""
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "include"
    }


def found(client: TestClient, type_name: str, params: Params) -> set[str]:
    """Ids matched by a search (asserting that total agrees and that there is one page)."""
    bundle = search(client, type_name, params)
    ids = matches(bundle)
    assert len(ids) == len(set(ids)), f"duplicates in {ids}"
    assert bundle["total"] == len(ids)
    return set(ids)


def rejected(client: TestClient, type_name: str, params: Params) -> str:
    """A search that must be a 400 OperationOutcome; its diagnostics."""
    body = search(client, type_name, params, status=400)
    text: str = body["issue"][0]["diagnostics"]
    return text


def link(bundle: dict[str, Any], relation: str) -> str | None:
    """The URL of a Bundle link relation, if any."""
    for item in bundle.get("link", []):
        if item["relation"] == relation:
            url: str = item["url"]
            return url
    return None


def follow(client: TestClient, url: str) -> dict[str, Any]:
    """GET an absolute link of a Bundle."""
    assert url.startswith(BASE + "/"), url
    response = client.get(url)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def query_of(url: str) -> dict[str, list[str]]:
    """The query parameters of a URL."""
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def patient(
    family: str | None = None,
    given: Iterable[str] = (),
    **fields: Any,
) -> dict[str, Any]:
    """A Patient with an optional name and any other fields."""
    resource: dict[str, Any] = {"resourceType": "Patient", **fields}
    name: dict[str, Any] = {}
    if family is not None:
        name["family"] = family
    if given:
        name["given"] = list(given)
    if name:
        resource["name"] = [name]
    return resource


def study(subject: str | dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """An ImagingStudy (status available unless given) about `subject`."""
    resource: dict[str, Any] = {"resourceType": "ImagingStudy", "status": "available", **fields}
    if isinstance(subject, str):
        resource["subject"] = {"reference": subject}
    elif subject is not None:
        resource["subject"] = subject
    else:
        resource.setdefault("subject", {"display": "unknown"})
    return resource


def document(subject: str | dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A DocumentReference (status current) with one attachment."""
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "application/pdf"}}],
        **fields,
    }
    if isinstance(subject, str):
        resource["subject"] = {"reference": subject}
    elif subject is not None:
        resource["subject"] = subject
    return resource


def consent(period: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """A Consent (active, patient-privacy) with an optional provision period."""
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        **fields,
    }
    if period is not None:
        resource["provision"] = {"period": period}
    return resource


# -- token --------------------------------------------------------------------------------------


def test_token_code_and_system_forms(client: TestClient) -> None:
    a = create(client, patient(identifier=[{"system": "urn:a", "value": "1"}]))
    b = create(client, patient(identifier=[{"system": "urn:b", "value": "1"}]))
    none = create(client, patient(identifier=[{"value": "1"}]))
    other = create(client, patient(identifier=[{"system": "urn:a", "value": "2"}]))

    assert found(client, "Patient", {"identifier": "1"}) == {a, b, none}
    assert found(client, "Patient", {"identifier": "urn:a|1"}) == {a}
    assert found(client, "Patient", {"identifier": "|1"}) == {none}
    assert found(client, "Patient", {"identifier": "urn:a|"}) == {a, other}
    assert found(client, "Patient", {"identifier": "urn:a|3"}) == set()
    assert found(client, "Patient", {"identifier": "urn:c|1"}) == set()


def test_token_codes_are_matched_exactly(client: TestClient) -> None:
    create(client, patient(identifier=[{"system": "urn:a", "value": "ABC-1"}]))
    assert found(client, "Patient", {"identifier": "ABC"}) == set()
    assert found(client, "Patient", {"identifier": "ABC-12"}) == set()


def test_token_on_coding_and_codeable_concept(client: TestClient) -> None:
    ct = create(
        client,
        study(
            series=[{"uid": "1.2.3", "modality": {"system": DCM, "code": "CT"}}],
            reasonCode=[
                {
                    "coding": [{"system": "http://snomed.info/sct", "code": "22298006"}],
                    "text": "Heart attack",
                }
            ],
        ),
    )
    mr = create(
        client,
        study(
            series=[
                {
                    "uid": "1.2.4",
                    "modality": {"system": DCM, "code": "MR", "display": "Magnetic Resonance"},
                }
            ]
        ),
    )
    assert found(client, "ImagingStudy", {"modality": "CT"}) == {ct}
    assert found(client, "ImagingStudy", {"modality": f"{DCM}|MR"}) == {mr}
    assert found(client, "ImagingStudy", {"modality": f"{DCM}|"}) == {ct, mr}
    assert found(client, "ImagingStudy", {"modality": "urn:other|CT"}) == set()
    assert found(client, "ImagingStudy", {"reason": "http://snomed.info/sct|22298006"}) == {ct}
    assert found(client, "ImagingStudy", {"series": "1.2.4"}) == {mr}
    assert found(client, "ImagingStudy", {"modality:text": "magnetic"}) == {mr}
    assert found(client, "ImagingStudy", {"reason:text": "heart"}) == {ct}


def test_token_not_includes_resources_without_the_element(client: TestClient) -> None:
    male = create(client, patient(gender="male"))
    female = create(client, patient(gender="female"))
    unknown = create(client, patient())
    assert found(client, "Patient", {"gender:not": "male"}) == {female, unknown}
    assert found(client, "Patient", {"gender:not": "other"}) == {male, female, unknown}
    assert found(client, "Patient", {"gender": "male"}) == {male}


def test_token_not_with_system(client: TestClient) -> None:
    a = create(client, patient(identifier=[{"system": "urn:a", "value": "1"}]))
    b = create(client, patient(identifier=[{"system": "urn:b", "value": "1"}]))
    assert found(client, "Patient", {"identifier:not": "urn:a|1"}) == {b}
    assert found(client, "Patient", {"identifier:not": "1"}) == set()
    assert found(client, "Patient", {"identifier:not": "urn:c|1"}) == {a, b}


def test_token_text_modifier(client: TestClient) -> None:
    report = create(
        client,
        document(
            type={
                "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging"}],
                "text": "Compte rendu d'imagerie",
            }
        ),
    )
    textual = create(client, document(type={"text": "Échographie abdominale"}))
    create(client, document(type={"coding": [{"system": LOINC, "code": "11506-3"}]}))
    assert found(client, "DocumentReference", {"type:text": "diagnostic"}) == {report}
    assert found(client, "DocumentReference", {"type:text": "DIAGNOSTIC IMAGING"}) == {report}
    assert found(client, "DocumentReference", {"type:text": "echographie"}) == {textual}
    assert found(client, "DocumentReference", {"type:text": "imaging"}) == set()
    assert found(client, "DocumentReference", {"type": "18748-4"}) == {report}


def test_token_of_type_on_identifiers(client: TestClient) -> None:
    mr = create(
        client,
        patient(
            identifier=[
                {
                    "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                    "system": "urn:hospital",
                    "value": "123",
                }
            ]
        ),
    )
    create(
        client,
        patient(
            identifier=[
                {
                    "type": {"coding": [{"system": V2_0203, "code": "SS"}]},
                    "system": "urn:ssn",
                    "value": "123",
                }
            ]
        ),
    )
    assert found(client, "Patient", {"identifier:of-type": f"{V2_0203}|MR|123"}) == {mr}
    assert found(client, "Patient", {"identifier:of-type": f"{V2_0203}|MR|999"}) == set()
    assert found(client, "Patient", {"identifier:of-type": f"{V2_0203}|PI|123"}) == set()
    assert rejected(client, "Patient", {"identifier:of-type": f"{V2_0203}|MR"})


def test_token_booleans(client: TestClient) -> None:
    active = create(client, patient(active=True))
    inactive = create(client, patient(active=False))
    unknown = create(client, patient())
    assert found(client, "Patient", {"active": "true"}) == {active}
    assert found(client, "Patient", {"active": "false"}) == {inactive}
    assert found(client, "Patient", {"active:not": "true"}) == {inactive, unknown}
    assert found(client, "Patient", {"active:missing": "true"}) == {unknown}


def test_token_deceased(client: TestClient) -> None:
    dead_flag = create(client, patient(deceasedBoolean=True))
    dead_date = create(client, patient(deceasedDateTime="2020-01-01"))
    alive = create(client, patient(deceasedBoolean=False))
    unknown = create(client, patient())
    assert found(client, "Patient", {"deceased": "true"}) == {dead_flag, dead_date}
    assert found(client, "Patient", {"deceased": "false"}) == {alive, unknown}
    assert found(client, "Patient", {"death-date": "2020"}) == {dead_date}


def test_token_on_contact_points(client: TestClient) -> None:
    both = create(
        client,
        patient(
            telecom=[
                {"system": "email", "value": "jp@example.org"},
                {"system": "phone", "value": "0123456789"},
            ]
        ),
    )
    phone_only = create(client, patient(telecom=[{"system": "phone", "value": "jp@example.org"}]))
    assert found(client, "Patient", {"email": "jp@example.org"}) == {both}
    assert found(client, "Patient", {"phone": "0123456789"}) == {both}
    assert found(client, "Patient", {"telecom": "jp@example.org"}) == {both, phone_only}


# -- string -------------------------------------------------------------------------------------


def test_string_is_starts_with_case_and_accent_insensitive(client: TestClient) -> None:
    eleonore = create(client, patient("Dupont", ["Éléonore"]))
    leonard = create(client, patient("Martin", ["Léonard"]))
    for text in ("eleonore", "Eleonore", "ELEO", "éléonore", "ÉLÉONORE", "e"):
        assert found(client, "Patient", {"given": text}) == {eleonore}, text
    assert found(client, "Patient", {"given": "leo"}) == {leonard}
    assert found(client, "Patient", {"given": "onore"}) == set()
    assert found(client, "Patient", {"given": "eleonores"}) == set()
    assert found(client, "Patient", {"family": "DUP"}) == {eleonore}
    assert found(client, "Patient", {"family": "pont"}) == set()


def test_string_ignores_hyphens_and_spaces(client: TestClient) -> None:
    jp = create(client, patient("Moreau", ["Jean-Pierre"]))
    create(client, patient("Moreau", ["Jeanne"]))
    for text in ("jean pierre", "Jean-Pierre", "JEAN-PIERRE", "jean-p", "jean  pierre"):
        assert found(client, "Patient", {"given": text}) == {jp}, text


def test_string_exact(client: TestClient) -> None:
    dupont = create(client, patient("Dupont"))
    create(client, patient("Dupontel"))
    create(client, patient("dupont"))
    accented = create(client, patient("Dupónt"))
    assert found(client, "Patient", {"family:exact": "Dupont"}) == {dupont}
    assert found(client, "Patient", {"family:exact": "Dupónt"}) == {accented}
    assert found(client, "Patient", {"family:exact": "Dupon"}) == set()
    assert found(client, "Patient", {"family:exact": "DUPONT"}) == set()


def test_string_contains(client: TestClient) -> None:
    dupont = create(client, patient("Dupont", ["Éléonore"]))
    dupontel = create(client, patient("Dupontel"))
    create(client, patient("Martin"))
    assert found(client, "Patient", {"family:contains": "PON"}) == {dupont, dupontel}
    assert found(client, "Patient", {"family:contains": "tel"}) == {dupontel}
    assert found(client, "Patient", {"name:contains": "léo"}) == {dupont}
    assert found(client, "Patient", {"family:contains": "100%"}) == set()


def test_string_name_matches_every_part_of_human_name(client: TestClient) -> None:
    pid = create(
        client,
        {
            "resourceType": "Patient",
            "name": [
                {"family": "Dupont", "given": ["Marie", "Claire"], "prefix": ["Mme"]},
                {"use": "maiden", "family": "Lefèvre"},
            ],
        },
    )
    create(client, patient("Autre", ["Paul"]))
    for text in ("dupont", "marie", "claire", "mme", "lefevre"):
        assert found(client, "Patient", {"name": text}) == {pid}, text
    assert found(client, "Patient", {"family": "lefevre"}) == {pid}
    assert found(client, "Patient", {"family": "marie"}) == set()
    assert found(client, "Patient", {"given": "dupont"}) == set()


def test_string_address_parts(client: TestClient) -> None:
    paris = create(
        client,
        patient(
            address=[
                {
                    "line": ["12 rue de la Paix"],
                    "city": "Paris",
                    "postalCode": "75002",
                    "country": "France",
                }
            ]
        ),
    )
    lyon = create(client, patient(address=[{"city": "Lyon", "postalCode": "69001"}]))
    assert found(client, "Patient", {"address": "paris"}) == {paris}
    assert found(client, "Patient", {"address": "12 rue"}) == {paris}
    assert found(client, "Patient", {"address": "69"}) == {lyon}
    assert found(client, "Patient", {"address-city": "PAR"}) == {paris}
    assert found(client, "Patient", {"address-city": "rue"}) == set()
    assert found(client, "Patient", {"address-postalcode": "750"}) == {paris}
    assert found(client, "Patient", {"address-country": "fr"}) == {paris}


def test_string_escaped_comma_is_part_of_the_value(client: TestClient) -> None:
    smith = create(client, {"resourceType": "Organization", "name": "Smith, Jones & Co"})
    jones = create(client, {"resourceType": "Organization", "name": "Jones"})
    assert found(client, "Organization", {"name": "Smith\\, Jones"}) == {smith}
    assert found(client, "Organization", {"name:exact": "Smith\\, Jones & Co"}) == {smith}
    assert found(client, "Organization", {"name": "Zed,Jones"}) == {jones}
    assert found(client, "Organization", {"name": "Jones\\,Smith"}) == set()


# -- date ---------------------------------------------------------------------------------------


@pytest.fixture
def birthdates(client: TestClient) -> dict[str, str]:
    """Patients born on various dates, at various precisions: label -> id."""
    values = {
        "1969-12-31": "1969-12-31",
        "1970": "1970",
        "1970-05": "1970-05",
        "1970-05-15": "1970-05-15",
        "1970-06-01": "1970-06-01",
        "1970-12-31": "1970-12-31",
        "1971-01-01": "1971-01-01",
        "2000-01-01": "2000-01-01",
    }
    return {label: create(client, patient(birthDate=value)) for label, value in values.items()}


def test_date_precision_of_the_search_value(client: TestClient, birthdates: dict[str, str]) -> None:
    def born(value: str) -> set[str]:
        ids = found(client, "Patient", {"birthdate": value})
        return {label for label, pid in birthdates.items() if pid in ids}

    assert born("1970") == {"1970", "1970-05", "1970-05-15", "1970-06-01", "1970-12-31"}
    assert born("1970-05") == {"1970-05", "1970-05-15"}
    assert born("1970-05-15") == {"1970-05-15"}
    assert born("eq1970-06-01") == {"1970-06-01"}
    assert born("1970-02") == set()
    # A search value more precise than the stored day cannot contain it...
    assert born("1970-05-15T10:00:00Z") == set()
    # ...but the stored day extends both above and below it.
    assert "1970-05-15" in born("gt1970-05-15T10:00:00Z")
    assert "1970-05-15" in born("lt1970-05-15T10:00:00Z")


# FHIR R4 search.html, date prefixes: the search value's range against the resource's range.
DATE_PREFIX_CASES: list[tuple[str, set[str]]] = [
    ("eq1970", {"1970", "1970-05", "1970-05-15", "1970-06-01", "1970-12-31"}),
    ("ne1970", {"1969-12-31", "1971-01-01", "2000-01-01"}),
    # gt: the resource's range extends above the search range; 1970-06-01 is inside 1970.
    ("gt1970", {"1971-01-01", "2000-01-01"}),
    ("lt1970", {"1969-12-31"}),
    (
        "ge1970",
        {"1970", "1970-05", "1970-05-15", "1970-06-01", "1970-12-31", "1971-01-01", "2000-01-01"},
    ),
    ("le1970", {"1969-12-31", "1970", "1970-05", "1970-05-15", "1970-06-01", "1970-12-31"}),
    ("sa1970", {"1971-01-01", "2000-01-01"}),
    ("eb1970", {"1969-12-31"}),
    # An imprecise resource value (the year 1970) extends on both sides of a day inside it.
    ("gt1970-06-01", {"1970", "1970-12-31", "1971-01-01", "2000-01-01"}),
    ("lt1970-06-01", {"1969-12-31", "1970", "1970-05", "1970-05-15"}),
    ("ge1970-06-01", {"1970", "1970-06-01", "1970-12-31", "1971-01-01", "2000-01-01"}),
    ("le1970-06-01", {"1969-12-31", "1970", "1970-05", "1970-05-15", "1970-06-01"}),
    # sa / eb: no overlap at all, so the whole year 1970 is neither after nor before June.
    ("sa1970-06-01", {"1970-12-31", "1971-01-01", "2000-01-01"}),
    ("eb1970-06-01", {"1969-12-31", "1970-05", "1970-05-15"}),
    (
        "ne1970-06-01",
        {"1969-12-31", "1970", "1970-05", "1970-05-15", "1970-12-31", "1971-01-01", "2000-01-01"},
    ),
]


def test_date_prefixes(client: TestClient, birthdates: dict[str, str]) -> None:
    failures = []
    for value, expected in DATE_PREFIX_CASES:
        ids = found(client, "Patient", {"birthdate": value})
        got = {label for label, pid in birthdates.items() if pid in ids}
        if got != expected:
            failures.append(f"{value}: got {sorted(got)}, expected {sorted(expected)}")
    assert not failures, "\n".join(failures)


def test_date_approximately(client: TestClient, birthdates: dict[str, str]) -> None:
    ids = found(client, "Patient", {"birthdate": "ap1970-06-01"})
    got = {label for label, pid in birthdates.items() if pid in ids}
    # "ap" widens the range (here by years, 10% of the gap to today) but not to 2000.
    assert {"1969-12-31", "1970", "1970-06-01", "1971-01-01"} <= got
    assert "2000-01-01" not in got


def test_date_repeated_parameters_are_and(client: TestClient, birthdates: dict[str, str]) -> None:
    ids = found(client, "Patient", [("birthdate", "ge1970-05"), ("birthdate", "lt1970-07")])
    got = {label for label, pid in birthdates.items() if pid in ids}
    # The whole year 1970 both extends above May and below July, so it matches too.
    assert got == {"1970", "1970-05", "1970-05-15", "1970-06-01"}
    ids = found(client, "Patient", [("birthdate", "ge1970-01-01"), ("birthdate", "le1970-12-31")])
    got = {label for label, pid in birthdates.items() if pid in ids}
    assert got == {"1970", "1970-05", "1970-05-15", "1970-06-01", "1970-12-31"}


def test_date_comma_values_are_or(client: TestClient, birthdates: dict[str, str]) -> None:
    ids = found(client, "Patient", {"birthdate": "1969-12-31,ge2000"})
    assert ids == {birthdates["1969-12-31"], birthdates["2000-01-01"]}


def test_datetime_with_time_zones(client: TestClient) -> None:
    # 2020-01-01T21:30Z, and 2020-01-01T23:00Z although its local date is the 2nd.
    evening = create(client, study(started="2020-01-01T23:30:00+02:00"))
    late = create(client, study(started="2020-01-02T01:00:00+02:00"))

    def started(value: str) -> set[str]:
        return found(client, "ImagingStudy", {"started": value})

    assert started("2020-01-01") == {evening, late}
    assert started("2020-01-02") == set()
    assert started("2020-01-01T21:30:00Z") == {evening}
    assert started("2020-01-01T23:30:00+02:00") == {evening}
    assert started("2020-01-01T16:30:00-05:00") == {evening}
    assert started("2020-01-01T21:30Z") == {evening}
    assert started("gt2020-01-01T22:00:00Z") == {late}
    assert started("lt2020-01-01T22:00:00Z") == {evening}
    assert started("ge2020-01-02T00:30:00+02:00") == {late}
    assert started("2020-01-01T23:00:00.000Z") == set()  # the value is to the second only


def test_period_values(client: TestClient) -> None:
    closed = create(client, consent({"start": "2020-01-01", "end": "2020-12-31"}))
    open_end = create(client, consent({"start": "2021-06-01"}))
    open_start = create(client, consent({"end": "2019-06-30"}))
    create(client, consent())

    def period(value: str) -> set[str]:
        return found(client, "Consent", {"period": value})

    assert period("2020") == {closed}
    assert period("2020-06") == set()  # the period is wider than June
    assert period("ge2020-06") == {closed, open_end}
    assert period("lt2020-06") == {closed, open_start}
    assert period("gt2030") == {open_end}
    assert period("lt1900") == {open_start}
    assert period("sa2020") == {open_end}
    assert period("eb2020") == {open_start}
    assert period("ne2020") == {open_end, open_start}


def test_task_execution_period(client: TestClient) -> None:
    task = create(
        client,
        {
            "resourceType": "Task",
            "status": "in-progress",
            "intent": "order",
            "executionPeriod": {
                "start": "2024-03-01T08:00:00Z",
                "end": "2024-03-01T09:00:00Z",
            },
        },
    )
    assert found(client, "Task", {"period": "2024-03-01"}) == {task}
    assert found(client, "Task", {"period": "gt2024-03-01T08:30:00Z"}) == {task}
    assert found(client, "Task", {"period": "sa2024-03-01T08:30:00Z"}) == set()
    assert found(client, "Task", {"period": "sa2024-03-01T07:59:59Z"}) == {task}
    assert found(client, "Task", {"period": "eb2024-03-01T09:00:00Z"}) == set()
    assert found(client, "Task", {"period": "eb2024-03-01T09:00:01Z"}) == {task}


def test_last_updated_with_prefixes(client: TestClient) -> None:
    stamps: dict[str, str] = {}
    for family in ("A", "B", "C"):
        response = client.post("/fhir/Patient", json=patient(family))
        assert response.status_code == 201
        stamps[response.json()["id"]] = response.json()["meta"]["lastUpdated"]
    middle = sorted(stamps.values())[1]

    def expect(predicate: Any) -> set[str]:
        return {pid for pid, stamp in stamps.items() if predicate(stamp)}

    everyone = set(stamps)
    assert found(client, "Patient", {"_lastUpdated": f"ge{middle}"}) == expect(
        lambda s: s >= middle
    )
    assert found(client, "Patient", {"_lastUpdated": f"gt{middle}"}) == expect(lambda s: s > middle)
    assert found(client, "Patient", {"_lastUpdated": f"lt{middle}"}) == expect(lambda s: s < middle)
    assert found(client, "Patient", {"_lastUpdated": f"le{middle}"}) == expect(
        lambda s: s <= middle
    )
    assert found(client, "Patient", {"_lastUpdated": middle}) == expect(lambda s: s == middle)
    assert found(client, "Patient", {"_lastUpdated": middle[:10]}) == expect(
        lambda s: s[:10] == middle[:10]
    )
    assert found(client, "Patient", {"_lastUpdated": "ge2000-01-01"}) == everyone
    assert found(client, "Patient", [("_lastUpdated", "ge2000"), ("_lastUpdated", "lt9000")]) == (
        everyone
    )
    assert found(client, "Patient", {"_lastUpdated": "lt2000"}) == set()


# -- reference ----------------------------------------------------------------------------------


def test_reference_forms(client: TestClient) -> None:
    pid = create(client, patient("Target"))
    other = create(client, patient("Other"))
    mine = create(client, study(f"Patient/{pid}"))
    theirs = create(client, study(f"Patient/{other}"))
    remote = create(client, study(f"http://elsewhere.example/fhir/Patient/{pid}"))

    def subject(params: Params) -> set[str]:
        return found(client, "ImagingStudy", params)

    assert subject({"subject": f"Patient/{pid}"}) == {mine}
    assert subject({"subject": pid}) == {mine}
    assert subject({"subject": f"{BASE}/Patient/{pid}"}) == {mine}
    assert subject({"patient": pid}) == {mine}
    assert subject({"subject:Patient": pid}) == {mine}
    assert subject({"subject": f"Group/{pid}"}) == set()
    assert subject({"subject": f"http://elsewhere.example/fhir/Patient/{pid}"}) == {remote}
    assert subject({"subject": f"Patient/{pid},{other}"}) == {mine, theirs}
    assert subject({"subject": "Patient/unknown"}) == set()


def test_reference_type_modifier(client: TestClient) -> None:
    pid = create(client, patient("Target"))
    put(client, {"resourceType": "Practitioner", "id": pid})  # same id, another type
    about_patient = create(client, document(f"Patient/{pid}"))
    about_practitioner = create(client, document(f"Practitioner/{pid}"))

    def subject(params: Params) -> set[str]:
        return found(client, "DocumentReference", params)

    assert subject({"subject": pid}) == {about_patient, about_practitioner}
    assert subject({"subject:Patient": pid}) == {about_patient}
    assert subject({"subject:Practitioner": pid}) == {about_practitioner}
    assert subject({"subject:Patient": f"Practitioner/{pid}"}) == set()
    assert subject({"patient": pid}) == {about_patient}
    # A type that the parameter cannot refer to is the client's error.
    rejected(client, "DocumentReference", {"subject:Organization": pid})


def test_reference_stored_with_a_version(client: TestClient) -> None:
    pid = create(client, patient("Target"))
    versioned = create(client, study(f"Patient/{pid}/_history/1"))
    assert found(client, "ImagingStudy", {"subject": f"Patient/{pid}"}) == {versioned}
    assert found(client, "ImagingStudy", {"patient": pid}) == {versioned}


def test_reference_identifier(client: TestClient) -> None:
    logical = create(
        client,
        document({"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "123"}}),
    )
    create(client, document({"identifier": {"system": "urn:other", "value": "456"}}))
    assert found(
        client, "DocumentReference", {"subject:identifier": "urn:oid:1.2.250.1.213.1.4.8|123"}
    ) == {logical}
    assert found(client, "DocumentReference", {"subject:identifier": "123"}) == {logical}
    assert found(client, "DocumentReference", {"subject:identifier": "urn:other|123"}) == set()


def test_chained_parameters(client: TestClient) -> None:
    durand = create(
        client, patient("Durand", ["Éloïse"], identifier=[{"system": "urn:ins", "value": "A"}])
    )
    martin = create(
        client, patient("Martin", ["Paul"], identifier=[{"system": "urn:ins", "value": "B"}])
    )
    s_durand = create(client, study(f"Patient/{durand}"))
    s_martin = create(client, study(f"Patient/{martin}"))
    d_martin = create(client, document(f"Patient/{martin}"))
    create(client, document(f"Patient/{durand}"))

    assert found(client, "ImagingStudy", {"patient.identifier": "urn:ins|A"}) == {s_durand}
    assert found(client, "ImagingStudy", {"patient.identifier": "B"}) == {s_martin}
    assert found(client, "ImagingStudy", {"subject:Patient.name": "durand"}) == {s_durand}
    assert found(client, "ImagingStudy", {"subject:Patient.given": "eloise"}) == {s_durand}
    assert found(client, "ImagingStudy", {"subject.family": "MART"}) == {s_martin}
    assert found(client, "DocumentReference", {"patient.family": "martin"}) == {d_martin}
    assert found(client, "DocumentReference", {"patient.family": "nobody"}) == set()
    assert found(
        client, "ImagingStudy", [("patient.family", "durand"), ("patient.given", "paul")]
    ) == (set())


def test_chain_over_every_target_type_that_has_the_parameter(client: TestClient) -> None:
    """MHD ITI-67 `author.given`/`author.family`: the author may be a Practitioner or a Patient
    (both define `given`, as strings): the chain searches both."""
    doctor = create(client, {"resourceType": "Practitioner", "name": [{"family": "Vidal"}]})
    author = create(client, patient("Vidal", ["Anne"]))
    subject = create(client, patient("Roux", ["Léa"]))
    by_doctor = create(
        client,
        {**document(f"Patient/{subject}"), "author": [{"reference": f"Practitioner/{doctor}"}]},
    )
    by_patient = create(
        client, {**document(f"Patient/{subject}"), "author": [{"reference": f"Patient/{author}"}]}
    )
    assert found(client, "DocumentReference", {"author.family": "vidal"}) == {by_doctor, by_patient}
    assert found(client, "DocumentReference", {"author.given": "anne"}) == {by_patient}
    assert found(client, "DocumentReference", {"author:Practitioner.family": "vidal"}) == {
        by_doctor
    }


def test_chain_through_two_references(client: TestClient) -> None:
    org = create(client, {"resourceType": "Organization", "name": "CHU Nord"})
    pid = create(
        client, patient("Durand", managingOrganization={"reference": f"Organization/{org}"})
    )
    create(client, patient("Martin"))
    sid = create(client, study(f"Patient/{pid}"))
    assert found(client, "ImagingStudy", {"patient.organization.name": "chu"}) == {sid}
    assert found(client, "ImagingStudy", {"patient.organization.name": "sud"}) == set()


def test_chain_with_modifiers_and_id(client: TestClient) -> None:
    dupont = create(client, patient("Dupont", birthDate="1970-05-17"))
    dupontel = create(client, patient("Dupontel"))
    s_dupont = create(client, study(f"Patient/{dupont}"))
    s_dupontel = create(client, study(f"Patient/{dupontel}"))

    def studies(params: Params) -> set[str]:
        return found(client, "ImagingStudy", params)

    assert studies({"patient.family:exact": "Dupont"}) == {s_dupont}
    assert studies({"patient.family": "dupont"}) == {s_dupont, s_dupontel}
    assert studies({"patient.family:contains": "tel"}) == {s_dupontel}
    assert studies({"patient._id": dupontel}) == {s_dupontel}
    assert studies({"patient.birthdate": "1970"}) == {s_dupont}
    assert studies({"patient.birthdate:missing": "true"}) == {s_dupontel}
    assert studies({"patient.birthdate": "lt1960"}) == set()


def test_chain_errors(client: TestClient) -> None:
    # `performer` is a reference on some targets of `related`, a token on others.
    assert "ambiguous" in rejected(client, "DocumentReference", {"related.performer": "x"})
    found(client, "DocumentReference", {"author:Practitioner.name": "x"})
    rejected(client, "Patient", {"gender.name": "x"})
    rejected(client, "ImagingStudy", {"patient.unknown": "x"})
    rejected(client, "ImagingStudy", {"patient:Organization.name": "x"})


def test_reverse_chaining(client: TestClient) -> None:
    with_available = create(client, patient("Available"))
    with_cancelled = create(client, patient("Cancelled"))
    create(client, patient("Nothing"))
    sid = create(client, study(f"Patient/{with_available}"))
    create(client, study(f"Patient/{with_cancelled}", status="cancelled"))
    create(client, document(context={"related": [{"reference": f"ImagingStudy/{sid}"}]}))

    assert found(client, "Patient", {"_has:ImagingStudy:patient:status": "available"}) == {
        with_available
    }
    assert found(
        client, "Patient", {"_has:ImagingStudy:patient:status": "available,cancelled"}
    ) == {with_available, with_cancelled}
    assert found(client, "Patient", {"_has:ImagingStudy:subject:status:not": "available"}) == {
        with_cancelled
    }
    assert found(client, "Patient", {"_has:ImagingStudy:patient:_id": sid}) == {with_available}
    assert found(
        client,
        "Patient",
        [
            ("_has:ImagingStudy:patient:status", "available,cancelled"),
            ("_has:ImagingStudy:patient:status", "cancelled"),
        ],
    ) == {with_cancelled}
    nested = "_has:ImagingStudy:patient:_has:DocumentReference:related:status"
    assert found(client, "Patient", {nested: "current"}) == {with_available}
    assert found(client, "Patient", {nested: "superseded"}) == set()


def test_reverse_chaining_errors(client: TestClient) -> None:
    rejected(client, "Patient", {"_has:ImagingStudy:patient": "x"})
    rejected(client, "Patient", {"_has:Unknown:patient:status": "x"})
    rejected(client, "Patient", {"_has:ImagingStudy:status:status": "x"})
    rejected(client, "Patient", {"_has:ImagingStudy:patient:unknown": "x"})
    rejected(client, "Organization", {"_has:ImagingStudy:patient:status": "available"})


# -- uri ----------------------------------------------------------------------------------------


def test_uri_exact_below_and_above(client: TestClient) -> None:
    one = create(
        client,
        document(content=[{"attachment": {"url": "http://pacs.example/wado/studies/1"}}]),
    )
    two = create(
        client,
        document(content=[{"attachment": {"url": "http://pacs.example/wado/studies/2"}}]),
    )
    create(client, document(content=[{"attachment": {"url": "http://other.example/x"}}]))

    def location(params: Params) -> set[str]:
        return found(client, "DocumentReference", params)

    assert location({"location": "http://pacs.example/wado/studies/1"}) == {one}
    assert location({"location": "http://pacs.example/wado/studies"}) == set()
    assert location({"location:below": "http://pacs.example/wado"}) == {one, two}
    assert location({"location:below": "HTTP://PACS.EXAMPLE/wado"}) == set()
    assert location({"location:below": "http://pacs.example/w_do"}) == set()
    assert location({"location:above": "http://pacs.example/wado/studies/1/series/9"}) == {one}
    assert location({"location:above": "http://pacs.example/wado/studies/1"}) == {one}
    assert location({"location:above": "HTTP://PACS.EXAMPLE/wado/studies/1/x"}) == set()
    assert location({"location:above": "http://pacs.example/wado"}) == set()


def test_uri_matching_treats_like_wildcards_literally(client: TestClient) -> None:
    underscore = create(client, document(content=[{"attachment": {"url": "http://h.example/a_b"}}]))
    percent = create(client, document(content=[{"attachment": {"url": "http://h.example/%25"}}]))

    def location(params: Params) -> set[str]:
        return found(client, "DocumentReference", params)

    assert location({"location:above": "http://h.example/aXb/c"}) == set()
    assert location({"location:above": "http://h.example/a_b/c"}) == {underscore}
    assert location({"location:below": "http://h.example/a_"}) == {underscore}
    assert location({"location:below": "http://h.example/%"}) == {percent}
    assert location({"location:above": "http://h.example/%25/x"}) == {percent}
    assert location({"location:above": "http://h.example/x25/x"}) == set()


def test_profile_uri(client: TestClient) -> None:
    a = create(client, patient(meta={"profile": ["http://example.org/StructureDefinition/a"]}))
    b = create(client, patient(meta={"profile": ["http://example.org/StructureDefinition/b"]}))
    create(client, patient())
    assert found(client, "Patient", {"_profile": "http://example.org/StructureDefinition/a"}) == {a}
    assert found(
        client, "Patient", {"_profile:below": "http://example.org/StructureDefinition"}
    ) == {
        a,
        b,
    }
    assert found(client, "Patient", {"_profile": "http://example.org/StructureDefinition"}) == set()


# -- :missing -----------------------------------------------------------------------------------


def test_missing_modifier(client: TestClient) -> None:
    pid = create(client, patient("Durand", birthDate="1970"))
    bare = create(client, patient())
    with_subject = create(client, study(f"Patient/{pid}"))
    without = create(client, study())
    assert found(client, "Patient", {"birthdate:missing": "true"}) == {bare}
    assert found(client, "Patient", {"birthdate:missing": "false"}) == {pid}
    assert found(client, "Patient", {"family:missing": "true"}) == {bare}
    assert found(client, "Patient", {"identifier:missing": "true"}) == {pid, bare}
    assert found(client, "ImagingStudy", {"patient:missing": "false"}) == {with_subject}
    assert found(client, "ImagingStudy", {"patient:missing": "true"}) == {without}
    assert found(client, "ImagingStudy", {"started:missing": "true"}) == {with_subject, without}
    # Every resource has an id and a lastUpdated.
    assert found(client, "Patient", {"_id:missing": "false"}) == {pid, bare}
    assert found(client, "Patient", {"_id:missing": "true"}) == set()
    assert found(client, "Patient", {"_lastUpdated:missing": "false"}) == {pid, bare}
    assert found(client, "Patient", {"_lastUpdated:missing": "true"}) == set()
    rejected(client, "Patient", {"birthdate:missing": "maybe"})


# -- OR, AND, escapes ---------------------------------------------------------------------------


def test_comma_is_or_and_repetition_is_and(client: TestClient) -> None:
    available = create(client, study(status="available"))
    cancelled = create(client, study(status="cancelled"))
    create(client, study(status="registered"))
    assert found(client, "ImagingStudy", {"status": "available,cancelled"}) == {
        available,
        cancelled,
    }
    assert found(
        client, "ImagingStudy", [("status", "available,cancelled"), ("status", "cancelled")]
    ) == {cancelled}
    both = create(client, patient("Moreau", ["Jean", "Pierre"]))
    create(client, patient("Moreau", ["Jean"]))
    assert found(client, "Patient", [("given", "jean"), ("given", "pierre")]) == {both}


def test_escaped_comma_in_token(client: TestClient) -> None:
    comma = create(client, patient(identifier=[{"system": "urn:a", "value": "1,2"}]))
    one = create(client, patient(identifier=[{"system": "urn:a", "value": "1"}]))
    assert found(client, "Patient", {"identifier": "urn:a|1\\,2"}) == {comma}
    assert found(client, "Patient", {"identifier": "urn:a|1,2"}) == {one}


# -- common parameters --------------------------------------------------------------------------


def test_id(client: TestClient) -> None:
    a = create(client, patient("A"))
    b = create(client, patient("B"))
    c = create(client, patient("C"))
    assert found(client, "Patient", {"_id": a}) == {a}
    assert found(client, "Patient", {"_id": f"{a},{b}"}) == {a, b}
    assert found(client, "Patient", {"_id": "nope"}) == set()
    assert found(client, "Patient", {"_id:not": a}) == {b, c}
    assert found(client, "Patient", [("_id", f"{a},{b}"), ("_id", f"{b},{c}")]) == {b}
    assert found(client, "ImagingStudy", {"_id": a}) == set()


def test_tag_and_security(client: TestClient) -> None:
    tagged = create(
        client,
        patient(
            meta={
                "tag": [{"system": "urn:rix:tags", "code": "vip"}],
                "security": [{"system": CONFIDENTIALITY, "code": "R"}],
            }
        ),
    )
    plain = create(client, patient(meta={"security": [{"system": CONFIDENTIALITY, "code": "N"}]}))
    assert found(client, "Patient", {"_tag": "urn:rix:tags|vip"}) == {tagged}
    assert found(client, "Patient", {"_tag": "vip"}) == {tagged}
    assert found(client, "Patient", {"_tag:not": "urn:rix:tags|vip"}) == {plain}
    assert found(client, "Patient", {"_security": f"{CONFIDENTIALITY}|R"}) == {tagged}
    assert found(client, "Patient", {"_security": f"{CONFIDENTIALITY}|N,{CONFIDENTIALITY}|R"}) == {
        tagged,
        plain,
    }


# -- _sort --------------------------------------------------------------------------------------


def test_sort_on_several_string_keys(client: TestClient) -> None:
    martin_zoe = create(client, patient("Martin", ["Zoé"]))
    durand = create(client, patient("Durand", ["Paul"]))
    nameless = create(client, patient(None, ["Alice"]))
    martin_anne = create(client, patient("Martin", ["Anne"]))

    def order(sort: str) -> list[str]:
        return matches(search(client, "Patient", {"_sort": sort}))

    assert order("family,given") == [durand, martin_anne, martin_zoe, nameless]
    assert order("-family,given") == [martin_anne, martin_zoe, durand, nameless]
    assert order("family,-given") == [durand, martin_zoe, martin_anne, nameless]
    assert order("given")[:1] == [nameless]


def test_sort_on_dates_puts_missing_values_last(client: TestClient) -> None:
    old = create(client, study(started="2019-01-01T10:00:00Z"))
    undated = create(client, study())
    new = create(client, study(started="2023-06-01T10:00:00Z"))
    middle = create(client, study(started="2021-01-01"))
    assert matches(search(client, "ImagingStudy", {"_sort": "started"})) == [
        old,
        middle,
        new,
        undated,
    ]
    assert matches(search(client, "ImagingStudy", {"_sort": "-started"})) == [
        new,
        middle,
        old,
        undated,
    ]


def test_sort_on_last_updated(client: TestClient) -> None:
    created = [create(client, patient(f"P{i}")) for i in range(3)]
    updated = put(client, {"resourceType": "Patient", "id": created[0], "active": True})
    stamps = {
        pid: client.get(f"/fhir/Patient/{pid}").json()["meta"]["lastUpdated"] for pid in created
    }
    assert stamps[created[0]] == updated["meta"]["lastUpdated"]
    # Equal stamps (same millisecond) keep creation order: sorted() is stable, even reversed.
    ascending = sorted(created, key=lambda p: stamps[p])
    descending = sorted(created, key=lambda p: stamps[p], reverse=True)
    assert matches(search(client, "Patient", {"_sort": "_lastUpdated"})) == ascending
    assert matches(search(client, "Patient", {"_sort": "-_lastUpdated"})) == descending
    # The update made the first-created patient the most recently updated one.
    assert descending[0] == created[0]


def test_sort_on_id_and_token(client: TestClient) -> None:
    for rid, gender in (("c-3", "male"), ("a-1", "female"), ("b-2", "other")):
        put(client, {"resourceType": "Patient", "id": rid, "gender": gender})
    assert matches(search(client, "Patient", {"_sort": "_id"})) == ["a-1", "b-2", "c-3"]
    assert matches(search(client, "Patient", {"_sort": "-_id"})) == ["c-3", "b-2", "a-1"]
    assert matches(search(client, "Patient", {"_sort": "gender"})) == ["a-1", "c-3", "b-2"]


def test_sort_on_unknown_parameter_is_rejected(client: TestClient) -> None:
    rejected(client, "Patient", {"_sort": "shoe-size"})


# -- _count, _summary, _total, _elements ----------------------------------------------------------


def test_count_limits_the_page_not_the_total(client: TestClient) -> None:
    for i in range(5):
        create(client, patient(f"Count{i}"))
    bundle = search(client, "Patient", {"_count": "2"})
    assert len(matches(bundle)) == 2
    assert bundle["total"] == 5
    assert link(bundle, "next") is not None
    zero = search(client, "Patient", {"_count": "0"})
    assert zero["total"] == 5 and "entry" not in zero


def test_count_is_capped_at_the_server_maximum(client: TestClient) -> None:
    for i in range(3):
        create(client, patient(f"Cap{i}"))
    bundle = search(client, "Patient", {"_count": "100000"})
    assert len(matches(bundle)) == 3
    assert link(bundle, "next") is None
    first = link(bundle, "first")
    assert first is not None
    cap = client.app.state.rix.settings.max_page_size  # type: ignore[attr-defined]
    assert query_of(first)["_count"] == [str(cap)]


def test_bad_count_is_rejected(client: TestClient) -> None:
    for value in ("abc", "-1", "1.5", "", "1e3"):
        assert "_count" in rejected(client, "Patient", {"_count": value}), value


def test_summary_count(client: TestClient) -> None:
    for i in range(3):
        create(client, patient(f"S{i}"))
    create(client, study())
    bundle = search(client, "Patient", {"_summary": "count"})
    assert bundle["total"] == 3
    assert "entry" not in bundle
    assert link(bundle, "next") is None
    assert search(client, "Patient", {"_summary": "count", "family": "S1"})["total"] == 1


def test_total_none(client: TestClient) -> None:
    pid = create(client, patient("T"))
    bundle = search(client, "Patient", {"_total": "none"})
    assert "total" not in bundle
    assert matches(bundle) == [pid]
    assert search(client, "Patient", {"_total": "accurate"})["total"] == 1
    rejected(client, "Patient", {"_total": "roughly"})


def test_summary_data_drops_the_narrative(client: TestClient) -> None:
    create(
        client,
        patient(
            "Narrated",
            text={
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">N</div>',
            },
        ),
    )
    resource = search(client, "Patient", {"_summary": "data"})["entry"][0]["resource"]
    assert "text" not in resource
    assert resource["name"][0]["family"] == "Narrated"
    assert any(t.get("code") == "SUBSETTED" for t in resource["meta"]["tag"])


def test_elements(client: TestClient) -> None:
    create(
        client,
        patient(
            "Durand",
            ["Anne"],
            gender="female",
            birthDate="1970",
            identifier=[{"system": "urn:a", "value": "1"}],
        ),
    )
    bundle = search(client, "Patient", {"_elements": "identifier,name"})
    resource = bundle["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "identifier", "name"}
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED",
    } in resource["meta"]["tag"]
    full = search(client, "Patient")["entry"][0]["resource"]
    assert full["gender"] == "female"
    assert not any(t.get("code") == "SUBSETTED" for t in full["meta"].get("tag", []))


# -- _include and _revinclude -------------------------------------------------------------------


def test_include_reference_targets(client: TestClient) -> None:
    pid = create(client, patient("Included"))
    other = create(client, patient("NotIncluded"))
    s1 = create(client, study(f"Patient/{pid}"))
    s2 = create(client, study(f"Patient/{pid}", status="cancelled"))
    create(client, study(f"Patient/{other}", status="registered"))

    bundle = search(
        client, "ImagingStudy", {"_id": f"{s1},{s2}", "_include": "ImagingStudy:patient"}
    )
    assert set(matches(bundle)) == {s1, s2}
    assert included(bundle) == {f"Patient/{pid}"}  # once, although two studies point at it
    assert bundle["total"] == 2
    assert len(bundle["entry"]) == 3

    typed = search(client, "ImagingStudy", {"_id": s1, "_include": "ImagingStudy:subject:Patient"})
    assert included(typed) == {f"Patient/{pid}"}
    doc = create(client, document(f"Patient/{pid}"))
    typed_doc = search(
        client, "DocumentReference", {"_id": doc, "_include": "DocumentReference:subject:Patient"}
    )
    assert included(typed_doc) == {f"Patient/{pid}"}
    other_type = search(
        client,
        "DocumentReference",
        {"_id": doc, "_include": "DocumentReference:subject:Practitioner"},
    )
    assert included(other_type) == set()
    wildcard = search(client, "ImagingStudy", {"_id": s1, "_include": "*"})
    assert included(wildcard) == {f"Patient/{pid}"}
    without = search(client, "ImagingStudy", {"_id": s1})
    assert included(without) == set()


def test_include_wildcard_follows_every_reference(client: TestClient) -> None:
    pid = create(client, patient("P"))
    endpoint = create(
        client,
        {
            "resourceType": "Endpoint",
            "status": "active",
            "connectionType": {
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                "code": "dicom-wado-rs",
            },
            "payloadType": [{"text": "DICOM"}],
            "address": "http://pacs.example/dicom-web",
        },
    )
    sid = create(client, study(f"Patient/{pid}", endpoint=[{"reference": f"Endpoint/{endpoint}"}]))
    bundle = search(client, "ImagingStudy", {"_id": sid, "_include": "ImagingStudy:*"})
    assert included(bundle) == {f"Patient/{pid}", f"Endpoint/{endpoint}"}


def test_revinclude(client: TestClient) -> None:
    pid = create(client, patient("Rev"))
    sid = create(client, study(f"Patient/{pid}"))
    doc = create(client, document(context={"related": [{"reference": f"ImagingStudy/{sid}"}]}))
    create(client, document())

    studies = search(client, "ImagingStudy", {"_revinclude": "DocumentReference:related"})
    assert matches(studies) == [sid]
    assert included(studies) == {f"DocumentReference/{doc}"}
    assert studies["total"] == 1

    patients = search(client, "Patient", {"_revinclude": "ImagingStudy:patient"})
    assert matches(patients) == [pid]
    assert included(patients) == {f"ImagingStudy/{sid}"}


def test_iterate(client: TestClient) -> None:
    org = create(client, {"resourceType": "Organization", "name": "CHU"})
    pid = create(client, patient("It", managingOrganization={"reference": f"Organization/{org}"}))
    sid = create(client, study(f"Patient/{pid}"))
    doc = create(client, document(context={"related": [{"reference": f"ImagingStudy/{sid}"}]}))

    flat = search(
        client,
        "Patient",
        [("_revinclude", "ImagingStudy:patient"), ("_revinclude", "DocumentReference:related")],
    )
    assert included(flat) == {f"ImagingStudy/{sid}"}
    deep = search(
        client,
        "Patient",
        [
            ("_revinclude", "ImagingStudy:patient"),
            ("_revinclude:iterate", "DocumentReference:related"),
        ],
    )
    assert included(deep) == {f"ImagingStudy/{sid}", f"DocumentReference/{doc}"}
    assert deep["total"] == 1

    chained = search(
        client,
        "ImagingStudy",
        [("_include", "ImagingStudy:patient"), ("_include:iterate", "Patient:organization")],
    )
    assert included(chained) == {f"Patient/{pid}", f"Organization/{org}"}
    no_iterate = search(
        client,
        "ImagingStudy",
        [("_include", "ImagingStudy:patient"), ("_include", "Patient:organization")],
    )
    assert included(no_iterate) == {f"Patient/{pid}"}


def test_includes_follow_the_page_only(client: TestClient) -> None:
    first = create(client, patient("First"))
    second = create(client, patient("Second"))
    s1 = create(client, study(f"Patient/{first}"))
    s2 = create(client, study(f"Patient/{second}"))
    page1 = search(client, "ImagingStudy", {"_count": "1", "_include": "ImagingStudy:patient"})
    assert matches(page1) == [s1]
    assert included(page1) == {f"Patient/{first}"}
    assert page1["total"] == 2
    next_url = link(page1, "next")
    assert next_url is not None
    assert query_of(next_url)["_include"] == ["ImagingStudy:patient"]
    page2 = follow(client, next_url)
    assert matches(page2) == [s2]
    assert included(page2) == {f"Patient/{second}"}


def test_included_resources_carry_include_mode(client: TestClient) -> None:
    pid = create(client, patient("Mode"))
    create(client, study(f"Patient/{pid}"))
    bundle = search(client, "ImagingStudy", {"_include": "ImagingStudy:patient"})
    modes = {e["resource"]["resourceType"]: e["search"]["mode"] for e in bundle["entry"]}
    assert modes == {"ImagingStudy": "match", "Patient": "include"}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"


BAD_INCLUDES = [
    ("_include", "ImagingStudy"),
    ("_include", "Unknown:patient"),
    ("_include", "ImagingStudy:status"),
    ("_include", "ImagingStudy:nothing"),
    ("_include", "ImagingStudy:subject:Unknown"),
    ("_include", "ImagingStudy:subject:Patient:extra"),
    ("_revinclude", "DocumentReference:status"),
    ("_revinclude:iterate", "Unknown:related"),
]


def test_bad_includes_are_rejected(client: TestClient) -> None:
    for key, value in BAD_INCLUDES:
        assert rejected(client, "ImagingStudy", {key: value}), (key, value)


# -- paging -------------------------------------------------------------------------------------


def test_walking_next_returns_every_match_once(client: TestClient) -> None:
    expected = {create(client, patient("Page", [str(i)])) for i in range(7)}
    create(client, patient("Elsewhere"))
    bundle = search(client, "Patient", {"family": "page", "_count": "3"})
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        assert bundle["total"] == 7
        for relation in ("self", "first"):
            url = link(bundle, relation)
            assert url is not None and url.startswith(f"{BASE}/Patient?"), url
        seen.extend(matches(bundle))
        nxt = link(bundle, "next")
        if nxt is None:
            break
        assert query_of(nxt)["family"] == ["page"]
        bundle = follow(client, nxt)
    assert pages == 3
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == expected


def test_paging_without_total(client: TestClient) -> None:
    expected = {create(client, patient("Untotalled", [str(i)])) for i in range(4)}
    bundle = search(client, "Patient", {"family": "untotalled", "_count": "2", "_total": "none"})
    seen: list[str] = []
    for _ in range(5):
        assert "total" not in bundle
        seen.extend(matches(bundle))
        nxt = link(bundle, "next")
        if nxt is None:
            break
        assert query_of(nxt)["_total"] == ["none"]
        bundle = follow(client, nxt)
    assert link(bundle, "next") is None
    assert sorted(seen) == sorted(expected)


def test_previous_and_first_links(client: TestClient) -> None:
    for i in range(5):
        create(client, patient("Prev", [str(i)]))
    page1 = search(client, "Patient", {"family": "prev", "_count": "2", "_sort": "given"})
    assert link(page1, "previous") is None
    next_url = link(page1, "next")
    assert next_url is not None
    page2 = follow(client, next_url)
    previous = link(page2, "previous")
    assert previous is not None
    assert matches(follow(client, previous)) == matches(page1)
    first = link(page2, "first")
    assert first is not None
    assert matches(follow(client, first)) == matches(page1)
    assert query_of(first)["_sort"] == ["given"]


def test_pages_stay_stable_while_matching_resources_are_created(client: TestClient) -> None:
    original = [create(client, patient("Snap", [f"b{i}"])) for i in range(4)]
    page1 = search(client, "Patient", {"family": "snap", "_count": "2", "_sort": "given"})
    next_url = link(page1, "next")
    assert next_url is not None
    assert "_snapshot" in query_of(next_url)

    # Created between two page fetches, and sorting before everything already paged.
    late = {create(client, patient("Snap", [f"a{i}"])) for i in range(3)}

    page2 = follow(client, next_url)
    assert page2["total"] == 4
    assert link(page2, "next") is None
    assert matches(page1) + matches(page2) == original
    assert not late & set(matches(page2))
    assert found(client, "Patient", {"family": "snap"}) == set(original) | late


def test_self_link_echoes_the_query(client: TestClient) -> None:
    bundle = search(client, "Patient", [("family", "x"), ("given", "a"), ("given", "b")])
    self_url = link(bundle, "self")
    assert self_url is not None and self_url.startswith(f"{BASE}/Patient?")
    assert query_of(self_url)["given"] == ["a", "b"]
    assert query_of(self_url)["family"] == ["x"]


# -- errors and leniency ------------------------------------------------------------------------


def test_unknown_parameter_is_a_400(client: TestClient) -> None:
    body = search(client, "Patient", {"shoe-size": "42"}, status=400)
    assert body["issue"][0]["code"] == "not-supported"
    assert "shoe-size" in body["issue"][0]["diagnostics"]


UNSUPPORTED_MODIFIERS = [
    ("Patient", "family:below"),
    ("Patient", "family:not"),
    ("Patient", "birthdate:exact"),
    ("Patient", "gender:contains"),
    ("Patient", "gender:nonsense"),
    ("ImagingStudy", "subject:text"),
    ("ImagingStudy", "subject:Unknown"),
]


def test_unsupported_modifier_is_a_400(client: TestClient) -> None:
    for type_name, key in UNSUPPORTED_MODIFIERS:
        body = search(client, type_name, {key: "x"}, status=400)
        assert body["issue"][0]["code"] == "not-supported", key


def test_lenient_handling_ignores_unknown_parameters(client: TestClient) -> None:
    pid = create(client, patient("Lenient"))
    create(client, patient("Other"))
    bundle = search(
        client,
        "Patient",
        [("family", "lenient"), ("shoe-size", "42")],
        headers={"Prefer": "handling=lenient"},
    )
    assert matches(bundle) == [pid]
    self_url = link(bundle, "self")
    assert self_url is not None
    assert "shoe-size" not in query_of(self_url)
    assert query_of(self_url)["family"] == ["lenient"]
    strict = client.get(
        "/fhir/Patient", params={"shoe-size": "42"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    modifier = search(
        client,
        "Patient",
        [("family", "lenient"), ("family:below", "x")],
        headers={"Prefer": "handling=lenient"},
    )
    assert matches(modifier) == [pid]
    self_url = link(modifier, "self")
    assert self_url is not None and "family:below" not in query_of(self_url)
    # Leniency is about unknown parameters, not about malformed values of known ones.
    search(
        client,
        "Patient",
        {"birthdate": "1970-13"},
        status=400,
        headers={"Prefer": "handling=lenient"},
    )


def test_format_parameters_are_not_search_criteria(client: TestClient) -> None:
    pid = create(client, patient("Formatted"))
    assert found(client, "Patient", {"_format": "json", "_pretty": "true"}) == {pid}


BAD_DATES = [
    ("Patient", {"birthdate": "1970-13"}),
    ("Patient", {"birthdate": "notadate"}),
    ("Patient", {"birthdate": "gt"}),
    ("Patient", {"birthdate": "xx1970"}),
    ("Patient", {"birthdate": "1970,bad"}),
    ("Patient", {"_lastUpdated": "yesterday"}),
    ("ImagingStudy", {"started": "2020-01-01T25:00:00Z"}),
    ("ImagingStudy", {"patient.birthdate": "1970-02-30"}),
    ("Consent", {"period": "ge2020-02-30"}),
]


def test_bad_date_is_a_400(client: TestClient) -> None:
    create(client, patient(birthDate="1970"))  # with data, so the query really runs
    for type_name, params in BAD_DATES:
        body = search(client, type_name, params, status=400)
        assert body["issue"][0]["code"] == "invalid", params


def test_post_search_gives_the_same_results_as_get(client: TestClient) -> None:
    wanted = create(client, patient("Posted", ["Anne"], birthDate="1980-02-03"))
    create(client, patient("Posted", ["Bob"], birthDate="1990-01-01"))
    get = search(client, "Patient", {"family": "posted", "birthdate": "lt1985"})
    post = client.post(
        "/fhir/Patient/_search",
        content="family=posted&birthdate=lt1985",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert post.status_code == 200, post.text
    assert matches(post.json()) == matches(get) == [wanted]
    assert post.json()["total"] == 1
    mixed = client.post(
        "/fhir/Patient/_search?family=posted",
        data={"given": "anne"},
    )
    assert matches(mixed.json()) == [wanted]
    bad = client.post("/fhir/Patient/_search", data={"shoe-size": "42"})
    assert bad.status_code == 400
    json_body = client.post("/fhir/Patient/_search", json={"family": "posted"})
    assert json_body.status_code == 400


# -- deletes and updates ------------------------------------------------------------------------


def test_deleted_resources_never_appear(client: TestClient) -> None:
    gone = create(client, patient("Gone", identifier=[{"system": "urn:ins", "value": "G"}]))
    kept = create(client, patient("Kept"))
    sid = create(client, study(f"Patient/{gone}"))
    doc = create(client, document(context={"related": [{"reference": f"ImagingStudy/{sid}"}]}))
    delete(client, "Patient", gone)

    assert found(client, "Patient", {"family": "gone"}) == set()
    assert found(client, "Patient", {"_id": gone}) == set()
    assert found(client, "Patient", {}) == {kept}
    assert found(client, "ImagingStudy", {"patient.identifier": "urn:ins|G"}) == set()
    assert found(client, "ImagingStudy", {"patient.family": "gone"}) == set()
    included_ = search(client, "ImagingStudy", {"_include": "ImagingStudy:patient"})
    assert matches(included_) == [sid] and included(included_) == set()

    delete(client, "DocumentReference", doc)
    assert (
        found(
            client,
            "Patient",
            {"_has:ImagingStudy:patient:_has:DocumentReference:related:status": "current"},
        )
        == set()
    )
    rev = search(client, "ImagingStudy", {"_revinclude": "DocumentReference:related"})
    assert included(rev) == set()

    delete(client, "ImagingStudy", sid)
    assert found(client, "ImagingStudy", {"status": "available"}) == set()
    assert found(client, "ImagingStudy", {"subject": f"Patient/{gone}"}) == set()


def test_updated_resources_are_found_by_their_new_values_only(client: TestClient) -> None:
    pid = create(client, patient("Before", gender="male", birthDate="1970"))
    put(
        client,
        {"resourceType": "Patient", "id": pid, "name": [{"family": "After"}], "gender": "female"},
    )
    assert found(client, "Patient", {"family": "before"}) == set()
    assert found(client, "Patient", {"family": "after"}) == {pid}
    assert found(client, "Patient", {"gender": "male"}) == set()
    assert found(client, "Patient", {"gender": "female"}) == {pid}
    assert found(client, "Patient", {"birthdate": "1970"}) == set()
    assert found(client, "Patient", {"birthdate:missing": "true"}) == {pid}

    other = create(client, patient("Other"))
    sid = create(client, study(f"Patient/{pid}"))
    put(client, {**study(f"Patient/{other}"), "id": sid})
    assert found(client, "ImagingStudy", {"subject": f"Patient/{pid}"}) == set()
    assert found(client, "ImagingStudy", {"patient.family": "after"}) == set()
    assert found(client, "ImagingStudy", {"patient.family": "other"}) == {sid}
    assert found(client, "Patient", {"_has:ImagingStudy:patient:status": "available"}) == {other}


def test_recreated_resource_is_found_again(client: TestClient) -> None:
    pid = create(client, patient("Phoenix"))
    delete(client, "Patient", pid)
    assert found(client, "Patient", {"family": "phoenix"}) == set()
    put(client, {"resourceType": "Patient", "id": pid, "name": [{"family": "Phoenix"}]})
    assert found(client, "Patient", {"family": "phoenix"}) == {pid}


def test_values_without_searchable_characters_are_refused(client: TestClient) -> None:
    assert "nothing to search on" in rejected(client, "Patient", {"family:contains": "_"})
    assert "nothing to search on" in rejected(client, "Patient", {"family": "-"})


def test_id_takes_only_the_not_modifier(client: TestClient) -> None:
    assert ":text" in rejected(client, "Patient", {"_id:text": "abc"})
    assert ":of-type" in rejected(client, "Patient", {"_id:of-type": "a|b|c"})
