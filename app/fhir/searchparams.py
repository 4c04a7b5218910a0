"""Search-parameter definitions as data: the R4 set for our types plus the common `_` ones."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from app.fhir.fhirpath import Path, compile_path

SEARCH_TYPES = ("token", "string", "date", "reference", "uri", "number")

# Parameters every type has. `_id` and `_lastUpdated` live on the resource row itself.
COMMON = (
    ("_id", "token", None),
    ("_lastUpdated", "date", None),
    ("_tag", "token", "{type}.meta.tag"),
    ("_security", "token", "{type}.meta.security"),
    ("_profile", "uri", "{type}.meta.profile"),
)


_R5_DOCREF = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DocumentReference"
_MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition"

# Parameters defined by the IHE profiles RIX implements, beyond (or instead of) the R4 set.
PROFILE_PARAMS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # MHD ITI-67 `creation`; MADO's imaging parameters (the R5 extensions MADO uses on R4).
    "DocumentReference": (
        ("creation", "date", "DocumentReference.content.attachment.creation"),
        (
            "study-instance-uid",
            "token",
            "DocumentReference.context.related.identifier.where(system='urn:dicom:uid')",
        ),
        (
            "accession-number",
            "token",
            "DocumentReference.context.related.identifier.where(type.coding.code='ACSN')",
        ),
        ("modality", "token", f"DocumentReference.extension('{_R5_DOCREF}.modality').value"),
        (
            "anatomical-region",
            "token",
            f"DocumentReference.extension('{_R5_DOCREF}.bodySite').extension('concept').value",
        ),
    ),
    # R4 searches `modality` on the series only; a study registered without its series (a
    # MADO FHIR manifest, a RIS feed) lists its modalities at study level: both count.
    "ImagingStudy": (
        ("modality", "token", "ImagingStudy.series.modality | ImagingStudy.modality"),
    ),
    # MHD ITI-66 on the SubmissionSet and Folder Lists.
    "List": (
        ("designationType", "token", f"List.extension('{_MHD}/ihe-designationType').value"),
        ("sourceId", "token", f"List.extension('{_MHD}/ihe-sourceId').value"),
    ),
    # PDQm ITI-78 (the R4 extension search parameter patient-extensions-Patient-mothersMaidenName).
    "Patient": (
        (
            "mothersMaidenName",
            "string",
            "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName')"
            ".value",
        ),
    ),
}


@dataclass(frozen=True)
class SearchParam:
    """One search parameter of one resource type."""

    code: str
    type: str
    expression: str | None
    targets: tuple[str, ...] = ()
    description: str = ""
    path: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        code: str,
        type_: str,
        expression: str | None,
        targets: tuple[str, ...] = (),
        description: str = "",
    ) -> SearchParam:
        """A parameter with its expression compiled (raises on an unsupported expression)."""
        if type_ not in SEARCH_TYPES:
            raise ValueError(f"search type {type_!r} of {code!r} is not supported")
        path = compile_path(expression) if expression else None
        return cls(code, type_, expression, targets, description, path)


def load_definitions() -> dict[str, list[dict[str, Any]]]:
    """The R4 SearchParameter definitions in app/fhir/data (from scripts/gen_fhir_data.py)."""
    text = resources.files("app.fhir").joinpath("data/search_parameters.json").read_text("utf-8")
    data: dict[str, list[dict[str, Any]]] = json.loads(text)
    return data


def params_for(type_name: str, definitions: dict[str, list[dict[str, Any]]]) -> list[SearchParam]:
    """The common parameters plus the type's own definitions."""
    out = [
        SearchParam.build(code, type_, expr.format(type=type_name) if expr else None)
        for code, type_, expr in COMMON
    ]
    profile = [SearchParam.build(*p) for p in PROFILE_PARAMS.get(type_name, ())]
    overridden = {p.code for p in profile}
    for d in definitions.get(type_name, []):
        if d["code"] not in overridden:
            out.append(
                SearchParam.build(d["code"], d["type"], d["expression"], tuple(d.get("target", ())))
            )
    return out + profile
