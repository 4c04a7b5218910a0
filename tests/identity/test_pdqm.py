"""IHE PDQm: ITI-78 Patient search (names matched without case, accents, hyphens or extra
spaces, birth names included), ITI-119 `$match` (graded, best first, onlyCertainMatches,
count), the PDQ policy for clinical roles (only patients known at their organisation), and the
audit trail of the identity operations."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.identity.support import (
    BLOIS,
    MATCH_GRADE_URL,
    ROMORANTIN,
    TOURS,
    Token,
    feed_id,
    found_ids,
    ipp,
    link,
    parameters,
    patient,
    unlink,
)

INS = "2700375123456"


def put(client: TestClient, token: Token, site: str, resource: dict[str, Any]) -> str:
    """A site's Patient feed (sent by the administrator: visibility and matching depend on
    the identifier namespaces, not on who wrote the record); its logical id."""
    return feed_id(client, token, site, resource, as_admin=True)


# -- ITI-78 search ---------------------------------------------------------------------------------


def population(client: TestClient, token: Token) -> dict[str, str]:
    """Three patients of two sites, named as French registration desks write them."""
    eleonore = patient(
        ROMORANTIN,
        "a1",
        "ELEONORE",
        ["JEAN PIERRE"],  # one compound given name
        "1970-03-04",
        gender="male",
        address=[{"city": "ROMORANTIN-LANTHENAY", "postalCode": "41200"}],
    )
    martin = patient(
        TOURS,
        "b1",
        "MARTIN",
        "ANNE",
        "1965-11-20",
        gender="female",
        address=[{"city": "TOURS", "postalCode": "37000"}],
    )
    martin["name"].append({"use": "maiden", "family": "LEFÈVRE", "given": ["ANNE"]})
    marie = patient(
        TOURS, "c1", "ELEONORE", "MARIE", "1980-01-01", gender="female", address=[{"city": "TOURS"}]
    )
    return {
        "eleonore": put(client, token, ROMORANTIN, eleonore),
        "martin": put(client, token, TOURS, martin),
        "marie": put(client, token, TOURS, marie),
    }


def search(client: TestClient, ids: dict[str, str], **params: str) -> set[str]:
    """The population's names a Patient search returns."""
    by_id = {v: k for k, v in ids.items()}
    return {by_id[i] for i in found_ids(client.get("/fhir/Patient", params=params))}


def test_names_ignore_case_accents_hyphens_and_extra_spaces(
    client: TestClient, token: Token
) -> None:
    ids = population(client, token)
    assert search(client, ids, family="Éléonore") == {"eleonore", "marie"}
    assert search(client, ids, family="éLÉonore") == {"eleonore", "marie"}
    assert search(client, ids, family="eleo") == {"eleonore", "marie"}  # starts with
    assert search(client, ids, given="Jean-Pierre") == {"eleonore"}
    assert search(client, ids, given="jean   pierre") == {"eleonore"}
    assert search(client, ids, family="Éléonore", given="Jean-Pierre") == {"eleonore"}


def test_birth_name_is_searched(client: TestClient, token: Token) -> None:
    ids = population(client, token)
    assert search(client, ids, family="Lefevre") == {"martin"}
    assert search(client, ids, family="LEFÈVRE", given="anne") == {"martin"}
    assert search(client, ids, name="lefèvre") == {"martin"}


def test_identifier_birthdate_gender_and_address(client: TestClient, token: Token) -> None:
    ids = population(client, token)
    either = f"{ipp(ROMORANTIN)}|a1,{ipp(TOURS)}|b1"
    assert search(client, ids, identifier=either) == {"eleonore", "martin"}  # ORed
    assert search(client, ids, identifier=f"{ipp(ROMORANTIN)}|b1") == set()  # wrong domain
    assert search(client, ids, family="eleonore", birthdate="1970-03-04") == {"eleonore"}
    assert search(client, ids, family="eleonore", birthdate="1970-04-03") == set()
    assert search(client, ids, gender="female") == {"martin", "marie"}
    assert search(client, ids, family="eleonore", gender="female") == {"marie"}
    assert search(client, ids, **{"address-city": "tours"}) == {"martin", "marie"}
    assert search(client, ids, **{"address-city": "Romorantin Lanthenay"}) == {"eleonore"}
    assert search(client, ids, **{"address-postalcode": "41200"}) == {"eleonore"}


