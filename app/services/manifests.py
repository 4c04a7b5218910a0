"""`GET /fhir/ImagingStudy/{id}/$kos`: an ImagingStudy as the XDS-I.b imaging manifest (DICOM
KOS, PS3.3 A.35.4) that XDS-I consumers expect, read through the policy like any read."""

from __future__ import annotations

from typing import Any

from app.imaging.kos import kos_from_imaging_study
from app.services.resources import ResourceService


def kos_of(svc: ResourceService, study_id: str) -> bytes:
    """The KOS of a study the caller may see (404 otherwise), with its patient's demographics
    when the caller may see them too."""
    study = svc.read("ImagingStudy", study_id)
    subject = (study.resource.get("subject") or {}).get("reference", "")
    patient = None
    if isinstance(subject, str) and subject.startswith("Patient/"):
        stored = svc.repo.current("Patient", subject.split("/", 1)[1])
        if stored is not None and not stored.deleted and svc.visible(stored):
            patient = stored.resource
    return kos_from_imaging_study(
        study.resource, patient=patient, retrieve_url=_retrieve_url(svc, study.resource)
    )


def _retrieve_url(svc: ResourceService, study: dict[str, Any]) -> str | None:
    """WADO-RS of the study at its Endpoint (RIX's own DICOMweb), when both are known."""
    uid = next(
        (
            str(i["value"]).removeprefix("urn:oid:")
            for i in study.get("identifier", []) or []
            if i.get("system") == "urn:dicom:uid" and i.get("value")
        ),
        None,
    )
    for ref in study.get("endpoint", []) or []:
        target = str(ref.get("reference", ""))
        if uid and target.startswith("Endpoint/"):
            endpoint = svc.repo.current("Endpoint", target.split("/", 1)[1])
            if endpoint is not None and not endpoint.deleted:
                return f"{str(endpoint.resource.get('address', '')).rstrip('/')}/studies/{uid}"
    return None
