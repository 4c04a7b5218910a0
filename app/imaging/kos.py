"""DICOM Key Object Selection (KOS) manifests ⇄ FHIR ImagingStudy, as pure functions.

An XDS-I.b imaging manifest is a Key Object Selection Document (DICOM PS3.3 A.35.4, SOP Class
1.2.840.10008.5.1.4.1.1.88.59): `parse_kos` reads one into a `KosManifest`, `imaging_study`
turns that into a FHIR R4 ImagingStudy, and `kos_from_imaging_study` writes a KOS for an
ImagingStudy (the `$kos` operation, for XDS-I consumers). `rejection_note` writes the IHE IOCM
(Imaging Object Change Management) Rejection Note that withdraws a study's instances: a KOS whose
document title comes from DICOM PS3.16 CID 7011 "Rejected for ..." titles.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import KeyObjectSelectionDocumentStorage, generate_uid

from app.imaging.manifest import (
    KosCode,
    KosError,
    KosInstance,
    KosIssuer,
    KosManifest,
    KosPatient,
    KosRetrieve,
    KosSeries,
    is_uid,
)
from app.imaging.reader import parse_kos
from app.imaging.study import imaging_study
from app.imaging.values import dicom_datetime, dicom_now, fhir_date, offset_of, sr_value_type
from app.imaging.writer import (
    KOS_SERIES_NUMBER,
    RIX_UID_ROOT,
    _code,
    _part10,
    _sop_reference,
    key_object_container,
    key_object_document,
    kos_from_imaging_study,
)

__all__ = [
    "DATA_RETENTION_POLICY_EXPIRED",
    "REJECTED_FOR_PATIENT_SAFETY",
    "REJECTION_TITLES",
    "RIX_UID_ROOT",
    "KosCode",
    "KosError",
    "KosInstance",
    "KosIssuer",
    "KosManifest",
    "KosPatient",
    "KosRetrieve",
    "KosSeries",
    "imaging_study",
    "kos_from_imaging_study",
    "parse_kos",
    "rejection_note",
]

# DICOM PS3.16 CID 7011 "Rejected for ..." Key Object Selection Document Titles: what an IHE IOCM
# Rejection Note says about the instances it references.
REJECTED_FOR_QUALITY = KosCode("113001", "DCM", "Rejected for Quality Reasons")
REJECTED_FOR_PATIENT_SAFETY = KosCode("113037", "DCM", "Rejected for Patient Safety Reasons")
INCORRECT_WORKLIST_ENTRY = KosCode("113038", "DCM", "Incorrect Modality Worklist Entry")
DATA_RETENTION_POLICY_EXPIRED = KosCode("113039", "DCM", "Data Retention Policy Expired")
REJECTION_TITLES = {
    code.value: code
    for code in (
        REJECTED_FOR_QUALITY,
        REJECTED_FOR_PATIENT_SAFETY,
        INCORRECT_WORKLIST_ENTRY,
        DATA_RETENTION_POLICY_EXPIRED,
    )
}
# A number apart from the study's series and from the `$kos` manifest's own series.
REJECTION_SERIES_NUMBER = KOS_SERIES_NUMBER - 1
_AE_LENGTH = 16  # AE maximum length (PS3.5 Table 6.2-1)


def rejection_note(manifest: KosManifest, title: KosCode, *, now: datetime | None = None) -> bytes:
    """An IHE IOCM Rejection Note (PS3.10 bytes) for every instance `manifest` references in
    its study: a Key Object Selection Document (PS3.3 A.35.4, TID 2010) whose document title is
    `title`, one of CID 7011 (REJECTION_TITLES), in the rejected study (same Study Instance UID)
    and a series of its own, with the study's Patient and study identification so that the
    receiving archive finds the instances it must withdraw.

    Only identification is carried (patient, study, accession, series and instance UIDs, where
    each series was retrieved from): no description, no referrer, nothing of the exam's content,
    since the note outlives the erased exam. Raises KosError for a title outside CID 7011 or a
    manifest that references no instance.
    """
    if REJECTION_TITLES.get(title.value) != title:
        raise KosError(f"{title.value} ({title.meaning}) is not a CID 7011 rejection title")
    if not manifest.series or not all(series.instances for series in manifest.series):
        raise KosError("A rejection note references instances: the study lists none")
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    offset = offset_of(now)
    content_da, content_tm = dicom_now(now, offset)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = KeyObjectSelectionDocumentStorage
    ds.SOPInstanceUID = generate_uid(prefix=RIX_UID_ROOT)
    ds.InstanceCreationDate, ds.InstanceCreationTime = content_da, content_tm
    ds.TimezoneOffsetFromUTC = offset
    _rejected_patient(ds, manifest.patient)
    # General Study (C.7.2.1): the rejected study's identification, its description left out.
    ds.StudyInstanceUID = manifest.study_uid
    ds.StudyDate = dicom_datetime(fhir_date(manifest.study_date))[0]
    ds.StudyTime = manifest.study_time or ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = manifest.accession_number or ""
    if manifest.accession_number and manifest.accession_issuer:
        ds.IssuerOfAccessionNumberSequence = Sequence([_issuer_item(manifest.accession_issuer)])
    key_object_document(ds, REJECTION_SERIES_NUMBER, "IOCM rejection note", content_da, content_tm)
    if manifest.accession_number:
        ds.ReferencedRequestSequence = Sequence([_rejected_request(manifest)])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([_rejected_evidence(manifest)])
    # SR Document Content (C.17.3) after TID 2010: the CID 7011 title, one reference per
    # instance (IOCM: the note lists every rejected instance, in the evidence and the tree).
    key_object_container(ds, _code(title.value, title.scheme, title.meaning))
    items = []
    for series in manifest.series:
        for instance in series.instances:
            item = Dataset()
            item.RelationshipType = "CONTAINS"
            item.ValueType = sr_value_type(instance.sop_class_uid)
            item.ReferencedSOPSequence = Sequence(
                [_sop_reference(instance.sop_class_uid, instance.sop_instance_uid)]
            )
            items.append(item)
    ds.ContentSequence = Sequence(items)
    return _part10(ds)


def _rejected_patient(ds: Dataset, patient: KosPatient) -> None:
    """PS3.3 C.7.1.1 Patient Module as the rejected instances carry it (IOCM: the archive
    matches the note to its instances on the same patient)."""
    ds.PatientName = patient.name or ""
    ds.PatientID = patient.id or ""
    if patient.id and patient.issuer is not None:
        if patient.issuer.local_namespace:
            ds.IssuerOfPatientID = patient.issuer.local_namespace
        if patient.issuer.universal_id or patient.identifier_type_code:
            qualifiers = Dataset()
            if patient.issuer.universal_id:
                qualifiers.UniversalEntityID = patient.issuer.universal_id
                qualifiers.UniversalEntityIDType = patient.issuer.universal_id_type or "ISO"
            if patient.identifier_type_code:
                qualifiers.IdentifierTypeCode = patient.identifier_type_code
            ds.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
    ds.PatientBirthDate = dicom_datetime(patient.birth_date)[0]
    ds.PatientSex = patient.sex or ""


def _issuer_item(issuer: KosIssuer) -> Dataset:
    """PS3.3 10.12 HL7v2 Hierarchic Designator Macro for a manifest's issuer."""
    item = Dataset()
    if issuer.local_namespace:
        item.LocalNamespaceEntityID = issuer.local_namespace
    if issuer.universal_id:
        item.UniversalEntityID = issuer.universal_id
        item.UniversalEntityIDType = issuer.universal_id_type or "ISO"
    return item