# -- ITI-119 $match --------------------------------------------------------------------------------


def candidates(client: TestClient, token: Token) -> dict[str, str]:
    """Look-alikes of Jean DUPONT born 1970-03-04, in four records of three sites."""
    return {
        "self": put(client, token, ROMORANTIN, patient(ROMORANTIN, "x")),
        "homonym": put(client, token, TOURS, patient(TOURS, "y", "Dupont", "Jean")),
        "typo": put(client, token, TOURS, patient(TOURS, "t", "DUPOND")),
        "swapped": put(client, token, BLOIS, patient(BLOIS, "z", birth="1970-04-03")),
        "other": put(client, token, BLOIS, patient(BLOIS, "w", "MARTIN", "Paul")),
    }


def match(client: TestClient, *params: dict[str, Any], **kw: Any) -> Any:
    return client.post("/fhir/Patient/$match", json=parameters(*params), **kw)


def wanted(**extra: Any) -> dict[str, Any]:
    """The `resource` parameter: the demographics to match."""
    resource = {
        "resourceType": "Patient",
        "name": [{"family": "Dupont", "given": ["Jean"]}],
        "birthDate": "1970-03-04",
        **extra,
    }
    return {"name": "resource", "resource": resource}


def graded(response: Any, ids: dict[str, str]) -> list[tuple[str, str, float]]:
    """(which record, match grade, score) of each entry, in the order returned."""
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    by_id = {v: k for k, v in ids.items()}
    out = []
    for entry in bundle.get("entry", []):
        [grade] = [e for e in entry["search"]["extension"] if e["url"] == MATCH_GRADE_URL]
        out.append((by_id[entry["resource"]["id"]], grade["valueCode"], entry["search"]["score"]))
    return out


def test_match_grades_best_first(client: TestClient, token: Token) -> None:
    ids = candidates(client, token)
    identifier = [{"system": ipp(ROMORANTIN), "value": "x"}]
    results = graded(match(client, wanted(identifier=identifier)), ids)
    assert [(name, grade) for name, grade, _ in results] == [
        ("self", "certain"),
        ("homonym", "probable"),
        ("typo", "possible"),
        ("swapped", "possible"),
    ]
    scores = [score for _, _, score in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s <= 1 for s in scores)
    bundle = match(client, wanted(identifier=identifier)).json()
    assert bundle["total"] == len(bundle["entry"]) == 4
    for entry in bundle["entry"]:
        assert entry["resource"]["resourceType"] == "Patient"
        assert entry["fullUrl"].endswith(f"/Patient/{entry['resource']['id']}")
        assert entry["search"]["mode"] == "match"


def test_match_without_identifier_is_never_certain(client: TestClient, token: Token) -> None:
    ids = candidates(client, token)
    results = graded(match(client, wanted()), ids)
    assert {name: grade for name, grade, _ in results} == {
        "self": "probable",
        "homonym": "probable",
        "typo": "possible",
        "swapped": "possible",
    }


def test_only_certain_matches(client: TestClient, token: Token) -> None:
    ids = candidates(client, token)
    identifier = [{"system": ipp(ROMORANTIN), "value": "x"}]
    response = match(
        client,
        wanted(identifier=identifier),
        {"name": "onlyCertainMatches", "valueBoolean": True},
    )
    assert [(n, g) for n, g, _ in graded(response, ids)] == [("self", "certain")]
    assert (
        graded(match(client, wanted(), {"name": "onlyCertainMatches", "valueBoolean": True}), ids)
        == []
    )


