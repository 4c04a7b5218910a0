"""The priors list: `GET /fhir/Patient/{id}/$priors` gives one person's studies from every site
(records linked by a trusted INS), most recent first, with the producing site and report flag,
and never a superseded report; `ImagingStudy/{id}/$kos` gives a study as a DICOM KOS."""

from __future__ import annotations

import io
from typing import Any

import pydicom
from fastapi.testclient import TestClient

from tests.conftest import Token
from tests.mhd.support import (
    MADO_PATIENT,
    STUDY_101,
    binary,
    kos_bundle,
    provide,
    provide_bundle,
    put_mado_patient,
    text_document,
)

INS = "urn:oid:1.2.250.1.213.1.4.8"
RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
SITE_ID = "https://fhir.rix.example/sid/site-id"
HAS_REPORT = "https://fhir.rix.example/StructureDefinition/has-report"
PRODUCING_SITE = "https://fhir.rix.example/StructureDefinition/producing-site"
SITES = {"423": "CH Romorantin", "401": "CHRU Tours", "213": "CHR Orléans"}


def _ok(response: Any, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json())


def _person(client: TestClient, token: Token) -> dict[str, str]:
    """One person with a record at each of three sites (same qualified INS); site -> id."""
    for site, name in SITES.items():
        _ok(
            client.put(
                f"/fhir/Organization?identifier={SITE_ID}|{site}",
                json={
                    "resourceType": "Organization",
                    "identifier": [{"system": SITE_ID, "value": site}],
                    "name": name,
                },
            ),
            status=201,
        )
    ids = {}
    for site in SITES:
        ids[site] = _ok(
            client.post(
                "/fhir/Patient",
                json={
                    "resourceType": "Patient",
                    "identifier": [
                        {"system": f"https://fhir.rix.example/sid/ipp/{site}", "value": f"P{site}"},
                        {"system": INS, "value": "272017512345678"},
                    ],
                    "name": [{"family": "Marchand", "given": ["Odile"]}],
                    "birthDate": "1972-01-30",
                    "extension": [
                        {
                            "url": RELIABILITY,
                            "extension": [
                                {"url": "identityStatus", "valueCoding": {"code": "QUAL"}}
                            ],
                        }
                    ],
                },
                headers=token("site-system", org=site),
            )
        )["id"]
    return ids


def _study(
    client: TestClient, token: Token, site: str, patient: str, started: str, modality: str
) -> str:
    body = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": f"Patient/{patient}"},
        "started": started,
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality}],
        "numberOfSeries": 2,
        "numberOfInstances": 40,
    }
    return str(
        _ok(client.post("/fhir/ImagingStudy", json=body, headers=token("site-system", org=site)))[
            "id"
        ]
    )


def _report(
    client: TestClient, token: Token, site: str, patient: str, study: str, status: str = "current"
) -> str:
    body = {
        "resourceType": "DocumentReference",
        "status": status,
        "subject": {"reference": f"Patient/{patient}"},
        "content": [{"attachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK"}}],
        "context": {"related": [{"reference": f"ImagingStudy/{study}"}]},
    }
    return str(
        _ok(
            client.post(
                "/fhir/DocumentReference", json=body, headers=token("site-system", org=site)
            )
        )["id"]
    )


def _matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def _ext(resource: dict[str, Any], url: str) -> Any:
    return next(
        (
            v
            for e in resource.get("extension", [])
            if e["url"] == url
            for k, v in e.items()
            if k.startswith("value")
        ),
        None,
    )


def test_one_list_across_three_sites_most_recent_first(client: TestClient, token: Token) -> None:
    ids = _person(client, token)
    ct = _study(client, token, "423", ids["423"], "2024-05-01T10:00:00Z", "CT")
    mr = _study(client, token, "401", ids["401"], "2022-03-01T10:00:00Z", "MR")
    us = _study(client, token, "213", ids["213"], "2023-07-01T10:00:00Z", "US")
    _report(client, token, "401", ids["401"], mr)
    _report(client, token, "213", ids["213"], us, status="superseded")
    bundle = _ok(client.get(f"/fhir/Patient/{ids['423']}/$priors"), status=200)
    studies = _matches(bundle)
    assert [s["id"] for s in studies] == [ct, us, mr]
    assert [_ext(s, HAS_REPORT) for s in studies] == [False, False, True]
    sites = [_ext(s, PRODUCING_SITE)["display"] for s in studies]
    assert sites == ["CH Romorantin", "CHR Orléans", "CHRU Tours"]
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert all(r.get("status") != "superseded" for r in included)
    assert {r["name"] for r in included if r["resourceType"] == "Organization"} == set(
        SITES.values()
    )


