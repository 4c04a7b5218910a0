"""Priors benchmark (``GET /fhir/Patient/{id}/$priors``) on PostgreSQL at scale.

Target (issue): ``$priors`` for a patient with 50 studies across 3 sites, database of 1M studies
on PostgreSQL: p95 <= 50 ms.

Target (issue 6): ``$priors`` and the ImagingStudy search with consent enforcement on vs off
(10 Consents per patient, 1M studies, PostgreSQL): overhead <= 10% (``--consents-per-patient
10 --enforcement both``).

What it does, in order (database handling, loader processes, server and statistics are those of
``bench/identity.py``, imported from it):

1. creates a throwaway PostgreSQL database ``rix_bench_priors_<size>_<hex>`` on 127.0.0.1:5432
   (user postgres) and runs the migrations; or, with ``--reuse-db NAME``, uses a database kept
   by an earlier run (``--keep-db NAME``) and skips the load;
2. loads, deterministically from ``--seed``:

   - the 20 sites ``site-01`` .. ``site-20`` through ``app.sites.registry.apply_sites`` (what
     ``rix sites import`` writes): one Organization each (site id, patient-identifier namespace
     ``https://fhir.rix.example/sid/ipp/site-NN``, which ``$priors`` maps to the producing site)
     and one PACS Endpoint each; then RIX's own DICOMweb Endpoint (``ENDPOINT_ID_SYSTEM|
     rix-dicomweb``), created by the code that creates it when the first KOS manifest arrives
     (``app.services.documents.Documents.rix_endpoint``);
   - ``--patients`` Patient records (default ``--studies`` / 4): the population of
     ``bench/identity.py`` (French names, birth dates, one of the 20 sites with its IPP, ~30%
     with an INS; ~10% of the persons have a second record at another site with the same trusted
     INS), plus the ``--targets`` target persons (default 20), each with one record at each of 3
     different sites (``--target-sites``) carrying the same INS, identity status VALI;
   - ``--studies`` ImagingStudies (the targets' included): each target person has
     ``--target-studies`` (default 50) spread over its records (17/17/16) and over the whole
     load (a target's studies are created in different transactions, as they would arrive over
     the years); every other record has at least one study, the rest are spread over the
     records with log-normal weights (a few patients have many). A study is what
     ``app.imaging.study.imaging_study`` builds from a KOS manifest: identifiers Study Instance
     UID (``urn:dicom:uid``, ``urn:oid:2.25...``) and accession number (ACSN, the site's
     accession system), status available, subject, ``started`` (2000-01-01..2026-06-30, local
     time with its +01:00/+02:00 offset), modality, description, referrer, 1-12 series with
     modality, description and realistic instance counts (``numberOfInstances``; only the first
     ``--listed-instances`` instances of a series are listed, default 5, so that a study stays
     ~4 kB on average), numberOfSeries / numberOfInstances, ``endpoint`` -> RIX's Endpoint;
   - a report for ``--report-share`` of the studies (default 0.7): a DocumentReference (status
     current, LOINC 18748-4, subject, date, author = the site's Organization, a PDF attachment by
     URL, ``context.related`` = the ImagingStudy reference and the accession number, as
     ``app.services.documents`` links a study and its documents);
   - optionally (``--manifest-share``, default 0) the study's XDS-I.b imaging manifest: a
     DocumentReference of a DICOM KOS (application/dicom, format 1.2.840.10008.5.1.4.1.1.88.59),
     linked to its study like a report. The plain search includes it (``_revinclude``);
     ``$priors`` leaves it out (it brings reports). In production every study registered
     through MHD has one: run with ``--manifest-share 1`` to see their cost;
   - ``--consents-per-patient N`` (default 0) RIX Consents (profiles/README.md; each declares
     its kind profile, carries a registry decision identifier, scope patient-privacy, LOINC
     59284-0 + consent-kind categories, ``dateTime`` 2018-2025, performer the patient,
     organization the record's site, ``policyRule`` OPTOUT) for EVERY Patient record, the
     targets' included, written right after the record in its transaction. Slot by slot (N < 10
     takes the first N; beyond 10, more slots like 1-6):

     ====  =======================================================================================
     0     active exam opposition of ONE exam: for a target's record, the record's first study
           (so exactly one covered study per target record, 3 per target person); otherwise an
           exam not in RIX. Emergency permit (ETREAT + BTG) on even record numbers.
     1-6   active exam oppositions of exams NOT in RIX (registries send oppositions for exams not
           registered yet): one exam each, two for slots 2 and 5; emergency permit on odd slots
     7     withdrawn (``inactive``) exam opposition: a target record's second study (which must
           stay visible), otherwise an exam not in RIX
     8     withdrawn (``inactive``) opposition (all exams)
     9     active external-diffusion permit (share code) of one exam by Study UID, valid 30, 90
           or 365 days: a target record's third study, otherwise an exam not in RIX
     ====  =======================================================================================

     Exams are named in turn (record number + slot) by literal reference ``ImagingStudy/<id>``
     (the targets' studies get fixed ids for it), by Study Instance UID (``urn:dicom:uid``), or
     by accession number (ACSN + the site's accession issuer); an exam not in RIX has a random
     id and UID and a 12-character accession (loaded ones have 10). So with N = 10 a person
     holds 7 active denies per record (21 for a target's three records) that every one of its
     studies and documents is checked against, and only the first study of each record is
     covered. Withdrawals are stored as their ``inactive`` version directly (the earlier active
     version is not written first).

   Everything is written by ``Repository(session, registry).create`` in ``--procs`` processes
   (``Runtime.build(settings)`` sessions), ``--batch`` Patient records (with their studies and
   documents) per transaction. Identity as ``bench/identity.py --identity bulk``: the
   ``identity_record`` rows computed by ``app.identity.traits.traits_of`` and COPYed in the same
   transaction; after the load, its INS-link SQL, then each linked person's ``person_id`` set
   to the smallest record id of the person (set-based: persons of three records included), then
   its homonym SQL. Then ``ANALYZE``;
3. starts one ``rix serve`` (RIX_ENV=test, audit on as by default) and times sequential requests
   (one client, keep-alive) after ``--warmup`` requests of each kind, kinds interleaved, each
   target person and each of its records in turn:

   a. ``priors``: ``GET /fhir/Patient/<record>/$priors?_count=<target studies>`` (the default
      page is 20 studies, ``default_page_size``: ``_count`` asks for all of them on one page);
   b. ``search``: the plain-FHIR equivalent ``GET /fhir/ImagingStudy?patient=Patient/<record>&
      _sort=-started&_revinclude=DocumentReference:related&_count=<target studies>``;

   each as ``admin`` and as a ``radiologist`` of the queried record's site (``--roles``: the
   policy lets a clinical role see a person known at its organisation, through the identity
   links: all 3 records' studies; his site produced only a third of them). Every answer is
   checked against the database: all the person's studies (every record, the 3 sites), in the
   server's order (``started`` descending, then creation order), the included
   DocumentReferences exactly the studies' reports (and manifests); for ``$priors`` also the
   has-report flag of each study, its producing site (the Organization of its record's site),
   the site Organizations and RIX's Endpoint included. With consent enforcement on, less the
   studies an active deny of the person covers (read from the stored Consents by this script,
   independently of ``app.policy.consent``) and their documents, unless the caller is of the
   study's producing site: admin (no site) misses all 3 covered studies of a target, the
   radiologist the 2 of the other sites' records; a ``Bundle.total``, when given, counts only
   what is shown (hidden = missing). With enforcement off nothing is missing. p50/p95/p99 per
   kind and role, response size, load average.

   ``--enforcement on|off|both`` (default on): the server's ``RIX_CONSENT_ENFORCEMENT``. With
   ``both``, two servers on the same database, one of each; every request goes to both, one
   right after the other, the first alternating, so that machine drift and other work hit both
   sides alike; the overhead (on / off - 1) of p50, p95, p99 and mean per kind and role.
   ``--profile DIR`` records each server with py-spy during the measurement (raw stacks);
4. with the server stopped (``--sql-queries``, 0: skip): the same two operations in process
   (``Runtime.resources`` as admin, then the Bundle rendered and serialised as the route does),
   every SQL statement they send recorded with its duration, and ``EXPLAIN (ANALYZE, BUFFERS)``
   of each SELECT; for each enforcement side measured;
5. writes a JSON summary ``bench/out/priors_<studies>_<stamp>.json`` and drops the database
   unless ``--keep-db`` or ``--reuse-db``.

Examples::

    python bench/priors.py --studies 100000
    python bench/priors.py --studies 1000000 --keep-db rix_bench_priors_1m
    python bench/priors.py --reuse-db rix_bench_priors_1m --queries 1000 --roles admin
    python bench/priors.py --drop rix_bench_priors_1m
    # consent enforcement overhead (issue 6): load once, then measure on vs off, several times
    python bench/priors.py --studies 1000000 --consents-per-patient 10 --manifest-share 0 \
        --keep-db rix_bench_consent_1m --load-only
    python bench/priors.py --reuse-db rix_bench_consent_1m --enforcement both --queries 300
    python bench/priors.py --studies 20000 --consents-per-patient 10 --enforcement both
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, event

# bench/ must not come first on sys.path (bench/fhir_core.py would shadow the `fhir_core`
# package): the project root instead, and the sibling scripts as the `bench` namespace package.
ROOT = Path(__file__).resolve().parents[1]
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bench import identity as idb  # noqa: E402
from bench.fhir_core import PROCEDURES  # noqa: E402

FHIR_JSON = idb.FHIR_JSON
DCM = "http://dicom.nema.org/resources/ontology/DCM"
LOINC = "http://loinc.org"
RFC3986 = "urn:ietf:rfc:3986"
DICOM_UID = "urn:dicom:uid"
ACCESSION_PREFIX = "https://fhir.rix.example/sid/accession/"
KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
HAS_REPORT_URL = "https://fhir.rix.example/StructureDefinition/has-report"
SITE_URL = "https://fhir.rix.example/StructureDefinition/producing-site"
STARTED_FIRST = datetime(2000, 1, 1)
STARTED_SECONDS = int((datetime(2026, 7, 1) - STARTED_FIRST).total_seconds())
TARGET_NUMBER = 99_000_000  # targets' person numbers (their INS), beyond the population's
TARGETS_MS = {"priors_admin": 50.0, "priors_radiologist": 50.0}
CONSENT_KIND = "https://fhir.rix.example/CodeSystem/consent-kind"
CONSENT_PROFILE = "https://fhir.rix.example/StructureDefinition/rix-consent-"
DECISION_SYSTEM = "https://registre-imagerie.example/decision"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
# The Consents of one Patient record, slot by slot (--consents-per-patient N takes the first N;
# beyond 10, more active exam oppositions of exams not in RIX): see the module docstring.
CONSENT_SLOTS = (
    "covered",
    "absent",
    "absent",
    "absent",
    "absent",
    "absent",
    "absent",
    "withdrawn-exam",
    "withdrawn-all",
    "diffusion",
)
NAMINGS = ("reference", "uid", "accession")
OVERHEAD_TARGET = 0.10  # consent enforcement on vs off: at most +10%
KINDS = ("priors", "search")
ROLES = ("admin", "radiologist")

# -- content -------------------------------------------------------------------------------------


def site_label(n: int) -> tuple[str, str]:
    """(site id, name) of site n (0-based): `site-01`, "CH de Lyon"..."""
    return idb.site_name(n), f"CH de {idb.CITIES[(n * 3) % len(idb.CITIES)][0]}"


def _started(rng: random.Random) -> str:
    """A study date and time, local (Europe/Paris offset, roughly), 07:00-20:00."""
    day = STARTED_FIRST + timedelta(seconds=rng.randrange(STARTED_SECONDS))
    moment = day.replace(hour=rng.randrange(7, 20))
    offset = "+02:00" if 4 <= moment.month <= 10 else "+01:00"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + offset


def make_study(
    rng: random.Random, cfg: dict[str, Any], site: str, patient_id: str, accession: str
) -> dict[str, Any]:
    """An ImagingStudy as `imaging_study` builds it from a KOS manifest."""
    modality, description, _body, n_series, n_instances = rng.choice(PROCEDURES)
    uid = f"2.25.{rng.getrandbits(122)}"
    sop = {"system": RFC3986, "code": f"urn:oid:{SOP_CLASS[modality]}"}
    series = []
    for i in range(rng.randint(*n_series)):
        count = rng.randint(*n_instances)
        series_uid = f"{uid}.{i + 1}"
        series.append(
            {
                "uid": series_uid,
                "number": i + 1,
                "modality": {"system": DCM, "code": modality},
                "description": f"{description.split()[0]} SERIES {i + 1}",
                "numberOfInstances": count,
                "instance": [
                    {"uid": f"{series_uid}.{j + 1}", "sopClass": sop, "number": j + 1}
                    for j in range(min(count, cfg["listed"]))
                ],
            }
        )
    kind = rng.choice(("female", "male"))
    referrer = f"Dr {rng.choice(idb.GIVEN_NAMES[kind])} {rng.choice(idb.FAMILY_NAMES).upper()}"
    return {
        "resourceType": "ImagingStudy",
        "identifier": [
            {"use": "official", "system": DICOM_UID, "value": f"urn:oid:{uid}"},
            {
                "use": "usual",
                "type": {"coding": [{"system": idb.V2_0203, "code": "ACSN"}]},
                "system": ACCESSION_PREFIX + site,
                "value": accession,
            },
        ],
        "status": "available",
        "subject": {"reference": f"Patient/{patient_id}"},
        "modality": [{"system": DCM, "code": modality}],
        "started": _started(rng),
        "referrer": {"display": referrer},
        "endpoint": [{"reference": f"Endpoint/{cfg['endpoint']}"}],
        "numberOfSeries": len(series),
        "numberOfInstances": sum(s["numberOfInstances"] for s in series),
        "description": description,
        "series": series,
    }


def make_document(
    rng: random.Random, cfg: dict[str, Any], site: str, study_id: str, study: dict[str, Any]
) -> dict[str, Any]:
    """The report (a PDF by URL) of a stored study."""
    uid = study["identifier"][0]["value"]
    accession = study["identifier"][1]
    written = datetime.fromisoformat(study["started"]) + timedelta(minutes=rng.randrange(30, 4320))
    related = [
        {"reference": f"ImagingStudy/{study_id}"},
        {
            "type": "ServiceRequest",
            "identifier": {k: accession[k] for k in ("type", "system", "value")},
        },
    ]
    return {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": RFC3986, "value": f"{uid}.9"},
        "status": "current",
        "docStatus": "final",
        "type": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]
        },
        "subject": study["subject"],
        "date": written.isoformat(),
        "author": [{"reference": f"Organization/{cfg['orgs'][site]}"}],
        "description": f"Compte rendu {study['description']}",
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "language": "fr",
                    "url": f"https://pacs.{site}.example/reports/{accession['value']}.pdf",
                    "size": rng.randrange(40_000, 400_000),
                    "title": f"Compte rendu {accession['value']}",
                }
            }
        ],
        "context": {"related": related},
    }


def make_manifest(
    cfg: dict[str, Any], site: str, study_id: str, study: dict[str, Any]
) -> dict[str, Any]:
    """The study's XDS-I.b imaging manifest (a DICOM KOS), linked as documents.py links it."""
    uid = study["identifier"][0]["value"]
    accession = study["identifier"][1]
    return {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": RFC3986, "value": f"{uid}.8"},
        "status": "current",
        "type": {
            "coding": [
                {"system": LOINC, "code": "55113-5", "display": "Key images Document Radiology"}
            ]
        },
        "subject": study["subject"],
        "date": study["started"],
        "author": [{"reference": f"Organization/{cfg['orgs'][site]}"}],
        "content": [
            {
                "attachment": {
                    "contentType": "application/dicom",
                    "url": f"https://pacs.{site}.example/kos/{accession['value']}.dcm",
                },
                "format": {"system": "1.2.840.10008.2.6.1", "code": KOS_SOP_CLASS},
            }
        ],
        "context": {
            "related": [
                {"reference": f"ImagingStudy/{study_id}"},
                {"type": "ImagingStudy", "identifier": {"system": DICOM_UID, "value": uid}},
                {
                    "type": "ServiceRequest",
                    "identifier": {k: accession[k] for k in ("type", "system", "value")},
                },
            ]
        },
    }


