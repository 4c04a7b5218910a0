"""DICOM value representations (PS3.5 6.2) ⇄ FHIR primitives: DA/TM + Timezone Offset From UTC
⇄ dateTime, PN ⇄ HumanName; and what a SOP Class says about modality and SR value type."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any

from pydicom import uid as sop

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"
RFC3986_SYSTEM = "urn:ietf:rfc:3986"
V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"

_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")  # PS3.5 6.2 DA (and the retired YYYY.MM.DD)
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(\.\d{1,6})?)?)?$")  # HH[MM[SS[.F{1,6}]]]
_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")  # Timezone Offset From UTC (0008,0201)
_FHIR_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2}))?)?)?$"
)


def fhir_date(da: str | None) -> str | None:
    """A DICOM DA value as a FHIR date (YYYY-MM-DD); None when absent or malformed."""
    match = _DA.match((da or "").strip())
    if not match:
        return None
    year, month, day = (int(part) for part in match.groups())
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _fhir_time(tm: str | None) -> str | None:
    """A DICOM TM as FHIR hh:mm:ss[.fff]: missing minutes and seconds become zero."""
    match = _TM.match((tm or "").strip())
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        return None
    return f"{hours}:{minutes or '00'}:{seconds or '00'}{fraction or ''}"


def _fhir_offset(offset: str | None) -> str | None:
    """Timezone Offset From UTC (+HHMM) as a FHIR zone (+HH:MM)."""
    match = _OFFSET.match((offset or "").strip())
    if not match:
        return None
    sign, hours, minutes = match.groups()
    if int(hours) > 14 or int(minutes) > 59:
        return None
    return f"{sign}{hours}:{minutes}"


def fhir_datetime(
    da: str | None, tm: str | None, offset: str | None, *, zone: tzinfo | None = None
) -> str | None:
    """FHIR dateTime for a DICOM date, time and Timezone Offset From UTC (PS3.3 C.12.1 SOP Common).

    A dateTime with a time needs a zone: without an offset in the dataset, `zone` (for
    example ZoneInfo("Europe/Paris"), the site's) gives it; without either the value keeps
    only its date.
    """
    day = fhir_date(da)
    if day is None:
        return None
    clock = _fhir_time(tm)
    if clock is None:
        return day
    suffix = _fhir_offset(offset)
    if suffix is None and zone is not None:
        local = datetime.fromisoformat(f"{day}T{clock[:8]}").replace(tzinfo=zone)
        suffix = local.isoformat()[19:] or None
    if suffix is None:
        return day
    return f"{day}T{clock}{suffix}"


def dicom_datetime(value: str | None) -> tuple[str, str, str | None]:
    """A FHIR date or dateTime as DICOM (DA, TM, Timezone Offset From UTC or None).

    Partial dates (a year, a month) have no DA form and come back empty.
    """
    match = _FHIR_DATETIME.match((value or "").strip())
    if not match or match.group(3) is None:
        return "", "", None
    year, month, day, hours, minutes, seconds, fraction, zone = match.groups()
    da = f"{year}{month}{day}"
    if hours is None:
        return da, "", None
    tm = f"{hours}{minutes}{seconds}{(fraction or '')[:7]}"
    offset = "+0000" if zone == "Z" else zone.replace(":", "")
    return da, tm, offset


def dicom_now(now: datetime, offset: str | None) -> tuple[str, str]:
    """DA and TM of an aware `now` as seen in the dataset's Timezone Offset From UTC (+HHMM),
    which applies to every date and time of the instance (PS3.3 C.12.1 SOP Common)."""
    match = _OFFSET.match(offset or "")
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        now = now.astimezone(timezone(delta if sign == "+" else -delta))
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def offset_of(now: datetime) -> str:
    """Timezone Offset From UTC (+HHMM) of an aware datetime."""
    text = now.strftime("%z")
    return text or "+0000"


def pn_display(pn: str | None) -> str | None:
    """Human-readable text for a DICOM PN (PS3.5 6.2.1): 'Dr John Paul DOE Jr'."""
    alphabetic = (pn or "").split("=")[0]
    parts = [part.strip() for part in alphabetic.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    text = " ".join(p for p in (prefix, given, middle, family, suffix) if p)
    return text or None


def pn_from_human_name(name: dict[str, Any]) -> str:
    """A FHIR HumanName as DICOM PN: family^given^middle^prefix^suffix."""
    given = [str(g) for g in name.get("given") or []]
    components = [
        str(name.get("family") or ""),
        given[0] if given else "",
        " ".join(given[1:]),
        " ".join(str(p) for p in name.get("prefix") or []),
        " ".join(str(s) for s in name.get("suffix") or []),
    ]
    if not any(components) and name.get("text"):
        components[0] = str(name["text"])
    return "^".join(components).rstrip("^")


def pn_from_display(display: str | None) -> str:
    """Free text (a Reference.display) as PN: kept whole in the family-name component."""
    text = (display or "").strip().replace("\\", " ")
    return text if "^" in text else text.replace("=", " ")


_GENDER_SEX = {"male": "M", "female": "F", "other": "O"}


def sex_from_gender(gender: str | None) -> str:
    """FHIR administrative gender as Patient's Sex (0010,0040); unknown stays empty."""
    return _GENDER_SEX.get(gender or "", "")


# Storage SOP Class → modality (PS3.3 C.7.3.1.1.1 defined terms), for series a manifest
# does not describe: KOS and SR documents carry their own modality codes too.
_MODALITY_BY_SOP_CLASS: dict[str, str] = {
    sop.CTImageStorage: "CT",
    sop.EnhancedCTImageStorage: "CT",
    sop.LegacyConvertedEnhancedCTImageStorage: "CT",
    sop.MRImageStorage: "MR",
    sop.EnhancedMRImageStorage: "MR",
    sop.EnhancedMRColorImageStorage: "MR",
    sop.LegacyConvertedEnhancedMRImageStorage: "MR",
    sop.MRSpectroscopyStorage: "MR",
    sop.ComputedRadiographyImageStorage: "CR",
    sop.DigitalXRayImageStorageForPresentation: "DX",
    sop.DigitalXRayImageStorageForProcessing: "DX",
    sop.DigitalMammographyXRayImageStorageForPresentation: "MG",
    sop.DigitalMammographyXRayImageStorageForProcessing: "MG",
    sop.BreastTomosynthesisImageStorage: "MG",
    sop.DigitalIntraOralXRayImageStorageForPresentation: "IO",
    sop.UltrasoundImageStorage: "US",
    sop.UltrasoundMultiFrameImageStorage: "US",
    sop.EnhancedUSVolumeStorage: "US",
    sop.XRayAngiographicImageStorage: "XA",
    sop.EnhancedXAImageStorage: "XA",
    sop.XRayRadiofluoroscopicImageStorage: "RF",
    sop.EnhancedXRFImageStorage: "RF",
    sop.NuclearMedicineImageStorage: "NM",
    sop.PositronEmissionTomographyImageStorage: "PT",
    sop.EnhancedPETImageStorage: "PT",
    sop.LegacyConvertedEnhancedPETImageStorage: "PT",
    sop.SegmentationStorage: "SEG",
    sop.RTImageStorage: "RTIMAGE",
    sop.RTDoseStorage: "RTDOSE",
    sop.RTStructureSetStorage: "RTSTRUCT",
    sop.RTPlanStorage: "RTPLAN",
    sop.GrayscaleSoftcopyPresentationStateStorage: "PR",
    sop.ColorSoftcopyPresentationStateStorage: "PR",
    sop.KeyObjectSelectionDocumentStorage: "KO",
    sop.BasicTextSRStorage: "SR",
    sop.EnhancedSRStorage: "SR",
    sop.ComprehensiveSRStorage: "SR",
    sop.Comprehensive3DSRStorage: "SR",
    sop.XRayRadiationDoseSRStorage: "SR",
    sop.EncapsulatedPDFStorage: "DOC",
    sop.EncapsulatedCDAStorage: "DOC",
    sop.VLEndoscopicImageStorage: "ES",
    sop.VideoEndoscopicImageStorage: "ES",
    sop.VLPhotographicImageStorage: "XC",
    sop.VideoPhotographicImageStorage: "XC",
    sop.VLWholeSlideMicroscopyImageStorage: "SM",
    sop.OphthalmicPhotography8BitImageStorage: "OP",
    sop.OphthalmicPhotography16BitImageStorage: "OP",
    sop.OphthalmicTomographyImageStorage: "OPT",
    sop.TwelveLeadECGWaveformStorage: "ECG",
    sop.GeneralECGWaveformStorage: "ECG",
}


def modality_of_sop_class(sop_class_uid: str) -> str | None:
    """The modality that a Storage SOP Class implies, when it implies one."""
    return _MODALITY_BY_SOP_CLASS.get(sop_class_uid)


def sr_value_type(sop_class_uid: str) -> str:
    """How TID 2010 references an instance of this SOP Class: IMAGE for image storage,
    WAVEFORM for waveforms, COMPOSITE for anything else (PS3.3 C.17.3.2.1)."""
    name = sop.UID(sop_class_uid).name
    if "Image Storage" in name:
        return "IMAGE"
    if "Waveform Storage" in name:
        return "WAVEFORM"
    return "COMPOSITE"
