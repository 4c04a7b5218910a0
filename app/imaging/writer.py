"""Write an XDS-I.b imaging manifest for an ImagingStudy (the `$kos` operation): a Key Object
Selection Document (DICOM PS3.3 A.35.4) built on TID 2010 "Key Object Selection", in a PS3.10
file with Explicit VR Little Endian.

Modules (PS3.3 Table A.35.4-1): Patient (C.7.1.1), General Study (C.7.2.1), Key Object Document
Series (C.17.6.1), General Equipment (C.7.5.1), Key Object Document (C.17.6.2), SR Document
Content (C.17.3), SOP Common (C.12.1).
"""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    KeyObjectSelectionDocumentStorage,
    generate_uid,
)

import app
from app.imaging.manifest import KosError, is_uid
from app.imaging.values import (
    DICOM_UID_SYSTEM,
    V2_0203_SYSTEM,
    dicom_datetime,
    dicom_now,
    pn_from_display,
    pn_from_human_name,
    sex_from_gender,
    sr_value_type,
)

# RIX's UID root: a UUID-derived OID (PS3.5 B.2, ISO/IEC 9834-8), so no registration is needed.
RIX_UID_ROOT = "2.25.262443553288789755712558139528466357954."
RIX_IMPLEMENTATION_CLASS_UID = UID(f"{RIX_UID_ROOT}1")
RIX_IMPLEMENTATION_VERSION = f"RIX_{app.__version__}"
KOS_SERIES_NUMBER = 9999  # the manifest's own series, numbered apart from the study's
MANIFEST_TITLE = ("113030", "DCM", "Manifest")  # CID 7010 document title of an XDS-I manifest
KEY_OBJECT_DESCRIPTION = ("113012", "DCM", "Key Object Description")
_ACSN = "ACSN"
_LO, _SH, _PN, _AE = 64, 16, 64, 16  # maximum lengths (PS3.5 Table 6.2-1)