_KIND_DISPLAY = {
    "opposition": "Opposition to regional sharing",
    "exam-opposition": "Opposition to sharing of chosen exams",
    "external-diffusion": "Consent to external diffusion",
}


def _exam_reference(naming: str, exam: dict[str, str]) -> dict[str, Any]:
    """`provision.data.reference` naming an exam (RIX Consent profiles, "Naming an exam"):
    literal `ImagingStudy/<id>`, Study Instance UID, or accession number with its issuer."""
    if naming == "reference":
        return {"reference": f"ImagingStudy/{exam['id']}"}
    if naming == "uid":
        return {
            "type": "ImagingStudy",
            "identifier": {"system": DICOM_UID, "value": f"urn:oid:{exam['uid']}"},
        }
    return {
        "type": "ImagingStudy",
        "identifier": {
            "type": {"coding": [{"system": idb.V2_0203, "code": "ACSN"}]},
            "system": exam["accession_system"],
            "value": exam["accession"],
        },
    }


def absent_exam(rng: random.Random, site: str) -> dict[str, str]:
    """An exam that is not in RIX (not registered yet): its id, Study UID and accession number
    cannot be those of a loaded study (12-character accessions; loaded ones have 10)."""
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "uid": f"2.25.{rng.getrandbits(122)}",
        "accession": f"8{rng.randrange(10**11):011d}",
        "accession_system": ACCESSION_PREFIX + site,
    }