def test_count_caps_the_matches(client: TestClient, token: Token) -> None:
    ids = candidates(client, token)
    identifier = [{"system": ipp(ROMORANTIN), "value": "x"}]
    response = match(client, wanted(identifier=identifier), {"name": "count", "valueInteger": 2})
    assert [n for n, _, _ in graded(response, ids)] == ["self", "homonym"]


def test_a_trusted_ins_is_a_certain_match(client: TestClient, token: Token) -> None:
    mine = patient(ROMORANTIN, "x", "MARTIN", "Anne", "1965-11-20", ins=INS, status="QUAL")
    pid = put(client, token, ROMORANTIN, mine)
    query = {
        "name": "resource",
        "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": INS}],
        },
    }
    assert graded(match(client, query), {"x": pid}) == [("x", "certain", pytest.approx(0.99))]


def test_match_bad_input(client: TestClient, token: Token) -> None:
    candidates(client, token)
    resource = wanted()
    bad = {
        "no resource": parameters(),
        "resource not a Patient": parameters(
            {"name": "resource", "resource": {"resourceType": "Practitioner"}}
        ),
        "count zero": parameters(resource, {"name": "count", "valueInteger": 0}),
        "count not an integer": parameters(resource, {"name": "count", "valueString": "2"}),
        "onlyCertainMatches not a boolean": parameters(
            resource, {"name": "onlyCertainMatches", "valueString": "true"}
        ),
        "unknown parameter": parameters(resource, {"name": "threshold", "valueDecimal": 0.5}),
        "a Bundle": {"resourceType": "Bundle", "type": "collection"},
        "a list": [resource],
    }
    for label, body in bad.items():
        response = client.post("/fhir/Patient/$match", json=body)
        assert response.status_code == 400, (label, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"


def test_match_rejects_an_invalid_patient(client: TestClient, token: Token) -> None:
    """BUG: the `resource` of $match is never validated. A Patient with a malformed name (a
    string, not a HumanName) or birth date is silently matched as if it had none and comes
    back as an empty result (200, total 0), which tells the registration desk 'no such
    patient' instead of 'your request is wrong' (the same Patient is a 400 on create)."""
    candidates(client, token)
    for broken in ({"name": "DUPONT"}, {"birthDate": "04/03/1970"}):
        resource = {
            "resourceType": "Patient",
            "name": [{"family": "Dupont", "given": ["Jean"]}],
            "birthDate": "1970-03-04",
            **broken,
        }
        assert client.post("/fhir/Patient", json=resource).status_code == 400
        response = match(client, {"name": "resource", "resource": resource})
        assert response.status_code == 400, (broken, response.text)


def test_an_identifier_value_without_its_system_is_not_certain(
    client: TestClient, token: Token
) -> None:
    """BUG: an identifier without a system matches that value in every domain and is graded
    `certain`. IPP values are only unique within a site: here Tours' patient 1001 (another
    person altogether) comes back as a certain match for Romorantin's Jean DUPONT."""
    mine = put(client, token, ROMORANTIN, patient(ROMORANTIN, "1001"))
    theirs = put(client, token, TOURS, patient(TOURS, "1001", "MARTIN", "Paul", "1980-05-06"))
    response = match(client, wanted(identifier=[{"value": "1001"}]))
    grades = {name: grade for name, grade, _ in graded(response, {"mine": mine, "theirs": theirs})}
    assert grades.get("theirs") != "certain", grades


# -- PDQ policy: clinical roles see patients known at their organisation -------------------------


def romorantin_and_tours(client: TestClient, token: Token) -> dict[str, str]:
    """Romorantin's patient x, the same woman at Tours (y, linked by INS), and a Tours-only
    patient with the same name (z)."""
    mohr = {"family": "MOHR", "given": "Alice", "birth": "1958-01-30"}
    return {
        "x": put(
            client, token, ROMORANTIN, patient(ROMORANTIN, "x", **mohr, ins=INS, status="QUAL")
        ),
        "y": put(client, token, TOURS, patient(TOURS, "y", **mohr, ins=INS, status="VALI")),
        "z": put(client, token, TOURS, patient(TOURS, "z", "MOHR", "Alice", "1960-02-02")),
    }


def test_clinical_roles_read_patients_known_at_their_site(client: TestClient, token: Token) -> None:
    ids = romorantin_and_tours(client, token)
    for role in ("clinician", "radiologist", "gp"):
        headers = token(role, org=ROMORANTIN)
        assert client.get(f"/fhir/Patient/{ids['x']}", headers=headers).status_code == 200
        assert client.get(f"/fhir/Patient/{ids['y']}", headers=headers).status_code == 200
        assert client.get(f"/fhir/Patient/{ids['z']}", headers=headers).status_code == 404


def test_clinical_search_drops_patients_unknown_at_the_site(
    client: TestClient, token: Token
) -> None:
    ids = romorantin_and_tours(client, token)
    headers = token("clinician", org=ROMORANTIN)
    response = client.get("/fhir/Patient", params={"family": "mohr"}, headers=headers)
    assert found_ids(response) == {ids["x"], ids["y"]}
    response = client.get(
        "/fhir/Patient", params={"identifier": f"{ipp(TOURS)}|z"}, headers=headers
    )
    assert found_ids(response) == set()


def test_a_clinician_without_organisation_sees_no_patient(client: TestClient, token: Token) -> None:
    ids = romorantin_and_tours(client, token)
    headers = token("clinician")
    assert client.get(f"/fhir/Patient/{ids['x']}", headers=headers).status_code == 404
    response = client.get("/fhir/Patient", params={"family": "mohr"}, headers=headers)
    assert found_ids(response) == set()


def test_unlinking_hides_the_other_site_record_at_once(client: TestClient, token: Token) -> None:
    ids = romorantin_and_tours(client, token)
    headers = token("clinician", org=ROMORANTIN)
    assert client.get(f"/fhir/Patient/{ids['y']}", headers=headers).status_code == 200
    assert unlink(client, ids["x"], ids["y"], reason="INS collision").status_code == 200
    assert client.get(f"/fhir/Patient/{ids['y']}", headers=headers).status_code == 404


def test_site_systems_and_operators_see_every_patient(client: TestClient, token: Token) -> None:
    ids = romorantin_and_tours(client, token)
    for role in ("site-system", "admin", "identity-officer"):
        headers = token(role, org=BLOIS)
        response = client.get("/fhir/Patient", params={"family": "mohr"}, headers=headers)
        assert found_ids(response) == set(ids.values()), role
        assert client.get(f"/fhir/Patient/{ids['z']}", headers=headers).status_code == 200


def test_clinician_match_returns_only_visible_patients(client: TestClient, token: Token) -> None:
    ids = romorantin_and_tours(client, token)
    headers = token("clinician", org=ROMORANTIN)
    query = {
        "name": "resource",
        "resource": {
            "resourceType": "Patient",
            "name": [{"family": "MOHR", "given": ["Alice"]}],
            "birthDate": "1960-02-02",
        },
    }
    assert found_ids(match(client, query, headers=headers)) == set()
    assert found_ids(match(client, query)) == {ids["z"]}


def test_clinician_pix_for_a_patient_unknown_at_the_site_is_404(
    client: TestClient, token: Token
) -> None:
    romorantin_and_tours(client, token)
    headers = token("clinician", org=ROMORANTIN)
    hidden = client.get(
        "/fhir/Patient/$ihe-pix", params={"sourceIdentifier": f"{ipp(TOURS)}|z"}, headers=headers
    )
    assert hidden.status_code == 404
    known = client.get(
        "/fhir/Patient/$ihe-pix", params={"sourceIdentifier": f"{ipp(TOURS)}|y"}, headers=headers
    )
    assert known.status_code == 200


# -- audit -----------------------------------------------------------------------------------------


def operation_events(client: TestClient, token: Token, patient_id: str) -> list[dict[str, Any]]:
    """The AuditEvents of operations about a patient, as the privacy officer finds them."""
    response = client.get(
        "/fhir/AuditEvent",
        params={"patient": f"Patient/{patient_id}", "_count": "200"},
        headers=token("dpo"),
    )
    assert response.status_code == 200, response.text
    events = [e["resource"] for e in response.json().get("entry", [])]
    return [e for e in events if any(s.get("code") == "operation" for s in e.get("subtype", []))]


def actor(event: dict[str, Any]) -> tuple[str, str]:
    """(subject, name) of the requesting person."""
    [agent] = [a for a in event["agent"] if a.get("requestor")]
    return agent["who"]["identifier"]["value"], agent["name"]


def queries(event: dict[str, Any]) -> list[str]:
    return [base64.b64decode(e["query"]).decode("utf-8") for e in event["entity"] if "query" in e]


def patients_named(event: dict[str, Any]) -> set[str]:
    return {
        e["what"]["reference"].removeprefix("Patient/")
        for e in event.get("entity", [])
        if e.get("what", {}).get("reference", "").startswith("Patient/")
        and "/_history" not in e["what"]["reference"]
    }


def test_link_and_unlink_are_audited_with_the_operator(client: TestClient, token: Token) -> None:
    a = put(client, token, ROMORANTIN, patient(ROMORANTIN, "x"))
    b = put(client, token, TOURS, patient(TOURS, "y"))
    officer = token("identity-officer", sub="io-42", name="Irène Officer")
    assert link(client, a, b, headers=officer).status_code == 200
    first = {pid: len(operation_events(client, token, pid)) for pid in (a, b)}
    assert all(first.values()), first
    assert unlink(client, a, b, headers=officer).status_code == 200
    for pid in (a, b):
        events = operation_events(client, token, pid)
        assert len(events) > first[pid], "the unlink left no audit record"
        assert all(e["outcome"] == "0" for e in events)
        assert {actor(e) for e in events} == {("io-42", "Irène Officer")}
        assert all({a, b} <= patients_named(e) for e in events)


def test_refused_link_is_audited_too(client: TestClient, token: Token) -> None:
    a = put(client, token, ROMORANTIN, patient(ROMORANTIN, "x", ins=INS, status="QUAL"))
    b = put(client, token, TOURS, patient(TOURS, "y", ins="1" + INS[1:], status="QUAL"))
    officer = token("identity-officer", sub="io-42", name="Irène Officer")
    assert link(client, a, b, headers=officer).status_code == 409
    refused = [e for e in operation_events(client, token, a) if e["outcome"] != "0"]
    assert refused
    assert actor(refused[0]) == ("io-42", "Irène Officer")


def test_pix_is_audited_with_the_query(client: TestClient, token: Token) -> None:
    ids = romorantin_and_tours(client, token)
    radiologist = token("radiologist", sub="rad-1", name="Dr Radiologue", org=ROMORANTIN)
    source = f"{ipp(ROMORANTIN)}|x"
    response = client.get(
        "/fhir/Patient/$ihe-pix", params={"sourceIdentifier": source}, headers=radiologist
    )
    assert response.status_code == 200, response.text
    events = operation_events(client, token, ids["y"])
    assert events
    assert {actor(e) for e in events} == {("rad-1", "Dr Radiologue")}
    all_queries = [q for e in operation_events(client, token, ids["x"]) for q in queries(e)]
    assert any(q.startswith("$ihe-pix") and source in q for q in all_queries), all_queries


def test_match_is_audited_for_each_patient_returned(client: TestClient, token: Token) -> None:
    ids = candidates(client, token)
    officer = token("identity-officer", sub="io-42", name="Irène Officer")
    assert match(client, wanted(), headers=officer).status_code == 200
    for name in ("self", "homonym", "typo", "swapped"):
        events = operation_events(client, token, ids[name])
        assert events, name
        assert {actor(e) for e in events} == {("io-42", "Irène Officer")}, name
        assert any("$match" in queries(e) for e in events), name
    assert operation_events(client, token, ids["other"]) == []
