"""Builds the demo transaction Bundle: idempotent conditional updates, so loading twice is safe."""

from __future__ import annotations

import base64
import hashlib
import json
from importlib import resources
from typing import Any

from app.fhir.naming import IDENTITY_RELIABILITY_URL, INS_DEMO, ipp_system
from app.sites.registry import (
    Site,
    SiteEndpoint,
    endpoint_full_url,
    organization_full_url,
    site_bundle,
)

# (site_id, IPP, family, given, gender, birth date). Mme MARTIN's three records carry no INS:
# they stay apart, as suspected duplicates for identity vigilance.
PATIENTS = (
    ("423", "R-100234", "MARTIN", "Éléonore", "female", "1958-03-14"),
    ("401", "T-884120", "MARTIN", "Eléonore", "female", "1958-03-14"),
    ("213", "O-552031", "MARTIN", "Eleonore", "female", "1958-03-14"),
    ("423", "R-100877", "DURAND", "Jean-Pierre", "male", "1971-11-02"),
    ("401", "T-901554", "PETIT", "Louise", "female", "2012-06-06"),
    ("423", "R-300117", "LEFÈVRE", "Claire", "female", "1949-09-21"),
    ("401", "T-551902", "LEFEVRE", "Claire", "female", "1949-09-21"),
)
# Mme LEFÈVRE's records at Romorantin and Tours carry the same qualified INS (demo OID): one
# person, so Romorantin sees her Tours exams.
QUALIFIED_INS = {"R-300117": "249092154123456", "T-551902": "249092154123456"}
# (patient index, site_id, accession, date, modality, description, with report)
STUDIES = (
    (0, "423", "ACC423-1001", "2024-02-12T09:30:00+01:00", "CT", "Scanner thoraco-abdominal", True),
    (1, "401", "ACC401-2001", "2022-10-19T14:05:00+02:00", "MR", "IRM cérébrale", True),
    (1, "401", "ACC401-2002", "2019-05-09T10:00:00+02:00", "CR", "Poumons (Rx)", False),
    (2, "213", "ACC213-3001", "2018-03-18T08:45:00+01:00", "US", "Echographie abdominale", True),
    (
        3,
        "423",
        "ACC423-1002",
        "2023-06-07T11:15:00+02:00",
        "RF",
        "Transit oeso-gastro-duodénal",
        False,
    ),
    (4, "401", "ACC401-2003", "2022-12-05T16:40:00+01:00", "DX", "Age osseux (Rx)", True),
    (5, "423", "ACC423-1003", "2025-01-20T10:10:00+01:00", "MG", "Mammographie de dépistage", True),
    (6, "401", "ACC401-2004", "2021-04-02T15:30:00+02:00", "CT", "Scanner du genou", True),
)


def demo_sites() -> list[Site]:
    """The MIRC site table (app/demo/sites.json) as registry sites, each with one made-up PACS
    endpoint whose AE title is the site's emitter code (the table's "emitter (PACS AE title)")."""
    text = resources.files("app.demo").joinpath("sites.json").read_text("utf-8")
    rows: list[dict[str, str]] = json.loads(text)["sites"]
    return [
        Site(
            id=row["site_id"],
            name=row["name"],
            emitter=row["emitter"],
            endpoints=(
                SiteEndpoint(
                    address=f"https://pacs-{_host(row['emitter'])}.example/dicom-web",
                    name=f"PACS {row['name']}",
                    ae_title=row["emitter"],
                ),
            ),
        )
        for row in rows
    ]


def _host(emitter: str) -> str:
    """A DNS label made from an emitter code (CH_GIEN -> ch-gien)."""
    return emitter.lower().replace("_", "-")


def _put(resource: dict[str, Any], criteria: str, full_url: str) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}?{criteria}"},
    }


def _identity_status(code: str) -> dict[str, Any]:
    """The FR Core identity-reliability extension with this identity status."""
    return {
        "url": IDENTITY_RELIABILITY_URL,
        "extension": [
            {
                "url": "identityStatus",
                "valueCoding": {
                    "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445",
                    "code": code,
                },
            }
        ],
    }


def demo_bundle() -> dict[str, Any]:
    """A transaction Bundle with every demo resource: the sites (see app.sites.registry), then
    patients, studies and reports referring to them."""
    entries: list[dict[str, Any]] = site_bundle(demo_sites())["entry"]
    for i, (sid, ipp, family, given, gender, birth) in enumerate(PATIENTS):
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"system": ipp_system(sid), "value": ipp}],
            "name": [{"family": family, "given": [given]}],
            "gender": gender,
            "birthDate": birth,
            "managingOrganization": {"reference": organization_full_url(sid)},
        }
        if ipp in QUALIFIED_INS:
            patient["identifier"].append({"system": INS_DEMO, "value": QUALIFIED_INS[ipp]})
            patient["extension"] = [_identity_status("QUAL")]
        entries.append(
            _put(patient, f"identifier={ipp_system(sid)}|{ipp}", f"urn:uuid:patient-{i}")
        )
    for pi, sid, accession, started, modality, description, report in STUDIES:
        uid = "1.2.250.1.999.1." + "".join(c for c in accession if c.isdigit())
        entries.append(
            _put(
                {
                    "resourceType": "ImagingStudy",
                    "identifier": [
                        {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
                        {
                            "type": {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                        "code": "ACSN",
                                    }
                                ]
                            },
                            "system": ipp_system(sid).replace("/ipp/", "/accession/"),
                            "value": accession,
                        },
                    ],
                    "status": "available",
                    "modality": [
                        {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality}
                    ],
                    "subject": {"reference": f"urn:uuid:patient-{pi}"},
                    "started": started,
                    "description": description,
                    "numberOfSeries": 2,
                    "numberOfInstances": 48,
                    "endpoint": [{"reference": endpoint_full_url(sid)}],
                },
                f"identifier=urn:dicom:uid|urn:oid:{uid}",
                f"urn:uuid:study-{accession}",
            )
        )
        if report:
            text = f"Compte rendu {description} ({accession}) : examen sans particularité.\n"
            data = text.encode("utf-8")
            entries.append(
                _put(
                    {
                        "resourceType": "DocumentReference",
                        "masterIdentifier": {
                            "system": "urn:ietf:rfc:3986",
                            "value": f"urn:oid:{uid}.9",
                        },
                        "status": "current",
                        "type": {
                            "coding": [
                                {
                                    "system": "http://loinc.org",
                                    "code": "18748-4",
                                    "display": "Diagnostic imaging study",
                                }
                            ]
                        },
                        "subject": {"reference": f"urn:uuid:patient-{pi}"},
                        "date": started,
                        "author": [{"reference": organization_full_url(sid)}],
                        "content": [
                            {
                                "attachment": {
                                    "contentType": "text/plain",
                                    "language": "fr",
                                    "data": base64.b64encode(data).decode("ascii"),
                                    "size": len(data),
                                    "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),
                                    "title": f"Compte rendu {accession}",
                                }
                            }
                        ],
                        "context": {"related": [{"reference": f"urn:uuid:study-{accession}"}]},
                    },
                    f"identifier=urn:ietf:rfc:3986|urn:oid:{uid}.9",
                    f"urn:uuid:report-{accession}",
                )
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