def make_consent(
    rng: random.Random,
    cfg: dict[str, Any],
    site: str,
    patient_id: str,
    kind: str,
    *,
    active: bool = True,
    exams: list[tuple[str, dict[str, str]]] | None = None,
    emergency: bool = False,
) -> dict[str, Any]:
    """A RIX Consent (profiles/README.md) of one Patient record, as a registry sends it: the
    kind profile, the registry's decision identifier, scope, LOINC + kind categories,
    `dateTime`, performer (the patient), the recording site, `policyRule` OPTOUT, and the
    provision: `deny` (with `data` for an exam opposition, the emergency permit when asked) or
    the external-diffusion `permit` with its validity period."""
    taken = datetime(2018, 1, 1) + timedelta(seconds=rng.randrange(8 * 365 * 86400))
    offset = "+02:00" if 4 <= taken.month <= 10 else "+01:00"
    provision: dict[str, Any] = {"type": "permit" if kind == "external-diffusion" else "deny"}
    if exams:
        provision["data"] = [
            {"meaning": "dependents", "reference": _exam_reference(naming, exam)}
            for naming, exam in exams
        ]
    if kind == "external-diffusion":
        start = taken.date()
        provision["period"] = {
            "start": start.isoformat(),
            "end": (start + timedelta(days=rng.choice((30, 90, 365)))).isoformat(),
        }
    elif emergency:
        provision["provision"] = [
            {
                "type": "permit",
                "purpose": [
                    {"system": ACT_REASON, "code": "ETREAT", "display": "Emergency Treatment"},
                    {"system": ACT_REASON, "code": "BTG", "display": "break the glass"},
                ],
            }
        ]
    return {
        "resourceType": "Consent",
        "meta": {"profile": [CONSENT_PROFILE + kind]},
        "identifier": [
            {"system": DECISION_SYSTEM, "value": f"D-{taken.year}-{rng.getrandbits(40):010x}"}
        ],
        "status": "active" if active else "inactive",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                    "display": "Privacy Consent",
                }
            ]
        },
        "category": [
            {"coding": [{"system": LOINC, "code": "59284-0"}]},
            {"coding": [{"system": CONSENT_KIND, "code": kind, "display": _KIND_DISPLAY[kind]}]},
        ],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": taken.strftime("%Y-%m-%dT%H:%M:%S") + offset,
        "performer": [{"reference": f"Patient/{patient_id}"}],
        "organization": [{"reference": f"Organization/{cfg['orgs'][site]}"}],
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}
            ]
        },
        "provision": provision,
    }


