"""Builders and small HTTP helpers shared by the identity tests (Patients of the regional
sites, identity-vigilance operations, Tasks, consolidated priors). The URIs are spelled out
here, not imported from the application, so that the tests check the published contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response

Token = Callable[..., dict[str, str]]

IPP_PREFIX = "https://fhir.rix.example/sid/ipp/"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_TEST = "urn:oid:1.2.250.1.213.1.4.10"
INS_DEMO = "urn:oid:1.2.250.1.213.1.4.11"
RELIABILITY_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
IDENTITY_STATUS_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status"
TASK_SYSTEM = "https://fhir.rix.example/CodeSystem/identity-task"
SUSPECTED_DUPLICATE = f"{TASK_SYSTEM}|suspected-duplicate"
PAIR_SYSTEM = f"{TASK_SYSTEM}/pair"
FLAG_SYSTEM = "https://fhir.rix.example/CodeSystem/identity-flag"
MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"

ROMORANTIN, TOURS, BLOIS = "423", "401", "411"


def ipp(site: str) -> str:
    """The patient-identifier namespace (IPP) of a site."""
    return f"{IPP_PREFIX}{site}"


def reliability(status: str) -> dict[str, Any]:
    """The FR Core identity-reliability extension carrying an identity status."""
    return {
        "url": RELIABILITY_URL,
        "extension": [
            {
                "url": "identityStatus",
                "valueCoding": {"system": IDENTITY_STATUS_SYSTEM, "code": status},
            }
        ],
    }


def patient(
    site: str,
    value: str,
    family: str = "DUPONT",
    given: str | list[str] = "Jean",
    birth: str | None = "1970-03-04",
    *,
    ins: str | None = None,
    status: str | None = None,
    ins_system: str = INS_TEST,
    **extra: Any,
) -> dict[str, Any]:
    """A Patient as a site's identity source sends it: its IPP, a name, a birth date, and
    optionally an INS with its identity status. `given` as a string holds space-separated
    given names; as a list, the given names exactly."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": ipp(site), "value": value}],
        "name": [{"family": family, "given": given.split() if isinstance(given, str) else given}],
    }
    if birth:
        resource["birthDate"] = birth
    if ins:
        resource["identifier"].append({"system": ins_system, "value": ins})
    if status:
        resource["extension"] = [reliability(status)]
    resource.update(extra)
    return resource


def feed(
    client: TestClient,
    token: Token,
    site: str,
    resource: dict[str, Any],
    *,
    as_admin: bool = False,
) -> dict[str, Any]:
    """ITI-104: the site's system creates or updates the Patient, conditional on its IPP
    (`as_admin`: the same feed by an administrator, one token fewer to mint)."""
    own = next(i for i in resource["identifier"] if i["system"] == ipp(site))
    response = client.put(
        "/fhir/Patient",
        params={"identifier": f"{own['system']}|{own['value']}"},
        json=resource,
        headers=token("admin") if as_admin else token("site-system", org=site),
    )
    assert response.status_code in (200, 201), response.text
    created: dict[str, Any] = response.json()
    return created


def feed_id(
    client: TestClient, token: Token, site: str, resource: dict[str, Any], **kw: Any
) -> str:
    """`feed`, returning the Patient's logical id."""
    return str(feed(client, token, site, resource, **kw)["id"])


def parameters(*params: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(params)}


def decision(other: str, reason: str | None = "same person, checked ID card") -> dict[str, Any]:
    """The Parameters body of $link / $unlink."""
    params: list[dict[str, Any]] = [
        {"name": "other", "valueReference": {"reference": f"Patient/{other}"}}
    ]
    if reason is not None:
        params.append({"name": "reason", "valueString": reason})
    return parameters(*params)


def link(
    client: TestClient, a: str, b: str, headers: dict[str, str] | None = None, **kw: Any
) -> Response:
    return client.post(f"/fhir/Patient/{a}/$link", json=decision(b, **kw), headers=headers)


def unlink(
    client: TestClient, a: str, b: str, headers: dict[str, str] | None = None, **kw: Any
) -> Response:
    return client.post(f"/fhir/Patient/{a}/$unlink", json=decision(b, **kw), headers=headers)


def read(client: TestClient, patient_id: str, headers: dict[str, str] | None = None) -> Any:
    response = client.get(f"/fhir/Patient/{patient_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def seealso(resource: dict[str, Any]) -> set[str]:
    """The logical ids a Patient lists as other records of the same person."""
    return {
        link["other"]["reference"].removeprefix("Patient/")
        for link in resource.get("link", [])
        if link.get("type") == "seealso"
    }


def linked(client: TestClient, patient_id: str) -> set[str]:
    """The other records of the person, as a read of the Patient shows them."""
    return seealso(read(client, patient_id))


def is_homonym(resource: dict[str, Any]) -> bool:
    tags = resource.get("meta", {}).get("tag", [])
    return any(t.get("system") == FLAG_SYSTEM and t.get("code") == "homonym" for t in tags)


def tasks(client: TestClient, status: str | None = None) -> list[dict[str, Any]]:
    """The suspected-duplicate Tasks (optionally of one status)."""
    params = {"code": SUSPECTED_DUPLICATE, "_count": "100"}
    if status:
        params["status"] = status
    response = client.get("/fhir/Task", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def pair_of(task: dict[str, Any]) -> set[str]:
    """The two Patient ids a suspected-duplicate Task is about."""
    value = next(i["value"] for i in task["identifier"] if i["system"] == PAIR_SYSTEM)
    return set(value.split("~"))


def study(client: TestClient, token: Token, site: str, patient_id: str, uid: str) -> str:
    """An ImagingStudy a site registers for one of its patients; returns its id."""
    response = client.post(
        "/fhir/ImagingStudy",
        json={
            "resourceType": "ImagingStudy",
            "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
            "subject": {"reference": f"Patient/{patient_id}"},
        },
        headers=token("site-system", org=site),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def document(client: TestClient, token: Token, site: str, patient_id: str) -> str:
    """A DocumentReference (a report) a site registers for one of its patients."""
    response = client.post(
        "/fhir/DocumentReference",
        json={
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": f"Patient/{patient_id}"},
            "content": [
                {"attachment": {"contentType": "application/pdf", "url": "https://x/r.pdf"}}
            ],
        },
        headers=token("site-system", org=site),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def found_ids(response: Response) -> set[str]:
    """The logical ids of a searchset's matches."""
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])}
