"""KOS manifests ⇄ ImagingStudy: the public IHE MADO examples parsed and checked against their own
FHIR manifests and DocumentReferences, refusals, and `$kos` generation checked by dciodvfy
(Debian dicom3tools) and parsed back."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.imaging.kos import (
    RIX_UID_ROOT,
    KosError,
    KosManifest,
    imaging_study,
    kos_from_imaging_study,
    parse_kos,
)
from app.imaging.values import fhir_datetime, pn_display, pn_from_human_name

MADO = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "ihe" / "mado"
KOS_BINARIES = sorted(MADO.glob("mado-kos-*-binary.json"))
CT = "1.2.840.10008.5.1.4.1.1.2"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"
ACSN = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
UID_ONLY = [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}]
IPP = "urn:oid:1.2.250.1.71.4.2.1"

# dciodvfy warnings that RIX's manifests may carry, each for a known reason:
EXPLAINED_WARNINGS = (
    # Modalities in Study (0008,0061) is not in the KOS IOD: kept (Standard Extended SOP Class)
    # so the study's modalities survive the round trip and feed XDS-I eventCodeList.
    "Attribute is not present in standard DICOM IOD - (0x0008,0x0061)",
    # Retrieve URL (0008,1190), RIX's WADO-RS base for XDS-I/MADO consumers, is not in the
    # KOS IOD as dicom3tools (2022) knows it.
    "Attribute is not present in standard DICOM IOD - (0x0008,0x1190)",
    "this is a Standard Extended SOP Class",
    # Study ID (0020,0010) is Type 2: RIX does not know the site's, and leaves it empty; so
    # are Study Date and Study Time when ImagingStudy.started does not give them.
    "needed to build DICOMDIR - Study ID",
    "needed to build DICOMDIR - Study Date",
    "needed to build DICOMDIR - Study Time",
    # A FHIR Reference.display has no name structure: kept whole as one PN component.
    "Retired Person Name form",
)


def mado(test: Any) -> Any:
    """A test over every MADO KOS example. The examples carry values under the wrong VR (a
    Patient ID as UI, a Study Instance UID as SH): pydicom says so while reading them."""
    test = pytest.mark.filterwarnings("ignore:Invalid value for VR")(test)
    test = pytest.mark.filterwarnings("ignore:The value length")(test)
    return pytest.mark.parametrize("binary", KOS_BINARIES, ids=_study_uid_of)(test)


def _json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def _study_uid_of(binary: Path) -> str:
    return binary.name.removeprefix("mado-kos-").removesuffix("-binary.json")


def _kos_bytes(binary: Path) -> bytes:
    resource = _json(binary)
    assert resource["resourceType"] == "Binary"
    assert resource["contentType"] == "application/dicom"
    return base64.b64decode(resource["data"])


def _bundle_study(uid: str) -> dict[str, Any]:
    bundle = _json(MADO / f"mado-{uid}-bundle.json")
    studies = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ImagingStudy"
    ]
    assert len(studies) == 1
    return studies[0]


def _related(docref: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(r["identifier"] for r in docref["context"]["related"] if r["type"] == kind)


def _dciodvfy(data: bytes, tmp_path: Path) -> list[str]:
    """dciodvfy's findings (errors and warnings) for a Part 10 file."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail(
            "dciodvfy is missing: apt-get install dicom3tools "
            "(scripts/dev test installs it when run as root)"
        )
    path = tmp_path / "manifest.dcm"
    path.write_bytes(data)
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if "Error" in line or "Warning" in line]


def _assert_dciodvfy_clean(data: bytes, tmp_path: Path) -> None:
    findings = _dciodvfy(data, tmp_path)
    errors = [line for line in findings if "Error" in line]
    assert errors == [], "\n".join(findings)
    unexplained = [f for f in findings if not any(w in f for w in EXPLAINED_WARNINGS)]
    assert unexplained == [], "\n".join(unexplained)


def _patient(system: str = IPP) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "277076322082910"},
            {
                "type": {"coding": [{"system": ACSN["system"], "code": "MR"}]},
                "system": system,
                "value": "IPP-0042",
            },
        ],
        "name": [
            {"use": "old", "family": "MARTIN"},
            {"use": "official", "family": "Lefèvre", "given": ["Anne", "Sophie"]},
        ],
        "gender": "female",
        "birthDate": "1961-02-03",
    }


