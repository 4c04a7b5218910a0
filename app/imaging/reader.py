"""Read an XDS-I.b imaging manifest: a DICOM Key Object Selection Document (PS3.3 A.35.4,
SOP Class 1.2.840.10008.5.1.4.1.1.88.59) in a Part 10 file, as a `KosManifest`.

Tolerant of what real manifests carry (values under the wrong VR, empty issuer items, the MADO
Image Library of IHE RAD MADO), strict about what a manifest is for: a KOS, one study, the
instances it references.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, KeyObjectSelectionDocumentStorage

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
from app.imaging.values import fhir_date, modality_of_sop_class

# Concepts of the MADO Image Library (TID 1600 as extended by IHE RAD MADO); matched on code or,
# for the draft's temporary codes, on code meaning.
_SERIES_UID = ("DCM", "112002")
_MODALITY = ("DCM", "121139")
_SERIES_NUMBER = ("DCM", "113607")
_SERIES_DESCRIPTION = ("DCM", "131563")
_READ_ERRORS = (InvalidDicomError, EOFError, OSError, ValueError, TypeError, struct.error)


def parse_kos(data: bytes) -> KosManifest:
    """Read a KOS manifest (DICOM PS3.10 file) into a `KosManifest`.

    Raises KosError when `data` is not parseable DICOM, not a Key Object Selection Document,
    lacks the Study Instance UID, or references no instance of its study.
    """
    dataset = _read(data)
    try:
        return _manifest(dataset)
    except KosError:
        raise
    except _READ_ERRORS as exc:
        raise KosError(f"The manifest is not readable DICOM: {exc}") from exc


def _read(data: bytes) -> Dataset:
    if not data:
        raise KosError("The manifest is empty: expected a DICOM Part 10 file")
    try:
        dataset = pydicom.dcmread(BytesIO(data))
    except _READ_ERRORS as exc:
        raise KosError(f"The manifest is not a DICOM Part 10 file: {exc}") from exc
    if len(dataset) == 0:
        raise KosError("The manifest is not a DICOM Part 10 file: it holds no data set")
    return dataset


def _manifest(ds: Dataset) -> KosManifest:
    sop_class = _text(ds, "SOPClassUID") or _text(ds.file_meta, "MediaStorageSOPClassUID")
    if sop_class is None:
        raise KosError("The manifest has no SOP Class UID (0008,0016)")
    if sop_class != KeyObjectSelectionDocumentStorage:
        name = UID(sop_class).name
        raise KosError(
            f"Not a Key Object Selection Document: the SOP Class UID is {sop_class} ({name}), "
            f"expected {KeyObjectSelectionDocumentStorage}"
        )
    study_uid = _text(ds, "StudyInstanceUID")
    if study_uid is None:
        raise KosError("The manifest lacks the Study Instance UID (0020,000D)")
    if not is_uid(study_uid):
        raise KosError(f"The Study Instance UID (0020,000D) {study_uid!r} is not a valid UID")
    series, other_studies = _evidence(ds, study_uid)
    modalities = _codes(ds, "ModalitiesInStudy") or _ordered(s.modality for s in series)
    titles = _items(ds, "ConceptNameCodeSequence")
    return KosManifest(
        sop_instance_uid=_text(ds, "SOPInstanceUID") or "",
        study_uid=study_uid,
        patient=_patient(ds),
        series=series,
        accession_number=_text(ds, "AccessionNumber"),
        accession_issuer=_issuer(next(iter(_items(ds, "IssuerOfAccessionNumberSequence")), None)),
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        timezone_offset=_text(ds, "TimezoneOffsetFromUTC"),
        study_description=_text(ds, "StudyDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        title=_code(titles[0]) if titles else None,
        content_date=_text(ds, "ContentDate"),
        content_time=_text(ds, "ContentTime"),
        modalities=modalities,
        other_studies=other_studies,
    )


def _patient(ds: Dataset) -> KosPatient:
    """PS3.3 C.7.1.1 Patient Module."""
    qualifiers = next(iter(_items(ds, "IssuerOfPatientIDQualifiersSequence")), Dataset())
    issuer = KosIssuer(
        local_namespace=_text(ds, "IssuerOfPatientID"),
        universal_id=_text(qualifiers, "UniversalEntityID"),
        universal_id_type=_text(qualifiers, "UniversalEntityIDType"),
    )
    sex = (_text(ds, "PatientSex") or "").upper()
    return KosPatient(
        id=_text(ds, "PatientID"),
        issuer=issuer if issuer != KosIssuer() else None,
        identifier_type_code=_text(qualifiers, "IdentifierTypeCode"),
        name=_text(ds, "PatientName"),
        birth_date=fhir_date(_text(ds, "PatientBirthDate")),
        sex=sex if sex in {"M", "F", "O"} else None,
    )


def _issuer(item: Dataset | None) -> KosIssuer | None:
    """An Issuer of Accession Number Sequence item (PS3.3 10.12); None when it names nobody."""
    if item is None:
        return None
    issuer = KosIssuer(
        local_namespace=_text(item, "LocalNamespaceEntityID"),
        universal_id=_text(item, "UniversalEntityID"),
        universal_id_type=_text(item, "UniversalEntityIDType"),
    )
    return issuer if issuer != KosIssuer() else None


def _evidence(ds: Dataset, study_uid: str) -> tuple[tuple[KosSeries, ...], tuple[str, ...]]:
    """Current Requested Procedure Evidence Sequence (0040,A375), PS3.3 C.17.6.2: the series and
    instances of `study_uid` (merged when listed twice), and the other studies referenced."""
    evidence = _items(ds, "CurrentRequestedProcedureEvidenceSequence")
    if not evidence:
        raise KosError(
            "The manifest references no instances: its Current Requested Procedure Evidence "
            "Sequence (0040,A375) is missing or empty"
        )
    library = _image_library(ds)
    instance_numbers = _instance_numbers(ds)
    found: dict[str, tuple[KosRetrieve, dict[str, KosInstance]]] = {}
    others: list[str] = []
    for study in evidence:
        uid = _text(study, "StudyInstanceUID") or study_uid
        if uid != study_uid:
            others.append(uid)
            continue
        for item in _items(study, "ReferencedSeriesSequence"):
            series_uid = _uid(item, "SeriesInstanceUID", "a referenced series")
            _, instances = found.setdefault(series_uid, (_retrieve(item), {}))
            for ref in _items(item, "ReferencedSOPSequence"):
                instance_uid = _uid(ref, "ReferencedSOPInstanceUID", f"series {series_uid}")
                sop_class = _uid(ref, "ReferencedSOPClassUID", f"instance {instance_uid}")
                number = instance_numbers.get(instance_uid)
                instances[instance_uid] = KosInstance(sop_class, instance_uid, number)
    series = tuple(
        _series(uid, retrieve, tuple(instances.values()), library.get(uid, {}))
        for uid, (retrieve, instances) in found.items()
        if instances
    )
    if not series:
        raise KosError(
            f"The manifest references no instances of its study {study_uid} in its Current "
            "Requested Procedure Evidence Sequence (0040,A375)"
        )
    return series, tuple(dict.fromkeys(others))


def _series(
    uid: str, retrieve: KosRetrieve, instances: tuple[KosInstance, ...], facts: dict[str, str]
) -> KosSeries:
    modality = facts.get("modality")
    if modality is None:
        implied = {modality_of_sop_class(i.sop_class_uid) for i in instances}
        modality = implied.pop() if len(implied) == 1 else None
    return KosSeries(
        uid=uid,
        instances=instances,
        retrieve=retrieve,
        modality=modality,
        number=_int(facts.get("number")),
        description=facts.get("description"),
    )


def _retrieve(item: Dataset) -> KosRetrieve:
    """PS3.3 Table 10-4 Hierarchical Series Reference Macro: where the series is retrieved."""
    titles = item.get("RetrieveAETitle") if "RetrieveAETitle" in item else None
    if isinstance(titles, str):
        titles = [titles]
    return KosRetrieve(
        url=_text(item, "RetrieveURL"),
        location_uid=_text(item, "RetrieveLocationUID"),
        ae_titles=tuple(str(t).strip() for t in titles or [] if str(t).strip()),
    )


def _image_library(ds: Dataset) -> dict[str, dict[str, str]]:
    """Series facts of a MADO Image Library (TID 1600/1602): modality, number and description
    by Series Instance UID, from every container that names a series."""
    library: dict[str, dict[str, str]] = {}
    for item in _content_items(ds):
        children = _items(item, "ContentSequence")
        facts: dict[str, str] = {}
        for child in children:
            concept = _concept(child)
            if concept is None:
                continue
            key, meaning = concept
            if key == _SERIES_UID and _text(child, "UID"):
                facts["uid"] = _text(child, "UID") or ""
            elif key == _MODALITY:
                value = _concept_value(child)
                if value:
                    facts["modality"] = value
            elif key == _SERIES_NUMBER or meaning == "series number":
                value = _text(child, "TextValue") or _numeric(child)
                if value:
                    facts["number"] = value
            elif key == _SERIES_DESCRIPTION or meaning == "series description":
                value = _text(child, "TextValue")
                if value:
                    facts["description"] = value
        if "uid" in facts:
            library[facts.pop("uid")] = facts
    return library


def _instance_numbers(ds: Dataset) -> dict[str, int]:
    """Instance Number of the MADO Image Library entries (TID 1601) that give one."""
    numbers: dict[str, int] = {}
    for item in _content_items(ds):
        refs = _items(item, "ReferencedSOPSequence")
        if not refs:
            continue
        for child in _items(item, "ContentSequence"):
            concept = _concept(child)
            if concept and concept[1] == "instance number":
                number = _int(_text(child, "TextValue") or _numeric(child))
                uid = _text(refs[0], "ReferencedSOPInstanceUID")
                if number is not None and uid:
                    numbers[uid] = number
    return numbers


def _content_items(ds: Dataset) -> Iterator[Dataset]:
    """Every content item of the SR content tree (PS3.3 C.17.3), depth first."""
    stack = list(reversed(_items(ds, "ContentSequence")))
    while stack:
        item = stack.pop()
        yield item
        stack.extend(reversed(_items(item, "ContentSequence")))


def _concept(item: Dataset) -> tuple[tuple[str, str], str] | None:
    names = _items(item, "ConceptNameCodeSequence")
    if not names:
        return None
    code = _code(names[0])
    return (code.scheme, code.value), code.meaning.lower()


def _concept_value(item: Dataset) -> str | None:
    codes = _items(item, "ConceptCodeSequence")
    return _text(codes[0], "CodeValue") if codes else None


def _numeric(item: Dataset) -> str | None:
    values = _items(item, "MeasuredValueSequence")
    return _text(values[0], "NumericValue") if values else None


def _code(item: Dataset) -> KosCode:
    return KosCode(
        value=_text(item, "CodeValue") or "",
        scheme=_text(item, "CodingSchemeDesignator") or "",
        meaning=_text(item, "CodeMeaning") or "",
    )


def _uid(item: Dataset, keyword: str, where: str) -> str:
    value = _text(item, keyword)
    if value is None:
        raise KosError(f"The manifest lists {where} without its {keyword}")
    if not is_uid(value):
        raise KosError(f"The manifest lists {where} with an invalid {keyword} {value!r}")
    return value


def _items(item: Dataset, keyword: str) -> list[Dataset]:
    """The items of a sequence; [] when absent or not a sequence."""
    if keyword not in item:
        return []
    value = item[keyword].value
    return list(value) if isinstance(value, Sequence) else []


def _text(item: Dataset, keyword: str) -> str | None:
    """The first value of an element as text, whatever VR the file gave it; None when empty.

    Numbers (IS, DS) keep the digits as written, so accession numbers keep leading zeros.
    """
    if keyword not in item:
        return None
    value: Any = item[keyword].value
    if isinstance(value, Sequence) or value is None:
        return None
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else None
        if value is None:
            return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    written = getattr(value, "original_string", None)  # IS and DS keep it as a str
    text = (written if isinstance(written, str) and written else str(value)).strip(" \x00")
    return text or None


def _codes(item: Dataset, keyword: str) -> tuple[str, ...]:
    """All values of a multi-valued CS element (Modalities in Study)."""
    if keyword not in item:
        return ()
    value = item[keyword].value
    values = [value] if isinstance(value, str) else list(value or [])
    return _ordered(str(v).strip() for v in values)


def _ordered(values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None