def _rejected_request(manifest: KosManifest) -> Dataset:
    """A Referenced Request Sequence item (C.17.6.2): the order behind the rejected study."""
    item = Dataset()
    item.StudyInstanceUID = manifest.study_uid
    item.ReferencedStudySequence = Sequence()
    item.AccessionNumber = manifest.accession_number or ""
    if manifest.accession_issuer is not None:
        item.IssuerOfAccessionNumberSequence = Sequence([_issuer_item(manifest.accession_issuer)])
    item.PlacerOrderNumberImagingServiceRequest = ""
    item.FillerOrderNumberImagingServiceRequest = ""
    item.RequestedProcedureID = ""
    item.RequestedProcedureDescription = ""
    item.RequestedProcedureCodeSequence = Sequence()
    return item


def _rejected_evidence(manifest: KosManifest) -> Dataset:
    """PS3.3 Table 10-3 Hierarchical SOP Instance Reference Macro: every rejected instance,
    each series with where it was retrieved from (Retrieve Location UID, AE titles), so the
    archive that holds it recognises its own."""
    study = Dataset()
    study.StudyInstanceUID = manifest.study_uid
    series_items = []
    for series in manifest.series:
        item = Dataset()
        item.SeriesInstanceUID = series.uid
        # Carried over only when DICOM can hold them: a manifest may say "ACME" where a UID
        # belongs, and a wrong value here would make the whole note invalid.
        if series.retrieve.location_uid and is_uid(series.retrieve.location_uid):
            item.RetrieveLocationUID = series.retrieve.location_uid
        titles = [t for t in series.retrieve.ae_titles if 0 < len(t) <= _AE_LENGTH]
        if titles:
            item.RetrieveAETitle = titles
        item.ReferencedSOPSequence = Sequence(
            [_sop_reference(i.sop_class_uid, i.sop_instance_uid) for i in series.instances]
        )
        series_items.append(item)
    study.ReferencedSeriesSequence = Sequence(series_items)
    return study