def _study(**changes: Any) -> dict[str, Any]:
    """An ImagingStudy of four series: CT images, an SR, an ECG and a KOS."""
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [
            {"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.2.1125.9.1"},
            {"type": {"coding": [ACSN]}, "system": "urn:oid:1.2.250.1.71.4.3", "value": "A42"},
        ],
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
        "started": "2024-03-05T14:15:16+01:00",
        "referrer": {"display": "MARTIN^Paul"},
        "description": "CT thorax",
        "series": [],
    }
    for number, sop_class in enumerate((CT, BASIC_TEXT_SR, TWELVE_LEAD_ECG, KOS), start=1):
        series_uid = f"1.2.826.0.1.3680043.2.1125.9.1.{number}"
        study["series"].append(
            {
                "uid": series_uid,
                "modality": {"system": "DCM", "code": "CT"},
                "instance": [
                    {
                        "uid": f"{series_uid}.{i}",
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"},
                    }
                    for i in range(1, 4 if sop_class == CT else 2)
                ],
            }
        )
    study.update(changes)
    return study


def _rewrite(data: bytes, change: Any) -> bytes:
    """A KOS changed by `change(dataset)`, written back as a Part 10 file."""
    dataset = pydicom.dcmread(BytesIO(data))
    change(dataset)
    out = BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _content_of(manifest: KosManifest) -> dict[str, set[tuple[str, str]]]:
    return {
        s.uid: {(i.sop_class_uid, i.sop_instance_uid) for i in s.instances} for s in manifest.series
    }


# --- the IHE MADO examples ------------------------------------------------------------------


def test_the_mado_examples_are_there() -> None:
    assert len(KOS_BINARIES) >= 2, f"no MADO KOS examples under {MADO}"


@mado
def test_mado_kos_matches_its_fhir_manifest_and_document_references(binary: Path) -> None:
    uid = _study_uid_of(binary)
    manifest = parse_kos(_kos_bytes(binary))
    kos_docref = _json(MADO / f"mado-kos-{uid}-docref.json")
    fhir_docref = _json(MADO / f"mado-fhir-{uid}-docref.json")
    expected = _bundle_study(uid)
    patient_id = kos_docref["subject"]["reference"].removeprefix("Patient/")
    patient = _json(MADO / f"mado-{patient_id}-patient.json")

    assert kos_docref["content"][0]["attachment"]["url"] == f"Binary/{_json(binary)['id']}"
    assert kos_docref["content"][0]["format"]["code"] == KOS
    for docref in (kos_docref, fhir_docref):
        assert _related(docref, "ImagingStudy")["value"] == f"urn:oid:{manifest.study_uid}"
        assert _related(docref, "ServiceRequest")["value"] == manifest.accession_number
    assert manifest.study_uid == uid
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}.items() <= expected["identifier"][
        0
    ].items()

    assert manifest.patient.id == patient["identifier"][0]["value"]
    assert pn_display(manifest.patient.name) == patient["name"][0]["text"]
    assert manifest.patient.birth_date == patient["birthDate"]
    assert manifest.patient.gender == patient["gender"]

    docref_modalities = {
        e["valueCodeableConcept"]["coding"][0]["code"]
        for e in kos_docref["extension"]
        if e["url"].endswith("DocumentReference.modality")
    }
    assert (
        set(manifest.modalities) == docref_modalities == {m["code"] for m in expected["modality"]}
    )
    assert "KO" not in manifest.modalities or any(s.modality == "KO" for s in manifest.series)

    assert len(manifest.series) == expected["numberOfSeries"]
    assert manifest.number_of_instances == expected["numberOfInstances"]
    assert manifest.study_description == expected["description"]
    assert manifest.title is not None and manifest.title.scheme == "DCM"
    by_uid = {s["uid"]: s for s in expected["series"]}
    for series in manifest.series:
        wanted = by_uid[series.uid]
        assert len(series.instances) == wanted["numberOfInstances"] == len(wanted["instance"])
        assert {(i.sop_instance_uid, f"urn:oid:{i.sop_class_uid}") for i in series.instances} == {
            (i["uid"], i["sopClass"]["code"]) for i in wanted["instance"]
        }
        assert series.modality == wanted["modality"]["code"]
        assert series.number == wanted["number"]
        assert series.description == wanted.get("description")
        assert series.retrieve.url and series.retrieve.location_uid


