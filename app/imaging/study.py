"""A FHIR R4 ImagingStudy for a KOS manifest (the mapping of IHE RAD MADO, Table 4.3-1): the
study and its series and instances, pointing at RIX's own WADO-RS Endpoint."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from app.errors import Invalid
from app.fhir.models import validate
from app.imaging.manifest import KosError, KosManifest, KosSeries
from app.imaging.values import (
    DCM_SYSTEM,
    DICOM_UID_SYSTEM,
    RFC3986_SYSTEM,
    V2_0203_SYSTEM,
    fhir_datetime,
    pn_display,
)

# DICOM PS3.3 C.7.3.1.1.1: "OT" (Other) stands for a series whose modality the manifest does not
# say and its SOP classes do not imply; ImagingStudy.series.modality is required (1..1).
UNKNOWN_MODALITY = "OT"


def imaging_study(
    manifest: KosManifest,
    *,
    patient_reference: str,
    endpoint_reference: str | None,
    started_fallback: str | None = None,
    zone: tzinfo | None = None,
) -> dict[str, Any]:
    """The ImagingStudy (R4 JSON) that `manifest` describes, validated against the R4 model.

    `patient_reference` is the subject ("Patient/123"); `endpoint_reference` is RIX's own
    WADO-RS Endpoint ("Endpoint/rix-wado"), never the site's URL found in the manifest.
    `started` is Study Date + Study Time + Timezone Offset From UTC; `zone` supplies the offset
    when the manifest has none, and `started_fallback` (a FHIR dateTime) is used when the
    manifest has no Study Date.
    """
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": _identifiers(manifest),
        "status": "available",
        "subject": {"reference": patient_reference},
    }
    if manifest.modalities:
        study["modality"] = [{"system": DCM_SYSTEM, "code": m} for m in manifest.modalities]
    started = fhir_datetime(
        manifest.study_date, manifest.study_time, manifest.timezone_offset, zone=zone
    )
    if started or started_fallback:
        study["started"] = started or started_fallback
    referrer = pn_display(manifest.referring_physician)
    if referrer:
        study["referrer"] = {"display": referrer}
    if endpoint_reference:
        study["endpoint"] = [{"reference": endpoint_reference}]
    study["numberOfSeries"] = len(manifest.series)
    study["numberOfInstances"] = manifest.number_of_instances
    if manifest.study_description:
        study["description"] = manifest.study_description
    study["series"] = [_series(series) for series in manifest.series]
    try:
        return validate(study, "ImagingStudy")
    except Invalid as exc:
        raise KosError(f"The manifest gives an invalid ImagingStudy: {exc.diagnostics}") from exc


def _identifiers(manifest: KosManifest) -> list[dict[str, Any]]:
    """Study Instance UID (urn:dicom:uid, urn:oid:...) and Accession Number (ACSN)."""
    identifiers: list[dict[str, Any]] = [
        {
            "use": "official",
            "system": DICOM_UID_SYSTEM,
            "value": f"urn:oid:{manifest.study_uid}",
        }
    ]
    if manifest.accession_number:
        accession: dict[str, Any] = {
            "use": "usual",
            "type": {"coding": [{"system": V2_0203_SYSTEM, "code": "ACSN"}]},
        }
        system = manifest.accession_issuer.system if manifest.accession_issuer else None
        if system:
            accession["system"] = system
        accession["value"] = manifest.accession_number
        identifiers.append(accession)
    return identifiers


def _series(series: KosSeries) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": series.uid}
    if series.number is not None and series.number >= 0:
        out["number"] = series.number
    out["modality"] = {"system": DCM_SYSTEM, "code": series.modality or UNKNOWN_MODALITY}
    if series.description:
        out["description"] = series.description
    out["numberOfInstances"] = len(series.instances)
    instances = []
    for instance in series.instances:
        item: dict[str, Any] = {
            "uid": instance.sop_instance_uid,
            "sopClass": {"system": RFC3986_SYSTEM, "code": f"urn:oid:{instance.sop_class_uid}"},
        }
        if instance.number is not None and instance.number >= 0:
            item["number"] = instance.number
        instances.append(item)
    out["instance"] = instances
    return out