def kos_from_imaging_study(
    study: dict[str, Any],
    *,
    patient: dict[str, Any] | None,
    patient_identifier_system: str | None = None,
    retrieve_url: str | None = None,
    retrieve_location_uid: str | None = None,
    retrieve_ae_title: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """A KOS manifest (PS3.10 bytes) referencing every instance of the ImagingStudy `study`.

    `patient` gives the Patient Module (the identifier of `patient_identifier_system` when
    given, else its MR or first identifier); without it the study's subject identifier and
    display are used. `retrieve_url` (RIX's WADO-RS base), `retrieve_location_uid` (RIX's XDS-I
    Imaging Document Source UID) and `retrieve_ae_title` go into every referenced series.
    Raises KosError when the study has no Study Instance UID or an instance lacks its UID or
    SOP class.
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    study_uid = _study_uid(study)
    series = _referenced_series(study)
    started_da, started_tm, offset = dicom_datetime(study.get("started"))
    offset = offset or now.strftime("%z")
    content_da, content_tm = dicom_now(now, offset)
    sop_instance_uid = generate_uid(prefix=RIX_UID_ROOT)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = KeyObjectSelectionDocumentStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = content_da, content_tm
    ds.TimezoneOffsetFromUTC = offset
    _patient_module(ds, patient, study, patient_identifier_system)
    accession, accession_system = _accession(study)
    _general_study_module(ds, study, study_uid, started_da, started_tm, accession)
    if accession_system:
        ds.IssuerOfAccessionNumberSequence = Sequence([_issuer(accession_system)])
    modalities = [str(c.get("code")) for c in study.get("modality") or [] if c.get("code")]
    if modalities:
        ds.ModalitiesInStudy = modalities  # Standard Extended: helps XDS-I eventCodeList
    key_object_document(ds, KOS_SERIES_NUMBER, "Imaging manifest (XDS-I.b)", content_da, content_tm)
    if accession:
        ds.ReferencedRequestSequence = Sequence([_request(study_uid, accession, accession_system)])
    retrieve = (retrieve_url, retrieve_location_uid, retrieve_ae_title)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence(
        [_evidence(study_uid, series, retrieve)]
    )
    _content(ds, series, study.get("description"))
    return _part10(ds)


def _study_uid(study: dict[str, Any]) -> str:
    for identifier in study.get("identifier") or []:
        value = str(identifier.get("value") or "")
        if identifier.get("system") == DICOM_UID_SYSTEM and value.startswith("urn:oid:"):
            uid = value.removeprefix("urn:oid:")
            if not is_uid(uid):
                raise KosError(f"The ImagingStudy's Study Instance UID {uid!r} is not a valid UID")
            return uid
    raise KosError(
        "The ImagingStudy has no Study Instance UID: expected an identifier with system "
        f"{DICOM_UID_SYSTEM} and value urn:oid:<uid>"
    )


def _referenced_series(study: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(series UID, [(SOP class UID, SOP instance UID)]) for every series of the study."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for series in study.get("series") or []:
        uid = str(series.get("uid") or "")
        if not is_uid(uid):
            raise KosError(f"The ImagingStudy has a series with an invalid uid {uid!r}")
        instances = []
        for instance in series.get("instance") or []:
            instance_uid = str(instance.get("uid") or "")
            sop_class = str((instance.get("sopClass") or {}).get("code") or "")
            sop_class = sop_class.removeprefix("urn:oid:")
            if not is_uid(instance_uid):
                raise KosError(f"Series {uid} has an instance with an invalid uid {instance_uid!r}")
            if not is_uid(sop_class):
                raise KosError(f"Instance {instance_uid} has no valid sopClass (urn:oid:<uid>)")
            instances.append((sop_class, instance_uid))
        if not instances:
            raise KosError(f"Series {uid} lists no instances: a KOS references instances only")
        out.append((uid, instances))
    if not out:
        raise KosError("The ImagingStudy lists no series: a KOS needs referenced instances")
    return out


def _patient_module(
    ds: Dataset, patient: dict[str, Any] | None, study: dict[str, Any], system: str | None
) -> None:
    """PS3.3 C.7.1.1: Patient's Name, ID (+ issuer), Birth Date and Sex (all Type 2)."""
    subject = study.get("subject") or {}
    identifier = _patient_identifier(patient, system) if patient else subject.get("identifier")
    patient_id = str((identifier or {}).get("value") or "")
    ds.PatientName = _fit(_patient_name(patient, subject), _PN, "Patient's Name")
    ds.PatientID = _fit(patient_id, _LO, "Patient ID")
    issuer_system = str((identifier or {}).get("system") or "")
    if patient_id and issuer_system:
        local = issuer_system.removeprefix("urn:oid:")
        if len(local) <= _LO:
            ds.IssuerOfPatientID = local
        qualifiers = _issuer(issuer_system, local=False)
        codes = [
            str(c["code"])
            for c in ((identifier or {}).get("type") or {}).get("coding") or []
            if c.get("system") == V2_0203_SYSTEM and c.get("code")
        ]
        if codes:
            qualifiers.IdentifierTypeCode = codes[0]
        ds.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
    birth_date, _, _ = dicom_datetime((patient or {}).get("birthDate"))
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex_from_gender((patient or {}).get("gender"))


def _patient_identifier(patient: dict[str, Any], system: str | None) -> dict[str, Any] | None:
    identifiers = [i for i in patient.get("identifier") or [] if i.get("value")]
    if system:
        chosen = [i for i in identifiers if i.get("system") == system]
        if not chosen:
            raise KosError(f"The Patient has no identifier in the namespace {system}")
        return chosen[0]
    for identifier in identifiers:
        codes = {c.get("code") for c in (identifier.get("type") or {}).get("coding") or []}
        if "MR" in codes:
            return identifier
    return identifiers[0] if identifiers else None


def _patient_name(patient: dict[str, Any] | None, subject: dict[str, Any]) -> str:
    if patient is None:
        return pn_from_display(subject.get("display"))
    names = [n for n in patient.get("name") or [] if n.get("use") not in {"old", "anonymous"}]
    for use in ("official", "usual", None):
        for name in names:
            if use is None or name.get("use") == use:
                return pn_from_human_name(name)
    return ""


def _accession(study: dict[str, Any]) -> tuple[str, str | None]:
    for identifier in study.get("identifier") or []:
        codes = {c.get("code") for c in (identifier.get("type") or {}).get("coding") or []}
        if _ACSN in codes and identifier.get("value"):
            value = _fit(str(identifier["value"]), _SH, "Accession Number")
            return value, identifier.get("system")
    return "", None


def _general_study_module(
    ds: Dataset, study: dict[str, Any], uid: str, da: str, tm: str, accession: str
) -> None:
    """PS3.3 C.7.2.1 General Study Module."""
    ds.StudyInstanceUID = uid
    ds.StudyDate, ds.StudyTime = da, tm
    ds.ReferringPhysicianName = _fit(
        pn_from_display((study.get("referrer") or {}).get("display")), _PN, "Referring Physician"
    )
    ds.StudyID = ""
    ds.AccessionNumber = accession
    description = str(study.get("description") or "")
    if description:
        ds.StudyDescription = description[:_LO]


def _issuer(system: str, *, local: bool = True) -> Dataset:
    """PS3.3 10.12 HL7v2 Hierarchic Designator Macro for a FHIR identifier system."""
    item = Dataset()
    if system.startswith("urn:oid:") and is_uid(system[8:]):
        item.UniversalEntityID, item.UniversalEntityIDType = system[8:], "ISO"
    elif system.startswith("urn:uuid:"):
        item.UniversalEntityID, item.UniversalEntityIDType = system[9:], "UUID"
    else:
        item.UniversalEntityID, item.UniversalEntityIDType = system, "URI"
    if local and len(system) <= _LO:
        item.LocalNamespaceEntityID = system
    return item


def _request(study_uid: str, accession: str, system: str | None) -> Dataset:
    """A Referenced Request Sequence item (PS3.3 C.17.6.2): the order behind the study."""
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.ReferencedStudySequence = Sequence()
    item.AccessionNumber = accession
    if system:
        item.IssuerOfAccessionNumberSequence = Sequence([_issuer(system)])
    item.PlacerOrderNumberImagingServiceRequest = ""
    item.FillerOrderNumberImagingServiceRequest = ""
    item.RequestedProcedureID = ""
    item.RequestedProcedureDescription = ""
    item.RequestedProcedureCodeSequence = Sequence()
    return item


def _evidence(
    study_uid: str,
    series: list[tuple[str, list[tuple[str, str]]]],
    retrieve: tuple[str | None, str | None, str | None],
) -> Dataset:
    """PS3.3 Table 10-3 Hierarchical SOP Instance Reference Macro for the whole study."""
    url, location_uid, ae_title = retrieve
    study_item = Dataset()
    study_item.StudyInstanceUID = study_uid
    series_items = []
    for series_uid, instances in series:
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        if url:
            item.RetrieveURL = url
        if location_uid:
            if not is_uid(location_uid):
                raise KosError(f"Retrieve Location UID {location_uid!r} is not a valid UID")
            item.RetrieveLocationUID = location_uid
        if ae_title:
            item.RetrieveAETitle = _fit(ae_title, _AE, "Retrieve AE Title")
        item.ReferencedSOPSequence = Sequence([_sop_reference(*i) for i in instances])
        series_items.append(item)
    study_item.ReferencedSeriesSequence = Sequence(series_items)
    return study_item


def _content(
    ds: Dataset, series: list[tuple[str, list[tuple[str, str]]]], description: Any
) -> None:
    """SR Document Content Module (C.17.3) after TID 2010: the Manifest container, an optional
    Key Object Description, then one IMAGE, WAVEFORM or COMPOSITE item per instance."""
    key_object_container(ds, _code(*MANIFEST_TITLE))
    items = []
    if description:
        text = Dataset()
        text.RelationshipType = "CONTAINS"
        text.ValueType = "TEXT"
        text.ConceptNameCodeSequence = Sequence([_code(*KEY_OBJECT_DESCRIPTION)])
        text.TextValue = str(description)
        items.append(text)
    for _, instances in series:
        for sop_class, instance_uid in instances:
            item = Dataset()
            item.RelationshipType = "CONTAINS"
            item.ValueType = sr_value_type(sop_class)
            item.ReferencedSOPSequence = Sequence([_sop_reference(sop_class, instance_uid)])
            items.append(item)
    ds.ContentSequence = Sequence(items)


def _sop_reference(sop_class: str, instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = instance_uid
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _fit(value: str, limit: int, what: str) -> str:
    """Identifying values are never truncated: too long for their VR is an error."""
    if len(value) > limit:
        raise KosError(f"{what} {value!r} is longer than DICOM allows ({limit} characters)")
    return value


def _part10(ds: Dataset) -> bytes:
    """PS3.10 file: preamble, File Meta Information, Explicit VR Little Endian data set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = RIX_IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = RIX_IMPLEMENTATION_VERSION
    ds.file_meta = meta
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def key_object_document(
    ds: Dataset, series_number: int, description: str, content_da: str, content_tm: str
) -> None:
    """The Key Object Document Series (PS3.3 C.17.6.1), General Equipment (C.7.5.1) and Key
    Object Document (C.17.6.2) modules of a KOS RIX writes, in a series of its own."""
    ds.Modality = "KO"
    ds.SeriesInstanceUID = generate_uid(prefix=RIX_UID_ROOT)
    ds.SeriesNumber = series_number
    ds.SeriesDate, ds.SeriesTime = content_da, content_tm
    ds.SeriesDescription = description
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.Manufacturer = "RIX"
    ds.SoftwareVersions = app.__version__
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = content_da, content_tm


def key_object_container(ds: Dataset, title: Dataset) -> None:
    """The root of a Key Object Selection's content tree (PS3.3 C.17.3, TID 2010): a
    CONTAINER titled with a CID 7010/7011 code."""
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([title])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = Sequence([template])