@mado
def test_mado_kos_gives_a_valid_imaging_study(binary: Path) -> None:
    uid = _study_uid_of(binary)
    manifest = parse_kos(_kos_bytes(binary))
    study = imaging_study(
        manifest, patient_reference="Patient/p1", endpoint_reference="Endpoint/rix-wado"
    )

    ImagingStudy.model_validate(study)
    expected = _bundle_study(uid)
    assert study["identifier"][0] == {
        "use": "official",
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{uid}",
    }
    accession = study["identifier"][1]
    assert accession["type"]["coding"] == [ACSN]
    assert accession["value"] == manifest.accession_number
    assert "system" not in accession  # the examples' Issuer of Accession Number item is empty
    assert study["status"] == "available"
    assert study["subject"] == {"reference": "Patient/p1"}
    assert study["endpoint"] == [{"reference": "Endpoint/rix-wado"}]
    # The KOS says +0100 (the manifest's creation zone) where the FHIR manifest says +02:00.
    assert study["started"] == "2022-08-22T08:31:17.658+01:00"
    assert study["started"][:19] == expected["started"][:19]
    assert study["numberOfSeries"] == expected["numberOfSeries"]
    assert study["numberOfInstances"] == expected["numberOfInstances"]
    assert study["description"] == expected["description"]
    assert {(s["uid"], s["modality"]["code"], s["number"]) for s in study["series"]} == {
        (s["uid"], s["modality"]["code"], s["number"]) for s in expected["series"]
    }
    assert "referrer" not in study  # Referring Physician's Name is empty
    assert "example.com" not in json.dumps(study)  # never the site's own WADO URL


def test_started_takes_the_site_zone_or_a_fallback() -> None:
    data = kos_from_imaging_study(_study(started="2022-08-22"), patient=None, now=NOW)
    data = _rewrite(data, lambda ds: ds.__setattr__("StudyTime", "083117"))
    data = _rewrite(data, lambda ds: delattr(ds, "TimezoneOffsetFromUTC"))
    manifest = parse_kos(data)
    paris = ZoneInfo("Europe/Paris")

    kwargs: dict[str, Any] = {"patient_reference": "Patient/p", "endpoint_reference": None}
    assert imaging_study(manifest, zone=paris, **kwargs)["started"] == "2022-08-22T08:31:17+02:00"
    assert imaging_study(manifest, **kwargs)["started"] == "2022-08-22"
    undated = parse_kos(_rewrite(data, lambda ds: delattr(ds, "StudyDate")))
    study = imaging_study(undated, started_fallback="2022-08-01", **kwargs)
    assert study["started"] == "2022-08-01"
    assert "endpoint" not in study


def test_dicom_values() -> None:
    assert fhir_datetime("20240305", "1415", "-0500") == "2024-03-05T14:15:00-05:00"
    assert fhir_datetime("20240305", "141516.123456", "+0000") == "2024-03-05T14:15:16.123456+00:00"
    assert fhir_datetime("2024", "1415", "+0100") is None
    assert fhir_datetime("20240230", None, None) is None
    assert pn_display("DOE^John^Paul^Dr^Jr=ドウ^ジョン") == "Dr John Paul DOE Jr"
    assert pn_display("^^^") is None
    assert pn_from_human_name({"family": "Lefèvre", "given": ["Anne", "Sophie"]}) == (
        "Lefèvre^Anne^Sophie"
    )
    assert pn_from_human_name({"text": "Anne Lefèvre"}) == "Anne Lefèvre"


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, not DICOM at all", "not a DICOM Part 10 file"),
        (b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff", "not"),
    ],
)
def test_refuses_what_is_not_dicom(data: bytes, message: str) -> None:
    with pytest.raises(KosError, match=message):
        parse_kos(data)


def test_refuses_a_ct_image() -> None:
    ct = Path(get_testdata_file("CT_small.dcm") or "").read_bytes()
    with pytest.raises(KosError, match=r"Not a Key Object Selection Document.*CT Image Storage"):
        parse_kos(ct)


