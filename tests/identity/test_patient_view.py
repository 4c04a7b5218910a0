"""A patient's own data is that of every record of their person: studies held at another site
under a linked record, and the audit of accesses to them ("who looked at my exams")."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Token

INS = "urn:oid:1.2.250.1.213.1.4.8"
RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"


def _patient(site: str, ipp: str, ins: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": f"https://fhir.rix.example/sid/ipp/{site}", "value": ipp}],
        "name": [{"family": "Lenoir", "given": ["Agathe"]}],
        "birthDate": "1980-07-14",
    }
    if ins:
        resource["identifier"].append({"system": INS, "value": ins})
        resource["extension"] = [
            {
                "url": RELIABILITY,
                "extension": [{"url": "identityStatus", "valueCoding": {"code": "VALI"}}],
            }
        ]
    return resource


def _study(client: TestClient, token: Token, site: str, patient_id: str) -> str:
    response = client.post(
        "/fhir/ImagingStudy",
        json={
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": f"Patient/{patient_id}"},
        },
        headers=token("site-system", org=site),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _setup(client: TestClient, token: Token, ins_b: str | None) -> tuple[str, str, str]:
    ids = []
    for site, ipp, ins in (("423", "a1", "180077512345678"), ("401", "b1", ins_b)):
        response = client.post(
            "/fhir/Patient", json=_patient(site, ipp, ins), headers=token("site-system", org=site)
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids[0], ids[1], _study(client, token, "401", ids[1])


def test_a_patient_sees_the_studies_of_their_linked_record(
    client: TestClient, token: Token
) -> None:
    a, _b, study = _setup(client, token, "180077512345678")
    mine = token("patient", patient=a)
    bundle = client.get("/fhir/ImagingStudy", params={"patient": f"Patient/{a}"}, headers=mine)
    assert [e["resource"]["id"] for e in bundle.json()["entry"]] == [study]
    assert client.get(f"/fhir/ImagingStudy/{study}", headers=mine).status_code == 200


def test_an_unlinked_record_stays_someone_else_s(client: TestClient, token: Token) -> None:
    a, _b, study = _setup(client, token, None)
    mine = token("patient", patient=a)
    bundle = client.get("/fhir/ImagingStudy", headers=mine).json()
    assert bundle.get("entry", []) == []
    assert client.get(f"/fhir/ImagingStudy/{study}", headers=mine).status_code == 404


def test_a_link_written_back_by_a_client_does_not_outlive_an_unlink(
    client: TestClient, token: Token
) -> None:
    """A site reads its Patient (with the computed `seealso` to the other site's record) and
    writes it back unchanged; after an operator unlinks the two, the stored copy of that link
    must not show them as one person any more."""
    a, b, _study = _setup(client, token, "180077512345678")
    site = token("site-system", org="423")
    shown = client.get(f"/fhir/Patient/{a}", headers=site).json()
    assert {"other": {"reference": f"Patient/{b}"}, "type": "seealso"} in shown["link"]
    assert client.put(f"/fhir/Patient/{a}", json=shown, headers=site).status_code == 200
    decision = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "other", "valueReference": {"reference": f"Patient/{b}"}},
            {"name": "reason", "valueString": "INS attributed to the wrong person"},
        ],
    }
    response = client.post(
        f"/fhir/Patient/{a}/$unlink", json=decision, headers=token("identity-officer")
    )
    assert response.status_code == 200, response.text
    assert "link" not in client.get(f"/fhir/Patient/{a}", headers=site).json()