def record_consents(
    rng: random.Random,
    cfg: dict[str, Any],
    site: str,
    patient_id: str,
    n: int,
    number: int,
    real: list[dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """The `n` Consents of a Patient record (record `number`: it rotates the ways exams are
    named). `real`: for a target's record, its exams in RIX (the first is covered by the active
    exam opposition of slot 0, the second named by the withdrawn one, the third by the
    external-diffusion permit); otherwise every exam named is absent from RIX."""
    real = real or []
    out = []
    for i in range(n):
        slot = CONSENT_SLOTS[i] if i < len(CONSENT_SLOTS) else "absent"
        naming = NAMINGS[(number + i) % len(NAMINGS)]
        if slot == "covered":
            exam = real[0] if real else absent_exam(rng, site)
            out.append(
                make_consent(
                    rng, cfg, site, patient_id, "exam-opposition", exams=[(naming, exam)],
                    emergency=number % 2 == 0,
                )
            )  # fmt: skip
        elif slot == "absent":
            # one exam, or two named two ways (a registry's form may list several exams)
            exams = [(naming, absent_exam(rng, site))]
            if i % 3 == 2:
                exams.append((NAMINGS[(number + i + 1) % 3], absent_exam(rng, site)))
            out.append(
                make_consent(
                    rng, cfg, site, patient_id, "exam-opposition", exams=exams,
                    emergency=i % 2 == 1,
                )
            )  # fmt: skip
        elif slot == "withdrawn-exam":
            exam = real[1] if len(real) > 1 else absent_exam(rng, site)
            out.append(
                make_consent(
                    rng, cfg, site, patient_id, "exam-opposition", active=False,
                    exams=[(naming, exam)],
                )
            )  # fmt: skip
        elif slot == "withdrawn-all":
            out.append(make_consent(rng, cfg, site, patient_id, "opposition", active=False))
        else:
            exam = real[2] if len(real) > 2 else absent_exam(rng, site)
            out.append(
                make_consent(
                    rng, cfg, site, patient_id, "external-diffusion", exams=[("uid", exam)]
                )
            )
    return out


def target_study(
    seed: int, cfg: dict[str, Any], tp: dict[str, Any], t: int, s: int
) -> dict[str, Any]:
    """Target `t`'s study `s`: its record k, site, fixed id (so that a Consent can name it by
    literal reference before it is stored), rng, accession and Study UID."""
    k = s % cfg["target_sites"]
    site = idb.site_name(tp["sites"][k])
    accession = f"9{t:04d}{s:05d}"
    sid = str(
        uuid.UUID(
            int=random.Random(f"priors-target-study-id-{seed}-{t}-{s}").getrandbits(128), version=4
        )
    )
    probe = make_study(
        random.Random(f"priors-target-study-{seed}-{t}-{s}"), cfg, site, tp["ids"][k], accession
    )
    return {
        "k": k,
        "site": site,
        "id": sid,
        "uid": probe["identifier"][0]["value"].removeprefix("urn:oid:"),
        "accession": accession,
        "accession_system": ACCESSION_PREFIX + site,
        "rng": random.Random(f"priors-target-study-{seed}-{t}-{s}"),
    }


def target_person(seed: int, t: int, n_sites: int) -> dict[str, Any]:
    """Target person `t`: a person of the population with a trusted (VALI) INS, its sites and
    the logical ids of its records (fixed, so that any transaction may refer to them)."""
    rng = random.Random(f"priors-target-{seed}-{t}")
    person = idb._person(rng, TARGET_NUMBER + t)
    sex = "2" if person["gender"] == "female" else "1"
    birth = date.fromisoformat(person["birth"])
    body = f"{sex}{birth.year % 100:02d}{birth.month:02d}{TARGET_NUMBER + t:08d}"
    person.update(ins=body + idb._nir_key(body), status="VALI", second=False)
    sites = rng.sample(range(idb.SITES), n_sites)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in sites]
    return {"person": person, "sites": sites, "ids": ids}


def study_counts(seed: int, records: int, studies: int) -> list[int]:
    """Studies of each population record: one each, the rest by log-normal weights."""
    rng = random.Random(f"priors-counts-{seed}")
    counts = [1] * records
    weights = [rng.lognormvariate(0, 1.0) for _ in range(records)]
    for i in rng.choices(range(records), weights=weights, k=studies - records):
        counts[i] += 1
    return counts


def plan(args: argparse.Namespace) -> list[tuple[Any, ...]]:
    """The load's transactions: (chunk, records, their study counts, target records (t, k),
    target studies (t, s)); targets' records and studies spread evenly over the chunks."""
    others = args.patients - args.targets * args.target_sites
    sizes = idb.chunk_sizes(others, args.batch)
    counts = study_counts(args.seed, others, args.studies - args.targets * args.target_studies)
    n = len(sizes)
    records: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    studies: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    total_r = args.targets * args.target_sites
    total_s = args.targets * args.target_studies
    for t in range(args.targets):
        for k in range(args.target_sites):
            i = t * args.target_sites + k
            records[(i * n) // total_r].append((t, k))
        for s in range(args.target_studies):
            i = t * args.target_studies + s
            studies[((i * 7919) % total_s * n) // total_s].append((t, s))
    return [
        (c, size, counts[c * args.batch : c * args.batch + size], records[c], studies[c])
        for c, size in enumerate(sizes)
    ]


# -- load ----------------------------------------------------------------------------------------


def _site_of(resource: dict[str, Any]) -> str:
    return next(
        i["system"][len(idb.IPP_PREFIX) :]
        for i in resource["identifier"]
        if i["system"].startswith(idb.IPP_PREFIX)
    )


def _load_chunk(job: tuple[Any, ...]) -> tuple[int, int, float, float]:
    """Store one chunk in one transaction: (studies, resources, s generating, s storing)."""
    from app.fhir.models import validate
    from app.identity.traits import traits_of
    from app.storage.db import transaction
    from app.storage.repository import Repository

    chunk, size, counts, target_records, target_studies, cfg = job
    gen = 0.0
    t0 = time.perf_counter()
    seed = cfg["seed"]
    population = idb.chunk_records(seed, chunk, cfg["batch"])[:size]
    targets: dict[int, dict[str, Any]] = {}

    def target(t: int) -> dict[str, Any]:
        if t not in targets:
            targets[t] = target_person(seed, t, cfg["target_sites"])
        return targets[t]

    # (resource, fixed id, record number, target (t, k))
    patients: list[tuple[dict[str, Any], str | None, int, tuple[int, int] | None]] = [
        (r, None, chunk * cfg["batch"] + j, None) for j, r in enumerate(population)
    ]
    for t, k in target_records:
        tp = target(t)
        record = cfg["others"] + t * cfg["target_sites"] + k
        rng = random.Random(f"priors-target-record-{seed}-{t}-{k}")
        resource = idb._patient(rng, tp["person"], tp["sites"][k], record)
        patients.append((resource, tp["ids"][k], record, (t, k)))
    rng = random.Random(seed * 1_000_033 + chunk)
    crng = random.Random(f"priors-consents-{seed}-{chunk}")  # apart: the studies stay the same
    n_consents = cfg["consents"]
    gen += time.perf_counter() - t0
    rt = idb._LOADER["rt"]
    written = 0
    with transaction(rt.sessions, write=True) as session:
        repo = Repository(session, rt.registry)
        traits = []
        # (site, patient id, rng of the study, accession, fixed id)
        work: list[tuple[str, str, random.Random, str, str | None]] = []
        counts_ = [*counts, *[0] * len(target_records)]
        for (resource, rid, number, tk), n in zip(patients, counts_, strict=True):
            stored = repo.create(resource, rid)
            traits.append(traits_of(stored.id, resource))
            site = _site_of(resource)
            work += [(site, stored.id, rng, "", None)] * n
            if n_consents:
                t1 = time.perf_counter()
                real = []
                if tk is not None:  # a target's record: its first three studies are named
                    t, k = tk
                    ts = cfg["target_sites"]
                    real = [
                        target_study(seed, cfg, target(t), t, s)
                        for s in (k, k + ts, k + 2 * ts)
                        if s < cfg["target_studies"]
                    ]
                consents = record_consents(crng, cfg, site, stored.id, n_consents, number, real)
                gen += time.perf_counter() - t1
                for c in consents:
                    if number == chunk * cfg["batch"]:
                        validate(c, "Consent")
                    repo.create(c)
                    written += 1
        rng.shuffle(work)
        for t, s in target_studies:
            ts_ = target_study(seed, cfg, target(t), t, s)
            item = (
                ts_["site"],
                target(t)["ids"][ts_["k"]],
                ts_["rng"],
                ts_["accession"],
                ts_["id"],
            )
            work.insert(rng.randrange(len(work) + 1), item)
        for i, (site, patient_id, srng, accession, sid) in enumerate(work):
            t1 = time.perf_counter()
            study = make_study(srng, cfg, site, patient_id, accession or f"{chunk:05d}{i:05d}")
            report = srng.random() < cfg["report_share"]
            manifest = srng.random() < cfg["manifest_share"]
            gen += time.perf_counter() - t1
            if i == 0:
                validate(study, "ImagingStudy")
            stored = repo.create(study, sid)
            written += 1
            docs = []
            if manifest:
                docs.append(make_manifest(cfg, site, stored.id, study))
            if report:
                docs.append(make_document(srng, cfg, site, stored.id, study))
            for doc in docs:
                if i < 2:
                    validate(doc, "DocumentReference")
                repo.create(doc)
                written += 1
        raw: Any = session.connection().connection.dbapi_connection
        columns = ", ".join(idb._RECORD_COLUMNS)
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY identity_record ({columns}) FROM STDIN") as cp,
        ):
            for t in traits:
                person, systems = t.patient_id, " ".join(sorted(t.systems))
                ins = (t.ins, t.ins_trusted)
                cp.write_row(
                    (t.patient_id, person, t.birth_date, t.names_key, *ins, systems, False)
                )
    store = time.perf_counter() - t0 - gen
    return len(work), written + len(patients), gen, store


# Persons of more than two records (the targets): person_id is the smallest record id of the
# person, i.e. of the records sharing a trusted INS (what Vigilance leaves). Runs between
# bench/identity.py's link SQL and its homonym SQL, in place of its pairwise person SQL.
PERSON_SQL = """
    UPDATE identity_record r SET person_id = m.person
    FROM (SELECT ins, min(patient_id) AS person FROM identity_record
          WHERE ins_trusted GROUP BY ins HAVING count(*) > 1) m
    WHERE r.ins_trusted AND r.ins = m.ins AND r.person_id <> m.person
    """


def setup_directory(url: str, data_dir: Path) -> dict[str, Any]:
    """The 20 sites (site registry import) and RIX's DICOMweb Endpoint."""
    from app.services.documents import Documents
    from app.services.runtime import Runtime
    from app.sites.registry import Site, SiteEndpoint, apply_sites

    rt = Runtime.build(idb.settings_for(url, data_dir))  # also creates the data dir's keys
    sites = []
    for n in range(idb.SITES):
        sid, name = site_label(n)
        endpoint = SiteEndpoint(
            address=f"https://pacs.{sid}.example/dicom-web", name=f"PACS {name}"
        )
        sites.append(Site(id=sid, name=name, endpoints=(endpoint,)))
    summary = apply_sites(rt, sites)
    with rt.resources("http://localhost:8080/fhir", write=True) as svc:
        endpoint_id = Documents(svc).rix_endpoint()
    rt.engine.dispose()
    return {"sites": str(summary), "endpoint": endpoint_id}


def directory(url: str) -> dict[str, Any]:
    """Site id -> Organization id, namespace -> (org id, site id, name), RIX's Endpoint id."""
    from app.fhir.naming import ENDPOINT_ID_SYSTEM, NAMESPACE_SYSTEM, SITE_ID_SYSTEM

    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT resource_type, resource_id, content FROM resource "
            "WHERE resource_type IN ('Organization', 'Endpoint') AND NOT deleted"
        ).all()
    engine.dispose()
    out: dict[str, Any] = {"orgs": {}, "namespaces": {}, "endpoint": None}
    for type_, rid, content in rows:
        resource = json.loads(content)
        idents = {i["system"]: i["value"] for i in resource.get("identifier", [])}
        if type_ == "Endpoint" and idents.get(ENDPOINT_ID_SYSTEM) == "rix-dicomweb":
            out["endpoint"] = rid
        elif type_ == "Organization" and SITE_ID_SYSTEM in idents:
            site = idents[SITE_ID_SYSTEM]
            out["orgs"][site] = rid
            namespace = idents.get(NAMESPACE_SYSTEM) or idb.IPP_PREFIX + site
            out["namespaces"][namespace] = (rid, site, resource.get("name", ""))
    return out


def load(url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Load sites, patients, studies, documents; the identity SQL; ANALYZE."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"directory": setup_directory(url, data_dir)}
    found = directory(url)
    jobs = plan(args)
    cfg = {
        "seed": args.seed,
        "batch": args.batch,
        "others": args.patients - args.targets * args.target_sites,
        "target_sites": args.target_sites,
        "report_share": args.report_share,
        "manifest_share": args.manifest_share,
        "listed": args.listed_instances,
        "orgs": found["orgs"],
        "endpoint": found["endpoint"],
        "consents": args.consents_per_patient,
        "target_studies": args.target_studies,
    }
    print(
        f"load: {args.patients:,} Patients, {args.studies:,} ImagingStudies ({args.targets} "
        f"target persons x {args.target_studies} studies at {args.target_sites} sites), "
        f"{args.consents_per_patient} Consents per Patient in "
        f"{len(jobs)} transactions, {args.procs} processes (plan {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    done = resources = 0
    gen_s = store_s = 0.0
    ctx = multiprocessing.get_context("spawn")
    last_n, start = 0, time.perf_counter()
    last_t = start
    with ctx.Pool(
        args.procs, initializer=idb._loader_init, initargs=(url, str(data_dir), "bulk")
    ) as pool:
        for n, r, g, s in pool.imap_unordered(_load_chunk, [(*j, cfg) for j in jobs]):
            done, resources, gen_s, store_s = done + n, resources + r, gen_s + g, store_s + s
            now = time.perf_counter()
            if now - last_t >= args.progress or done == args.studies:
                print(
                    f"  {done:>10,} studies {resources:>10,} resources  "
                    f"{resources / (now - start):7.0f} resources/s overall  "
                    f"{(done - last_n) / (now - last_t):7.0f} studies/s last {now - last_t:.0f} s"
                    f"  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                last_t, last_n = now, done
    seconds = time.perf_counter() - start
    out.update(
        studies=done,
        resources=resources,
        procs=args.procs,
        batch=args.batch,
        seconds=round(seconds, 1),
        resources_per_s=round(resources / seconds, 1),
        generate_cpu_s=round(gen_s, 1),
        store_s=round(store_s, 1),
        loadavg_end=os.getloadavg(),
    )
    print(f"loaded {resources:,} resources in {seconds:.0f} s: {resources / seconds:.0f}/s")
    engine = create_engine(url)
    t0 = time.perf_counter()
    link_sql, _pairwise_person_sql, homonym_sql = idb.IDENTITY_SQL
    with engine.begin() as conn:
        for sql in (link_sql, PERSON_SQL, homonym_sql):
            conn.exec_driver_sql(sql)
    out["identity_sql_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
    out["analyze_s"] = round(time.perf_counter() - t0, 1)
    print(f"identity SQL {out['identity_sql_s']} s, ANALYZE {out['analyze_s']} s", flush=True)
    engine.dispose()
    return out


def describe(url: str) -> dict[str, Any]:
    """bench/identity.py's description, plus studies per record and resource sizes."""
    out = idb.describe(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        q = conn.exec_driver_sql
        per_record = [
            r[0]
            for r in q(
                "SELECT count(*) FROM sp_reference WHERE resource_type = 'ImagingStudy' "
                "AND param = 'patient' GROUP BY target_id ORDER BY 1"
            )
        ]
        total = sum(out["resources"].values())
        pct = min(100.0, 100.0 * 20_000 / max(total, 1))
        sizes = q(
            f"SELECT resource_type, count(*), avg(octet_length(content))::int FROM resource "
            f"TABLESAMPLE SYSTEM ({pct:.4f}) REPEATABLE (1) WHERE NOT deleted GROUP BY 1"
        ).all()
    engine.dispose()
    if per_record:
        out["studies_per_record"] = {
            "records": len(per_record),
            "p50": per_record[len(per_record) // 2],
            "p90": per_record[int(len(per_record) * 0.9)],
            "p99": per_record[int(len(per_record) * 0.99)],
            "max": per_record[-1],
        }
    out["content_bytes_mean"] = {t: {"sampled": n, "bytes": b} for t, n, b in sizes}
    return out


# -- what the answers must be ----------------------------------------------------------------


def _utc(started: str) -> datetime:
    return datetime.fromisoformat(started).astimezone(UTC)


def expected_targets(url: str) -> list[dict[str, Any]]:
    """The persons of three or more records (the targets) with what $priors must return:
    their studies in the server's order, reports, manifests, each study's site."""
    from app.services.documents import is_manifest

    found = directory(url)
    engine = create_engine(url)
    out = []
    with engine.connect() as conn:
        q = conn.exec_driver_sql
        persons = q(
            "SELECT person_id, array_agg(patient_id ORDER BY patient_id) FROM identity_record "
            "GROUP BY person_id HAVING count(*) >= 3 ORDER BY person_id"
        ).all()
        for person, members in persons:
            patients = q(
                "SELECT resource_id, content FROM resource WHERE resource_type = 'Patient' "
                "AND resource_id = ANY(%(ids)s)",
                {"ids": list(members)},
            ).all()
            site_of = {}
            for rid, content in patients:
                systems = [i["system"] for i in json.loads(content)["identifier"]]
                site_of[rid] = next(
                    found["namespaces"][s] for s in systems if s in found["namespaces"]
                )
            studies = q(
                "SELECT r.pk, r.resource_id, r.content FROM sp_reference x "
                "JOIN resource r ON r.pk = x.resource_pk WHERE x.resource_type = 'ImagingStudy' "
                "AND x.param = 'patient' AND x.target_type = 'Patient' "
                "AND x.target_id = ANY(%(ids)s) AND NOT r.deleted",
                {"ids": list(members)},
            ).all()
            order, subject_of = [], {}
            for pk, rid, content in studies:
                study = json.loads(content)
                order.append((-_utc(study["started"]).timestamp(), pk, rid))
                subject_of[rid] = study["subject"]["reference"].split("/", 1)[1]
            docs = q(
                "SELECT DISTINCT r.resource_id, r.content FROM sp_reference x "
                "JOIN resource r ON r.pk = x.resource_pk "
                "WHERE x.resource_type = 'DocumentReference' AND x.param = 'related' "
                "AND x.target_type = 'ImagingStudy' AND x.target_id = ANY(%(ids)s) "
                "AND NOT r.deleted",
                {"ids": list(subject_of)},
            ).all()
            reports, manifests, reported = set(), set(), set()
            study_of_doc: dict[str, str] = {}
            for rid, content in docs:
                doc = json.loads(content)
                if doc.get("status") in ("superseded", "entered-in-error"):
                    continue
                for related in doc["context"]["related"]:
                    if related.get("reference", "").startswith("ImagingStudy/"):
                        study_of_doc[rid] = related["reference"].split("/", 1)[1]
                if is_manifest(doc):
                    manifests.add(rid)
                    continue
                reports.add(rid)
                if rid in study_of_doc:
                    reported.add(study_of_doc[rid])
            consents = q(
                "SELECT r.content FROM sp_reference x JOIN resource r ON r.pk = x.resource_pk "
                "WHERE x.resource_type = 'Consent' AND x.param = 'patient' "
                "AND x.target_type = 'Patient' AND x.target_id = ANY(%(ids)s) AND NOT r.deleted",
                {"ids": list(members)},
            ).all()
            covered = covered_studies(
                [json.loads(c) for (c,) in consents],
                {rid: json.loads(content) for _pk, rid, content in studies},
            )
            out.append(
                {
                    "person": person,
                    "members": sorted(members),
                    "site_of": site_of,
                    "order": [rid for *_, rid in sorted(order)],
                    "subject_of": subject_of,
                    "reports": reports,
                    "manifests": manifests,
                    "reported": reported,
                    "endpoint": found["endpoint"],
                    "study_of_doc": study_of_doc,
                    "consents": len(consents),
                    "covered": covered,
                }
            )
    engine.dispose()
    return out


def _ext(resource: dict[str, Any], url: str) -> Any:
    return next(
        (
            v
            for e in resource.get("extension", [])
            if e.get("url") == url
            for k, v in e.items()
            if k.startswith("value")
        ),
        None,
    )


def covered_studies(consents: list[dict[str, Any]], studies: dict[str, dict[str, Any]]) -> set[str]:
    """The studies (ids) an active deny of these Consents covers, read here independently of
    `app.policy.consent`: an opposition covers them all; an exam opposition the studies it names
    by literal reference, Study Instance UID, or accession number (same issuer, or none given)."""
    refs: set[str] = set()
    uids: set[str] = set()
    accessions: set[tuple[str | None, str]] = set()
    everything = False
    for c in consents:
        if c.get("status") != "active" or c.get("provision", {}).get("type") != "deny":
            continue
        kinds = {
            coding.get("code")
            for category in c.get("category", [])
            for coding in category.get("coding", [])
            if coding.get("system") == CONSENT_KIND
        }
        everything = everything or kinds == {"opposition"}
        if kinds != {"exam-opposition"}:
            continue
        for data in c["provision"].get("data", []):
            ref = data.get("reference", {})
            ident = ref.get("identifier") or {}
            if "reference" in ref:
                refs.add(ref["reference"])
            elif ident.get("system") == DICOM_UID:
                uids.add(ident["value"])
            elif any(t.get("code") == "ACSN" for t in ident.get("type", {}).get("coding", [])):
                accessions.add((ident.get("system"), ident["value"]))
    out = set()
    for rid, study in studies.items():
        idents = study.get("identifier", [])
        named = (
            everything
            or f"ImagingStudy/{rid}" in refs
            or any(i.get("system") == DICOM_UID and i.get("value") in uids for i in idents)
            or any(
                (system, i.get("value")) in accessions
                for i in idents
                if any(t.get("code") == "ACSN" for t in i.get("type", {}).get("coding", []))
                for system in (i.get("system"), None)
            )
        )
        if named:
            out.add(rid)
    return out


def hidden_for(target: dict[str, Any], site: str | None, enforced: bool) -> frozenset[str]:
    """The studies a caller must not get: with enforcement, the covered ones whose record is
    not at the caller's site (`site` None: a caller of no site, such as admin, gets none)."""
    if not enforced:
        return frozenset()
    return frozenset(
        s for s in target["covered"] if target["site_of"][target["subject_of"][s]][1] != site
    )


def check(
    kind: str, target: dict[str, Any], body: dict[str, Any], hidden: frozenset[str] = frozenset()
) -> int:
    """Raise unless the Bundle is exactly the target's priors without the `hidden` studies
    (and their documents); the included count."""
    entries = body.get("entry", [])
    matches = [e["resource"] for e in entries if e["search"]["mode"] == "match"]
    included = [e["resource"] for e in entries if e["search"]["mode"] == "include"]
    ids = [m["id"] for m in matches]
    order = [s for s in target["order"] if s not in hidden]
    problems = []
    if ids != order:
        problems.append(
            f"studies {len(ids)} (want {len(order)}, {len(hidden)} hidden), same set "
            f"{set(ids) == set(order)}, same order {ids == order}, hidden ones present "
            f"{sorted(hidden & set(ids))}, missing {sorted(set(order) - set(ids))}"
        )
    # Hidden = missing: a total, when given, counts only what the caller sees (whether one is
    # given for a caller whose items are decided one by one is app.services.resources' rule)
    if body.get("total") not in (None, len(order)):
        problems.append(f"total {body.get('total')} (want {len(order)} or none)")
    if any(m["resourceType"] != "ImagingStudy" for m in matches):
        problems.append("a match is not an ImagingStudy")
    docs = {r["id"] for r in included if r["resourceType"] == "DocumentReference"}
    # $priors brings the reports only; the search brings the manifests too (as _revinclude asks).
    manifests = target["manifests"] if kind == "search" else set()
    want_docs = {
        d for d in target["reports"] | manifests if target["study_of_doc"].get(d) not in hidden
    }
    if docs != want_docs:
        problems.append(
            f"DocumentReferences {len(docs)} (want {len(want_docs)}: reports + "
            f"{len(manifests)} manifests, less those of hidden studies)"
        )
    subjects = {m["subject"]["reference"].split("/", 1)[1] for m in matches}
    if subjects != {target["subject_of"][s] for s in order}:
        problems.append(f"subjects {sorted(subjects)} (want {target['members']})")
    if kind == "priors":
        reported = target["reported"] - hidden
        flags = {m["id"] for m in matches if _ext(m, HAS_REPORT_URL) is True}
        if flags != reported or any(_ext(m, HAS_REPORT_URL) is None for m in matches):
            problems.append(f"has-report on {len(flags)} studies (want {len(reported)})")
        wrong_site = [
            m["id"]
            for m in matches
            if (_ext(m, SITE_URL) or {}).get("reference")
            != f"Organization/{target['site_of'][target['subject_of'][m['id']]][0]}"
        ]
        if wrong_site:
            problems.append(f"producing site wrong on {len(wrong_site)} studies")
        orgs = {r["id"] for r in included if r["resourceType"] == "Organization"}
        want_orgs = {target["site_of"][target["subject_of"][s]][0] for s in order}
        if orgs != want_orgs or len(orgs) < 3:
            problems.append(f"site Organizations {len(orgs)} (want {len(want_orgs)})")
        endpoints = {r["id"] for r in included if r["resourceType"] == "Endpoint"}
        if endpoints != {target["endpoint"]}:
            problems.append(f"Endpoints {sorted(endpoints)} (want {target['endpoint']})")
    elif len(docs) != len(included):
        problems.append("the search included something else than DocumentReferences")
    if problems:
        raise AssertionError(f"{kind} for person {target['person']}: " + "; ".join(problems))
    return len(included)


# -- measure ---------------------------------------------------------------------------------


def request_of(kind: str, record: str, count: int) -> tuple[str, list[tuple[str, str]]]:
    if kind == "priors":
        return f"/Patient/{record}/$priors", [("_count", str(count))]
    return "/ImagingStudy", [
        ("patient", f"Patient/{record}"),
        ("_sort", "-started"),
        ("_revinclude", "DocumentReference:related"),
        ("_count", str(count)),
    ]


def measure_api(
    bases: dict[str, str],
    tokens: dict[str, str],
    targets: list[dict[str, Any]],
    args: argparse.Namespace,
    kinds: tuple[str, ...],
    roles: tuple[str, ...],
) -> dict[str, Any]:
    """Sequential requests, kinds and roles interleaved, every answer checked. `bases`: one
    server per side (`on`, `off`: consent enforcement); with two, each request is sent to both,
    one after the other, the first side alternating, so that machine drift hits both alike."""
    sides = tuple(bases)
    keys = [f"{k}_{r}" for r in roles for k in kinds]
    samples: dict[str, dict[str, list[float]]] = {x: {k: [] for k in keys} for x in sides}
    sizes: dict[str, dict[str, list[int]]] = {x: {k: [] for k in keys} for x in sides}
    included: dict[str, dict[str, list[int]]] = {x: {k: [] for k in keys} for x in sides}
    hidden_n: dict[str, dict[str, list[int]]] = {x: {k: [] for k in keys} for x in sides}
    clients = {
        x: httpx.Client(base_url=b, timeout=60, headers={"Accept": FHIR_JSON})
        for x, b in bases.items()
    }
    try:
        for n in range(args.warmup + args.queries):
            target = targets[n % len(targets)]
            record = target["members"][(n // len(targets)) % len(target["members"])]
            count = max(args.target_studies, len(target["order"]))
            for role in roles:
                site = target["site_of"][record][1] if role == "radiologist" else None
                token = tokens[site if site else role]
                for kind in kinds:
                    path, params = request_of(kind, record, count)
                    order = sides if (n + keys.index(f"{kind}_{role}")) % 2 == 0 else sides[::-1]
                    for side in order:
                        t0 = time.perf_counter()
                        response = clients[side].get(
                            path,
                            params=tuple(params),
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        elapsed = time.perf_counter() - t0
                        if response.status_code != 200:
                            raise RuntimeError(
                                f"GET {path} {params} as {role} (enforcement {side}): "
                                f"{response.status_code} {response.text[:500]}"
                            )
                        hidden = hidden_for(target, site, side == "on")
                        try:
                            n_included = check(kind, target, response.json(), hidden)
                        except AssertionError as e:
                            raise AssertionError(f"{role}, enforcement {side}: {e}") from None
                        if n >= args.warmup:
                            key = f"{kind}_{role}"
                            samples[side][key].append(elapsed)
                            sizes[side][key].append(len(response.content))
                            included[side][key].append(n_included)
                            hidden_n[side][key].append(len(hidden))
    finally:
        for client in clients.values():
            client.close()
    out: dict[str, Any] = {}
    for side in sides:
        out[side] = {key: idb.percentiles(v) for key, v in samples[side].items()}
        for key in keys:
            out[side][key]["response_bytes_mean"] = round(statistics.fmean(sizes[side][key]))
            out[side][key]["included_mean"] = round(statistics.fmean(included[side][key]), 1)
            out[side][key]["hidden_studies_mean"] = round(statistics.fmean(hidden_n[side][key]), 2)
    if set(sides) == {"on", "off"}:
        out["overhead"] = {
            key: {
                q: round(out["on"][key][q] / out["off"][key][q] - 1, 3)
                for q in ("p50", "p95", "p99", "mean")
            }
            for key in keys
        }
    return out


def _label(statement: str) -> str:
    """A statement, shortened: its beginning and its WHERE clause."""
    text_ = " ".join(statement.split())
    where = text_.find(" WHERE ")
    if where < 0 or where < 60:
        return text_[:150]
    return f"{text_[:50]} ...{text_[where : where + 100]}"


def measure_inprocess(
    url: str,
    data_dir: Path,
    targets: list[dict[str, Any]],
    n: int,
    kinds: tuple[str, ...],
    *,
    enforced: bool = True,
) -> dict[str, Any]:
    """The operations without HTTP (admin): service time, rendering time, every SQL statement
    (duration per call), and EXPLAIN (ANALYZE, BUFFERS) of each SELECT; `enforced`: the
    settings' `consent_enforcement`."""
    from app.auth.tokens import default_scopes
    from app.fhir import jsonio
    from app.policy.principal import Principal
    from app.services import priors as priors_service
    from app.services import rendering
    from app.services.runtime import Runtime

    base = "http://localhost:8080/fhir"
    settings = idb.settings_for(url, data_dir)
    if hasattr(settings, "consent_enforcement"):
        settings = settings.model_copy(update={"consent_enforcement": enforced})
    rt = Runtime.build(settings)
    scopes = tuple(default_scopes("admin"))
    admin = Principal(subject="bench-admin", name="Benchmark admin", role="admin", scopes=scopes)
    log: list[tuple[str, Any, float]] = []
    started: dict[int, float] = {}

    @event.listens_for(rt.engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        started[id(cursor)] = time.perf_counter()

    @event.listens_for(rt.engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        log.append((statement, None if many else params, time.perf_counter() - started[id(cursor)]))

    out: dict[str, Any] = {}
    plans: dict[str, str] = {}
    for kind in kinds:
        service_s, render_s, sql_s = [], [], []
        per_statement: dict[str, list[float]] = {}
        warm = min(5, n)
        for i in range(warm + n):
            target = targets[i % len(targets)]
            record = target["members"][i % len(target["members"])]
            path, params = request_of(kind, record, len(target["order"]))
            del log[:]
            t0 = time.perf_counter()
            with rt.resources(base, principal=admin) as svc:
                if kind == "priors":
                    found = priors_service.priors(svc, record, params)
                    result, self_url = found.result, f"{base}/Patient/{record}/$priors"
                else:
                    result, self_url = svc.search("ImagingStudy", params), f"{base}{path}"
            t1 = time.perf_counter()
            jsonio.dumps(rendering.searchset(base, self_url, result))
            t2 = time.perf_counter()
            if i >= warm:
                service_s.append(t1 - t0)
                render_s.append(t2 - t1)
                sql_s.append(sum(seconds for *_, seconds in log))
                for pos, (statement, _params, seconds) in enumerate(log):
                    per_statement.setdefault(f"{kind}_{pos:02d} {_label(statement)}", []).append(
                        seconds
                    )
        out[kind] = {
            "service_ms": idb.percentiles(service_s),
            "sql_ms": idb.percentiles(sql_s),
            "render_ms": idb.percentiles(render_s),
            "statements_per_call": len(log),
            "statement_ms": {
                k: {"calls": round(len(v) / n, 1), "p50": round(statistics.median(v) * 1000, 3)}
                for k, v in per_statement.items()
            },
        }
        # EXPLAIN (ANALYZE, BUFFERS) of the last call's SELECTs, with their parameters
        with rt.engine.connect() as conn:
            for pos, (statement, params, _s) in enumerate(list(log)):
                if not statement.lstrip().upper().startswith("SELECT") or params is None:
                    continue
                rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
                plan_ = "\n".join(r[0] for r in rows)
                plans[f"{kind}_{pos:02d}"] = f"{statement}\n-- {repr(params)[:2000]}\n\n{plan_}"
                conn.rollback()
    event.remove(rt.engine, "before_cursor_execute", _before)
    event.remove(rt.engine, "after_cursor_execute", _after)
    rt.engine.dispose()
    out["plans"] = plans
    return out


# -- the run -------------------------------------------------------------------------------------


CODE_FILES = (
    "app/services/priors.py",
    "app/services/resources.py",
    "app/services/rendering.py",
    "app/storage/compiler.py",
    "app/storage/repository.py",
    "app/identity/vigilance.py",
    "app/policy/seam.py",
    "app/policy/consent.py",
    "app/services/facts.py",
)


def _fingerprint(path: Path) -> str:
    """What version of a file was measured (no VCS in the measurements): hash and mtime."""
    mtime = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
    return f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]} {mtime}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--studies", type=int, default=100_000, help="ImagingStudies to load")
    parser.add_argument("--patients", type=int, help="Patient records (default: studies / 4)")
    parser.add_argument("--targets", type=int, default=20, help="target persons")
    parser.add_argument("--target-studies", type=int, default=50, help="studies per target")
    parser.add_argument("--target-sites", type=int, default=3, help="records (sites) per target")
    parser.add_argument("--report-share", type=float, default=0.7, help="studies with a report")
    parser.add_argument(
        "--manifest-share", type=float, default=0.0, help="studies with a KOS manifest document"
    )
    parser.add_argument(
        "--listed-instances", type=int, default=5, help="instances listed per series (at most)"
    )
    parser.add_argument(
        "--consents-per-patient",
        type=int,
        default=0,
        help="Consents loaded with every Patient record (see the docstring for the mix)",
    )
    parser.add_argument(
        "--enforcement",
        choices=("on", "off", "both"),
        default="on",
        help="consent enforcement of the server (RIX_CONSENT_ENFORCEMENT); both: two servers, "
        "requests alternated between them, and the overhead on vs off",
    )
    parser.add_argument(
        "--load-only", action="store_true", help="load (with --keep-db), describe, stop"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy record each server during the API measurement (raw stacks into DIR)",
    )
    parser.add_argument("--queries", type=int, default=300, help="measured requests of each kind")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up requests of each kind")
    parser.add_argument("--kinds", default=",".join(KINDS), help="priors,search")
    parser.add_argument("--roles", default=",".join(ROLES), help="admin,radiologist")
    parser.add_argument(
        "--sql-queries", type=int, default=50, help="in-process calls of each kind (0: skip)"
    )
    parser.add_argument("--procs", type=int, default=2, help="loader processes")
    parser.add_argument("--batch", type=int, default=500, help="Patient records per transaction")
    parser.add_argument("--keep-db", metavar="NAME", help="load into database NAME and keep it")
    parser.add_argument("--reuse-db", metavar="NAME", help="measure a kept database, no load")
    parser.add_argument("--drop", metavar="NAME", help="drop a kept benchmark database and exit")
    parser.add_argument("--seed", type=int, default=20260301, help="what to generate")
    parser.add_argument("--progress", type=float, default=30, help="seconds between reports")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    roles = tuple(r for r in args.roles.split(",") if r)
    if set(kinds) - set(KINDS) or set(roles) - set(ROLES) or not kinds or not roles:
        parser.error(f"--kinds takes some of {', '.join(KINDS)}, --roles of {', '.join(ROLES)}")
    if args.load_only and not args.keep_db:
        parser.error("--load-only needs --keep-db")
    if args.drop:
        idb.drop_database(idb._db_name(args.drop))
        print(f"dropped {idb._db_name(args.drop)}")
        return 0
    if args.patients is None:
        args.patients = args.studies // 4
    others = args.patients - args.targets * args.target_sites
    if args.target_sites > idb.SITES or others < 1 or args.targets < 1:
        parser.error("need 1..20 target sites, at least one target and one other record")
    if args.studies - args.targets * args.target_studies < others:
        parser.error("too few studies: every record has at least one")

    idb.OUT.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "machine": idb.machine(),
        "code": {name: _fingerprint(idb.ROOT / name) for name in CODE_FILES},
        "args": vars(args),
    }
    if args.reuse_db:
        name = idb._db_name(args.reuse_db)
        url = idb.pg_url(name)
    else:
        n = args.studies
        tag = f"{n // 1000}k" if n < 1_000_000 else f"{n / 1e6:g}m".replace(".", "_")
        default = f"rix_bench_priors_{tag}_{uuid.uuid4().hex[:8]}"
        name = idb._db_name(args.keep_db) if args.keep_db else default
        url = idb.create_database(name)
    result["database"] = name
    print(f"database: {name}", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="rix-bench-priors-"))
    sides = ("on", "off") if args.enforcement == "both" else (args.enforcement,)
    servers = {
        side: idb.Server(
            url,
            data_dir,
            env={"RIX_CONSENT_ENFORCEMENT": "true" if side == "on" else "false"},
            log_name=f"server-{side}.log",
        )
        for side in sides
    }
    profilers: list[subprocess.Popen[bytes]] = []
    studies = args.studies
    try:
        from app.storage.migrations import upgrade

        upgrade(url)
        if args.reuse_db is None:
            result["load"] = load(url, data_dir, args)
        result["contents"] = describe(url)
        studies = result["contents"]["resources"].get("ImagingStudy", 0)
        print(f"contents: {json.dumps(result['contents'])}", flush=True)
        if args.load_only:
            return 0
        targets = expected_targets(url)
        if not targets:
            raise RuntimeError("no target person (a person with 3 records) in the database")
        result["targets"] = {
            "persons": len(targets),
            "studies": sorted({len(t["order"]) for t in targets}),
            "reports_mean": round(statistics.fmean(len(t["reports"]) for t in targets), 1),
            "manifests_mean": round(statistics.fmean(len(t["manifests"]) for t in targets), 1),
            "sites": sorted({len(set(t["site_of"].values())) for t in targets}),
            "consents": sorted({t["consents"] for t in targets}),
            "covered_studies": sorted({len(t["covered"]) for t in targets}),
        }
        print(f"targets: {json.dumps(result['targets'])}", flush=True)
        bases = {side: server.start() for side, server in servers.items()}
        print(f"rix serve (consent enforcement {bases})", flush=True)
        from app.auth.tokens import issue_dev_token

        settings = idb.settings_for(url, data_dir)
        day = 24 * 3600
        tokens = {
            "admin": issue_dev_token(
                settings, subject="bench-admin", name="Admin", role="admin", ttl=day
            )
        }
        for site in {s[1] for t in targets for s in t["site_of"].values()}:
            tokens[site] = issue_dev_token(
                settings,
                subject=f"bench-radiologist-{site}",
                name=f"Radiologist {site}",
                role="radiologist",
                organization_id=site,
                ttl=day,
            )
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            for side, server in servers.items():
                assert server.proc is not None
                out_file = args.profile / f"server-{side}.txt"
                profilers.append(
                    subprocess.Popen(
                        [str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                         str(server.proc.pid), "--subprocesses", "--format", "raw",
                         "--rate", "200", "--output", str(out_file)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )  # fmt: skip
            time.sleep(1)
        result["loadavg_measure_start"] = os.getloadavg()
        t0 = time.perf_counter()
        api = measure_api(bases, tokens, targets, args, kinds, roles)
        result["api_seconds"] = round(time.perf_counter() - t0, 1)
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        for server in servers.values():
            server.stop()
        result["loadavg_measure_end"] = os.getloadavg()
        result["api_ms"] = api
        for side in sides:
            for key, value in api[side].items():
                print(f"{side:>3} {key:>20}: {value}")
        result["target_met"] = {
            side: {
                key: {
                    "p95_ms": api[side][key]["p95"],
                    "target_ms": ms,
                    "met": api[side][key]["p95"] <= ms,
                }
                for key, ms in TARGETS_MS.items()
                if key in api[side]
            }
            for side in sides
        }
        print(f"target (p95): {json.dumps(result['target_met'])}", flush=True)
        if "overhead" in api:
            print(f"{'consent enforcement on vs off':<22} p50 / p95 / p99 ms (on | off), overhead")
            for key, over in api["overhead"].items():
                on, off = api["on"][key], api["off"][key]
                print(
                    f"  {key:<20} {on['p50']:6.1f} / {on['p95']:6.1f} / {on['p99']:6.1f} | "
                    f"{off['p50']:6.1f} / {off['p95']:6.1f} / {off['p99']:6.1f}   "
                    + " ".join(f"{q} {v:+.1%}" for q, v in over.items())
                )
            result["overhead_met"] = {
                key: over["p50"] <= OVERHEAD_TARGET and over["p95"] <= OVERHEAD_TARGET
                for key, over in api["overhead"].items()
            }
            print(f"overhead <= {OVERHEAD_TARGET:.0%} (p50 and p95): {result['overhead_met']}")
        if args.sql_queries:
            result["inprocess"] = {}
            for side in sides:
                sql = measure_inprocess(
                    url, data_dir, targets, args.sql_queries, kinds, enforced=side == "on"
                )
                result["inprocess"][side] = sql
                for kind in kinds:
                    print(
                        f"in process {kind}, enforcement {side}: service {sql[kind]['service_ms']}"
                    )
                    print(f"  SQL {sql[kind]['sql_ms']}")
                    print(f"  render+serialise {sql[kind]['render_ms']}")
                    for statement, ms in sql[kind]["statement_ms"].items():
                        print(f"  {ms['calls']:>4} x {ms['p50']:7.3f} ms  {statement}")
                for name_, plan_ in sql["plans"].items():
                    lines = plan_.split("\n\n", 1)[-1].splitlines()
                    print(f"EXPLAIN {name_}: {lines[0][:110]} | {lines[-1]}")
    finally:
        for profiler in profilers:
            if profiler.poll() is None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(60)
        for server in servers.values():
            server.stop()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = idb.OUT / f"priors_{studies}_{stamp}.json"
        path.write_text(json.dumps(result, indent=1, default=str))
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"summary: {path}")
        kept = bool(args.keep_db or args.reuse_db)
        if not kept:
            idb.drop_database(name)
        print(f"{'kept' if kept else 'dropped'}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