def test_refuses_a_truncated_manifest() -> None:
    data = kos_from_imaging_study(_study(), patient=None, now=NOW)
    with pytest.raises(KosError):
        parse_kos(data[:400])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ds: delattr(ds, "StudyInstanceUID"), r"lacks the Study Instance UID \(0020,000D\)"),
        (lambda ds: setattr(ds, "StudyInstanceUID", "not-a-uid"), "not a valid UID"),
        (
            lambda ds: setattr(ds, "CurrentRequestedProcedureEvidenceSequence", Sequence()),
            r"references no instances.*\(0040,A375\)",
        ),
        (
            lambda ds: delattr(ds, "CurrentRequestedProcedureEvidenceSequence"),
            "references no instances",
        ),
        (
            lambda ds: setattr(
                ds.CurrentRequestedProcedureEvidenceSequence[0], "StudyInstanceUID", "1.2.3"
            ),
            "no instances of its study",
        ),
        (
            lambda ds: setattr(
                ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0],
                "ReferencedSOPSequence",
                Sequence([Dataset()]),
            ),
            "without its ReferencedSOPInstanceUID",
        ),
    ],
    ids=[
        "no-study-uid",
        "bad-study-uid",
        "empty-evidence",
        "no-evidence",
        "other-study",
        "no-instance-uid",
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # "not-a-uid", on purpose
def test_refuses_a_kos_without_what_a_manifest_needs(change: Any, message: str) -> None:
    data = kos_from_imaging_study(_study(), patient=None, now=NOW)
    with pytest.raises(KosError, match=message):
        parse_kos(_rewrite(data, change))


def test_the_sop_class_may_come_from_the_file_meta_alone() -> None:
    data = kos_from_imaging_study(_study(), patient=None, now=NOW)
    assert parse_kos(_rewrite(data, lambda ds: delattr(ds, "SOPClassUID"))).series

    def not_kos(ds: Dataset) -> None:
        del ds.SOPClassUID
        ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID(CT)

    with pytest.raises(KosError, match="Not a Key Object Selection Document"):
        parse_kos(_rewrite(data, not_kos))


def test_evidence_from_another_study_is_set_apart() -> None:
    def add_other_study(ds: Dataset) -> None:
        other = Dataset()
        other.StudyInstanceUID = "1.2.3.4"
        series = Dataset()
        series.SeriesInstanceUID = "1.2.3.4.1"
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CT, "1.2.3.4.1.1"
        series.ReferencedSOPSequence = Sequence([ref])
        other.ReferencedSeriesSequence = Sequence([series])
        ds.CurrentRequestedProcedureEvidenceSequence.append(other)

    data = _rewrite(kos_from_imaging_study(_study(), patient=None, now=NOW), add_other_study)
    manifest = parse_kos(data)
    assert manifest.other_studies == ("1.2.3.4",)
    assert "1.2.3.4.1" not in _content_of(manifest)


@pytest.mark.parametrize(
    ("study", "message"),
    [
        (_study(identifier=[]), "no Study Instance UID"),
        (_study(series=[]), "lists no series"),
        (_study(series=[{"uid": "1.2.3", "modality": {"code": "CT"}}]), "lists no instances"),
        (
            _study(
                series=[
                    {"uid": "1.2.3", "modality": {"code": "CT"}, "instance": [{"uid": "1.2.3.1"}]}
                ]
            ),
            "no valid sopClass",
        ),
        (
            _study(
                identifier=[
                    {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"},
                    {"type": {"coding": [ACSN]}, "value": "X" * 17},
                ]
            ),
            "Accession Number",
        ),
    ],
    ids=["no-uid", "no-series", "empty-series", "no-sop-class", "long-accession"],
)
def test_kos_from_imaging_study_refuses(study: dict[str, Any], message: str) -> None:
    with pytest.raises(KosError, match=message):
        kos_from_imaging_study(study, patient=None, now=NOW)


# --- $kos: generation, dciodvfy, round trip -------------------------------------------------


def test_generated_kos_passes_dciodvfy_and_round_trips(tmp_path: Path) -> None:
    study = _study()
    data = kos_from_imaging_study(
        study,
        patient=_patient(),
        retrieve_url="https://rix.example.org/dicom-web",
        retrieve_location_uid="1.2.250.1.999.1",
        retrieve_ae_title="RIX",
        now=NOW,
    )
    _assert_dciodvfy_clean(data, tmp_path)

    dataset = pydicom.dcmread(BytesIO(data))
    assert dataset.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert dataset.preamble == b"\0" * 128
    assert dataset.SOPClassUID == KOS and dataset.Modality == "KO"
    assert dataset.SOPInstanceUID.startswith(RIX_UID_ROOT)
    assert dataset.SeriesInstanceUID.startswith(RIX_UID_ROOT)
    assert dataset.ConceptNameCodeSequence[0].CodeValue == "113030"
    assert dataset.ContentTemplateSequence[0].TemplateIdentifier == "2010"
    assert dataset.ContinuityOfContent == "SEPARATE"
    assert (dataset.ContentDate, dataset.ContentTime[:6], dataset.TimezoneOffsetFromUTC) == (
        "20260102",
        "040405",
        "+0100",
    )
    value_types = [item.ValueType for item in dataset.ContentSequence]
    assert value_types == ["TEXT", "IMAGE", "IMAGE", "IMAGE", "COMPOSITE", "WAVEFORM", "COMPOSITE"]

    manifest = parse_kos(data)
    assert manifest.study_uid == "1.2.826.0.1.3680043.2.1125.9.1"
    assert manifest.accession_number == "A42"
    assert manifest.accession_issuer and manifest.accession_issuer.system == (
        "urn:oid:1.2.250.1.71.4.3"
    )
    assert manifest.patient.id == "IPP-0042"
    assert manifest.patient.issuer and manifest.patient.issuer.system == IPP
    assert manifest.patient.identifier_type_code == "MR"
    assert manifest.patient.name == "Lefèvre^Anne^Sophie"
    assert (manifest.patient.birth_date, manifest.patient.gender) == ("1961-02-03", "female")
    assert manifest.title and manifest.title.meaning == "Manifest"
    assert manifest.modalities == ("CT",)
    assert _content_of(manifest) == {
        s["uid"]: {(i["sopClass"]["code"][8:], i["uid"]) for i in s["instance"]}
        for s in study["series"]
    }
    assert {s.retrieve.url for s in manifest.series} == {"https://rix.example.org/dicom-web"}
    assert {s.retrieve.ae_titles for s in manifest.series} == {("RIX",)}

    again = imaging_study(
        manifest, patient_reference="Patient/p1", endpoint_reference="Endpoint/rix-wado"
    )
    assert again["started"] == study["started"]
    assert again["description"] == study["description"]
    assert again["referrer"] == {"display": "Paul MARTIN"}
    assert again["identifier"][1]["system"] == "urn:oid:1.2.250.1.71.4.3"
    assert [s["modality"]["code"] for s in again["series"]] == ["CT", "SR", "ECG", "KO"]


@mado
def test_mado_study_round_trips_through_kos(binary: Path, tmp_path: Path) -> None:
    original = parse_kos(_kos_bytes(binary))
    study = imaging_study(
        original, patient_reference="Patient/p1", endpoint_reference="Endpoint/rix-wado"
    )
    patient = _json(MADO / "mado-pat-mrn--1097192655-patient.json")
    data = kos_from_imaging_study(study, patient=patient, now=NOW)
    _assert_dciodvfy_clean(data, tmp_path)

    manifest = parse_kos(data)
    assert manifest.study_uid == original.study_uid
    assert manifest.accession_number == original.accession_number
    assert manifest.patient.id == original.patient.id
    assert (
        manifest.patient.issuer
        and manifest.patient.issuer.system == patient["identifier"][0]["system"]
    )
    assert (manifest.study_date, manifest.study_time) == (original.study_date, original.study_time)
    assert manifest.timezone_offset == original.timezone_offset
    assert set(manifest.modalities) == set(original.modalities)
    assert _content_of(manifest) == _content_of(original)
    assert [s.modality for s in manifest.series] == [s.modality for s in original.series]
    again = imaging_study(manifest, patient_reference="Patient/p1", endpoint_reference=None)
    assert again["started"] == study["started"]
    assert again["numberOfInstances"] == study["numberOfInstances"]


def test_kos_without_a_patient_uses_the_subject(tmp_path: Path) -> None:
    study = _study(
        subject={
            "reference": "Patient/p1",
            "identifier": {"system": IPP, "value": "IPP-7"},
            "display": "DUPONT^Jean",
        },
        started="2024-03-05",
        referrer=None,
        description=None,
        modality=None,
    )
    data = kos_from_imaging_study(study, patient=None, now=NOW)
    _assert_dciodvfy_clean(data, tmp_path)
    manifest = parse_kos(data)
    assert (manifest.patient.id, manifest.patient.name) == ("IPP-7", "DUPONT^Jean")
    assert manifest.patient.issuer and manifest.patient.issuer.system == IPP
    assert (manifest.study_date, manifest.study_time) == ("20240305", None)
    assert manifest.modalities == ("CT", "SR", "ECG", "KO")  # from the SOP classes


def test_patient_identifier_namespace_can_be_chosen() -> None:
    patient = _patient()
    data = kos_from_imaging_study(
        _study(), patient=patient, patient_identifier_system="urn:oid:1.2.250.1.213.1.4.8", now=NOW
    )
    assert parse_kos(data).patient.id == "277076322082910"
    with pytest.raises(KosError, match="no identifier in the namespace"):
        kos_from_imaging_study(
            _study(), patient=patient, patient_identifier_system="urn:oid:9.9", now=NOW
        )


def test_each_kos_is_a_new_instance() -> None:
    first = parse_kos(kos_from_imaging_study(_study(), patient=None, now=NOW))
    second = parse_kos(kos_from_imaging_study(_study(), patient=None, now=NOW))
    assert first.sop_instance_uid != second.sop_instance_uid
