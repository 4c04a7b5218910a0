"""What an XDS-I.b imaging manifest says, as typed values: the facts `parse_kos` reads from a
Key Object Selection Document (DICOM PS3.3 A.35.4) and `imaging_study` turns into FHIR."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.errors import Invalid

_OID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


class KosError(Invalid):
    """A manifest that cannot be read or written; the message names the problem.

    An `Invalid` (HTTP 400 with an OperationOutcome at the edge): the fault is in the data.
    """


def is_uid(value: str) -> bool:
    """True for a well-formed DICOM UID (PS3.5 9.1: digits and dots, at most 64 characters)."""
    return len(value) <= 64 and bool(_OID.match(value))


@dataclass(frozen=True)
class KosIssuer:
    """An assigning authority: Issuer of Patient ID (0010,0021) with its qualifiers
    (0010,0024), or an Issuer of Accession Number Sequence (0008,0051) item (PS3.3 10.12
    HL7v2 Hierarchic Designator Macro)."""

    local_namespace: str | None = None
    universal_id: str | None = None
    universal_id_type: str | None = None  # ISO, UUID, URI, DNS, X400, ... (PS3.3 10.14)

    @property
    def system(self) -> str | None:
        """The FHIR identifier system this issuer stands for, when it names one."""
        kind = (self.universal_id_type or "").upper()
        if self.universal_id:
            if kind == "ISO" and is_uid(self.universal_id):
                return f"urn:oid:{self.universal_id}"
            if kind == "UUID":
                return f"urn:uuid:{self.universal_id.lower()}"
            if kind in {"URI", "URL"} and _URI_SCHEME.match(self.universal_id):
                return self.universal_id
        local = self.local_namespace
        if local and is_uid(local):
            return f"urn:oid:{local}"
        if local and _URI_SCHEME.match(local):
            return local
        return None


@dataclass(frozen=True)
class KosPatient:
    """PS3.3 C.7.1.1 Patient Module, as far as a manifest needs it."""

    id: str | None
    issuer: KosIssuer | None = None
    identifier_type_code: str | None = None  # (0040,0035) in the qualifiers, e.g. MR
    name: str | None = None  # Patient's Name (0010,0010) as DICOM PN: FAMILY^Given^Middle
    birth_date: str | None = None  # FHIR date (YYYY-MM-DD)
    sex: str | None = None  # M, F or O

    @property
    def gender(self) -> str | None:
        """FHIR administrative gender for Patient's Sex (0010,0040)."""
        return {"M": "male", "F": "female", "O": "other"}.get(self.sex or "")


@dataclass(frozen=True)
class KosCode:
    """A coded entry (PS3.3 8.8 Code Sequence Macro)."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class KosRetrieve:
    """Where a series can be fetched from (PS3.3 Table 10-4 Hierarchical Series Reference
    Macro): the site's WADO-RS URL, its XDS-I Imaging Document Source UID, its AE titles."""

    url: str | None = None  # Retrieve URL (0008,1190)
    location_uid: str | None = None  # Retrieve Location UID (0040,E011)
    ae_titles: tuple[str, ...] = ()  # Retrieve AE Title (0008,0054)


@dataclass(frozen=True)
class KosInstance:
    """One referenced SOP instance (PS3.3 Table 10-11 SOP Instance Reference Macro)."""

    sop_class_uid: str
    sop_instance_uid: str
    number: int | None = None  # only when a MADO Image Library entry gives it


@dataclass(frozen=True)
class KosSeries:
    """One referenced series; modality, number and description come from a MADO Image Library
    (TID 1600) when present, else the modality is inferred from the SOP classes."""

    uid: str
    instances: tuple[KosInstance, ...]
    retrieve: KosRetrieve = KosRetrieve()
    modality: str | None = None
    number: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class KosManifest:
    """An imaging manifest: one study, its referenced series and instances."""

    sop_instance_uid: str
    study_uid: str
    patient: KosPatient
    series: tuple[KosSeries, ...]
    accession_number: str | None = None
    accession_issuer: KosIssuer | None = None
    study_date: str | None = None  # DICOM DA (YYYYMMDD), as found
    study_time: str | None = None  # DICOM TM (HHMMSS.FFFFFF), as found
    timezone_offset: str | None = None  # Timezone Offset From UTC (0008,0201): +HHMM
    study_description: str | None = None
    referring_physician: str | None = None  # DICOM PN
    title: KosCode | None = None  # document title: Concept Name Code Sequence (0040,A043)
    content_date: str | None = None
    content_time: str | None = None
    modalities: tuple[str, ...] = ()  # of the study: never the manifest's own KO
    other_studies: tuple[str, ...] = ()  # evidence from other studies, left out of `series`

    @property
    def number_of_instances(self) -> int:
        """How many instances the manifest references in its study."""
        return sum(len(series.instances) for series in self.series)