def test_filters_paging_and_identifier_form(client: TestClient, token: Token) -> None:
    ids = _person(client, token)
    _study(client, token, "423", ids["423"], "2024-05-01T10:00:00Z", "CT")
    mr = _study(client, token, "401", ids["401"], "2022-03-01T10:00:00Z", "MR")
    _study(client, token, "213", ids["213"], "2019-07-01T10:00:00Z", "CT")
    by_modality = _ok(
        client.get(f"/fhir/Patient/{ids['401']}/$priors", params={"modality": "MR"}), status=200
    )
    assert [s["id"] for s in _matches(by_modality)] == [mr]
    window = {"since": "2020-01-01", "until": "2023-12-31"}
    assert [
        s["id"]
        for s in _matches(
            _ok(client.get(f"/fhir/Patient/{ids['423']}/$priors", params=window), status=200)
        )
    ] == [mr]
    page = _ok(
        client.get(f"/fhir/Patient/{ids['423']}/$priors", params={"_count": "2"}), status=200
    )
    assert len(_matches(page)) == 2 and any(link["relation"] == "next" for link in page["link"])
    by_id = _ok(
        client.get(
            "/fhir/Patient/$priors",
            params={"identifier": "https://fhir.rix.example/sid/ipp/213|P213"},
        ),
        status=200,
    )
    assert len(_matches(by_id)) == 3


def test_errors(client: TestClient) -> None:
    assert client.get("/fhir/Patient/nobody/$priors").status_code == 404
    assert (
        client.get("/fhir/Patient/$priors", params={"identifier": "urn:x|nobody"}).status_code
        == 404
    )
    assert client.get("/fhir/Patient/$priors").status_code == 400
    assert client.get("/fhir/Patient/x/$priors", params={"sort": "x"}).status_code == 400


def test_privacy_patient_sees_own_priors_an_unrelated_clinician_nothing(
    client: TestClient, token: Token
) -> None:
    ids = _person(client, token)
    _study(client, token, "401", ids["401"], "2022-03-01T10:00:00Z", "MR")
    own = _ok(
        client.get(
            f"/fhir/Patient/{ids['423']}/$priors", headers=token("patient", patient=ids["423"])
        ),
        status=200,
    )
    assert len(_matches(own)) == 1
    stranger = client.get(
        f"/fhir/Patient/{ids['423']}/$priors", headers=token("clinician", org="999")
    )
    assert stranger.status_code == 404
    other_patient = client.get(
        f"/fhir/Patient/{ids['423']}/$priors", headers=token("patient", patient="someone-else")
    )
    assert other_patient.status_code == 404


def test_kos_of_a_study_is_a_key_object_selection_document(
    client: TestClient, token: Token
) -> None:
    ids = _person(client, token)
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [
            {"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.2.1125.77.1"}
        ],
        "subject": {"reference": f"Patient/{ids['423']}"},
        "started": "2024-05-01T10:00:00+02:00",
        "series": [
            {
                "uid": "1.2.826.0.1.3680043.2.1125.77.1.1",
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "CT",
                },
                "instance": [
                    {
                        "uid": "1.2.826.0.1.3680043.2.1125.77.1.1.1",
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                        },
                    }
                ],
            }
        ],
    }
    sid = _ok(
        client.post("/fhir/ImagingStudy", json=study, headers=token("site-system", org="423"))
    )["id"]
    response = client.get(f"/fhir/ImagingStudy/{sid}/$kos")
    assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
    kos = pydicom.dcmread(io.BytesIO(response.content))
    assert kos.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert kos.StudyInstanceUID == "1.2.826.0.1.3680043.2.1125.77.1"
    assert kos.PatientID == "P423"
    assert client.get("/fhir/ImagingStudy/nope/$kos").status_code == 404


def test_priors_bring_reports_not_imaging_manifests(client: TestClient) -> None:
    """A study registered by its KOS manifest (ITI-65): `$priors` includes its report but not
    the manifest's DocumentReference (the study's endpoint and `$kos` lead to the images);
    the plain search with `_revinclude` brings both, as asked."""
    put_mado_patient(client)
    assert provide(client, kos_bundle(STUDY_101)).status_code == 200
    study_id = _matches(client.get("/fhir/ImagingStudy").json())[0]["id"]
    report = text_document(context={"related": [{"reference": f"ImagingStudy/{study_id}"}]})
    assert provide(client, provide_bundle([(report, binary(b"CR"))])).status_code == 200

    def included(bundle: dict[str, Any]) -> list[str]:
        return sorted(
            e["resource"]["content"][0]["attachment"]["contentType"]
            for e in bundle["entry"]
            if e["search"]["mode"] == "include"
            and e["resource"]["resourceType"] == "DocumentReference"
        )

    priors = _ok(client.get(f"/fhir/Patient/{MADO_PATIENT}/$priors"), status=200)
    assert [s["id"] for s in _matches(priors)] == [study_id]
    assert _ext(_matches(priors)[0], HAS_REPORT) is True
    assert included(priors) == ["text/plain"]
    search = client.get(
        "/fhir/ImagingStudy",
        params={"patient": f"Patient/{MADO_PATIENT}", "_revinclude": "DocumentReference:related"},
    ).json()
    assert included(search) == ["application/dicom", "text/plain"]
