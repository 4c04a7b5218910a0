"""DICOM Key Object Selection (KOS) manifests ⇄ FHIR ImagingStudy, as pure functions.

An XDS-I.b imaging manifest is a Key Object Selection Document (DICOM PS3.3 A.35.4, SOP Class
1.2.840.10008.5.1.4.1.1.88.59): `parse_kos` reads one into a `KosManifest`, `imaging_study`
turns that into a FHIR R4 ImagingStudy, and `kos_from_imaging_study` writes a KOS for an
ImagingStudy (the `$kos` operation, for XDS-I consumers).
"""

from __future__ import annotations

from app.imaging.manifest import (
    KosCode,
    KosError,
    KosInstance,
    KosIssuer,
    KosManifest,
    KosPatient,
    KosRetrieve,
    KosSeries,
)
from app.imaging.reader import parse_kos
from app.imaging.study import imaging_study
from app.imaging.writer import RIX_UID_ROOT, kos_from_imaging_study

__all__ = [
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
]
