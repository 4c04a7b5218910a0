"""IHE MHD 4.2 Document Recipient rules (ITI-65 Provide Document Bundle, Comprehensive
metadata), checked on the Bundle before it runs: one SubmissionSet List, DocumentReferences
with the metadata MHD requires, and each document's content present with the size and SHA-1
hash its DocumentReference declares (FHIR R4 Attachment: base64 SHA-1). The transaction itself is
the ordinary atomic FHIR transaction; what document writes imply (replacements, imaging
manifests) is `app.services.documents`."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from app.errors import Invalid, Issue, Unprocessable

MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
SOURCE_ID_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
DESIGNATION_TYPE_URL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
_MHD_SD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD."
MINIMAL = f"{_MHD_SD}Minimal.ProvideBundle"
COMPREHENSIVE = f"{_MHD_SD}Comprehensive.ProvideBundle"
UNCONTAINED = f"{_MHD_SD}UnContained.Comprehensive.ProvideBundle"
PROVIDE_BUNDLE_PROFILES = frozenset((MINIMAL, COMPREHENSIVE, UNCONTAINED))


@dataclass(frozen=True)
class Level:
    """The metadata a Provide Bundle declares (Bundle.meta.profile): Minimal unless it declares
    one of the Comprehensive profiles; `contained` when author, authenticator and
    sourcePatientInfo must be contained resources (Comprehensive, not UnContained)."""

    comprehensive: bool
    contained: bool

    @classmethod
    def of(cls, bundle: dict[str, Any]) -> Level:
        profiles = set((bundle.get("meta") or {}).get("profile") or [])
        contained = COMPREHENSIVE in profiles
        return cls(comprehensive=contained or UNCONTAINED in profiles, contained=contained)


def _has_code(concept: Any, system: str, code: str) -> bool:
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    return any(c.get("system") == system and c.get("code") == code for c in codings)


def is_submission_set(resource: Any) -> bool:
    """True for a List that is an MHD SubmissionSet."""
    return (
        isinstance(resource, dict)
        and resource.get("resourceType") == "List"
        and _has_code(resource.get("code"), MHD_LIST_TYPES, "submissionset")
    )


def is_provide_bundle(bundle: dict[str, Any]) -> bool:
    """An ITI-65 Provide Document Bundle: declared by profile, or carrying a SubmissionSet."""
    profiles = set((bundle.get("meta") or {}).get("profile") or [])
    entries = bundle.get("entry") or []
    return bool(profiles & PROVIDE_BUNDLE_PROFILES) or any(
        isinstance(e, dict) and is_submission_set(e.get("resource")) for e in entries
    )


def check_provide_bundle(bundle: dict[str, Any]) -> None:
    """Refuse (400/422, every problem listed) a Provide Document Bundle that MHD would refuse
    at the metadata level it declares (Minimal, or Comprehensive with or without contained
    references: the Document Recipient's Comprehensive Metadata Option); fill in the size and
    hash of attachments that leave them out."""
    level = Level.of(bundle)
    problems: list[Issue] = []
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    by_url = {str(e["fullUrl"]): e.get("resource") for e in entries if e.get("fullUrl")}
    lists = [
        (i, e["resource"]) for i, e in enumerate(entries) if is_submission_set(e.get("resource"))
    ]
    if len(lists) != 1:
        problems.append(
            Issue(
                "invalid",
                f"An ITI-65 Bundle carries exactly one SubmissionSet List ({len(lists)} found)",
                expression=["Bundle.entry"],
            )
        )
    for i, submission in lists:
        problems += _check_submission_set(submission, f"Bundle.entry[{i}].resource", level)
    problems += _check_membership(entries, [submission for _, submission in lists])
    for i, entry in enumerate(entries):
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource.get("resourceType") == "DocumentReference":
            where = f"Bundle.entry[{i}].resource"
            problems += _check_document(resource, where, by_url)
            if level.comprehensive:
                problems += _check_comprehensive(resource, where, level)
    if problems:
        invalid = [p for p in problems if p.code != "business-rule"]
        error = Invalid if invalid else Unprocessable
        raise error(
            "The Provide Document Bundle does not meet IHE MHD: "
            + "; ".join(p.diagnostics for p in problems),
            issues=problems,
        )


def _check_membership(entries: list[dict[str, Any]], lists: list[dict[str, Any]]) -> list[Issue]:
    """Every document is a member of the SubmissionSet, about the SubmissionSet's patient
    (XDS: XDSPatientIdDoesNotMatch)."""
    out: list[Issue] = []
    if len(lists) != 1:
        return out
    submission = lists[0]
    members = {(e.get("item") or {}).get("reference") for e in submission.get("entry", []) or []}
    patient = (submission.get("subject") or {}).get("reference")
    subjects = set()
    for i, entry in enumerate(entries):
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "DocumentReference":
            continue
        where = f"Bundle.entry[{i}].resource"
        if entry.get("fullUrl") not in members:
            out.append(
                Issue(
                    "invalid",
                    "a DocumentReference of the Bundle is not an entry of the SubmissionSet",
                    expression=[where],
                )
            )
        subject = (resource.get("subject") or {}).get("reference")
        subjects.add(subject)
        if patient and subject != patient:
            out.append(
                Issue(
                    "invalid",
                    "XDSPatientIdDoesNotMatch: the document's subject is not the "
                    "SubmissionSet's patient",
                    expression=[f"{where}.subject"],
                )
            )
    if not patient and len(subjects) > 1:
        out.append(Issue("invalid", "XDSPatientIdDoesNotMatch: documents of several patients"))
    return out


def _check_submission_set(resource: dict[str, Any], where: str, level: Level) -> list[Issue]:
    out = []
    if level.comprehensive:
        if not resource.get("subject"):
            out.append(_required(where, "subject", "SubmissionSet.subject (the patient)"))
        if not any(
            isinstance(e, dict) and e.get("url") == DESIGNATION_TYPE_URL
            for e in resource.get("extension", []) or []
        ):
            out.append(
                _required(where, "extension", "SubmissionSet designationType (contentTypeCode)")
            )
        if level.contained:
            out += _contained_refs(resource, where, ["source"])
    if not any(
        isinstance(e, dict) and e.get("url") == SOURCE_ID_URL and e.get("valueIdentifier")
        for e in resource.get("extension", []) or []
    ):
        out.append(
            Issue(
                "required",
                "SubmissionSet needs its sourceId extension",
                expression=[f"{where}.extension"],
            )
        )
    if len(resource.get("identifier", []) or []) < 1:
        out.append(
            Issue(
                "required",
                "SubmissionSet needs its identifiers (uniqueId, entryUUID)",
                expression=[f"{where}.identifier"],
            )
        )
    if resource.get("mode") != "working":
        out.append(
            Issue("value", "SubmissionSet.mode must be 'working'", expression=[f"{where}.mode"])
        )
    if not resource.get("date"):
        out.append(
            Issue(
                "required",
                "SubmissionSet.date (submission time) is required",
                expression=[f"{where}.date"],
            )
        )
    if not resource.get("entry"):
        out.append(
            Issue(
                "required",
                "SubmissionSet lists no DocumentReference",
                expression=[f"{where}.entry"],
            )
        )
    return out


def _check_document(resource: dict[str, Any], where: str, by_url: dict[str, Any]) -> list[Issue]:
    out = []
    for field in ("masterIdentifier", "type", "category", "subject", "date", "content"):
        if not resource.get(field):
            out.append(
                Issue(
                    "required",
                    f"DocumentReference.{field} is required by MHD",
                    expression=[f"{where}.{field}"],
                )
            )
    if resource.get("status") != "current":
        out.append(
            Issue(
                "value",
                "A provided DocumentReference must be 'current'",
                expression=[f"{where}.status"],
            )
        )
    for k, content in enumerate(resource.get("content", []) or []):
        attachment = content.get("attachment") if isinstance(content, dict) else None
        at = f"{where}.content[{k}].attachment"
        if not isinstance(attachment, dict):
            continue
        if not attachment.get("contentType"):
            out.append(
                Issue(
                    "required",
                    "attachment.contentType is required",
                    expression=[f"{at}.contentType"],
                )
            )
        data = _content(attachment, by_url)
        if data is None:
            out.append(
                Issue(
                    "required",
                    "the document's content is neither in the attachment nor in a Binary of "
                    "this Bundle",
                    expression=[f"{at}.url"],
                )
            )
            continue
        # A Document Source may leave size and hash out: the Recipient fills them in (XDS).
        digest = base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
        attachment.setdefault("size", len(data))
        attachment.setdefault("hash", digest)
        if attachment["size"] != len(data):
            out.append(
                Issue(
                    "business-rule",
                    f"attachment.size is {attachment['size']} but the document has "
                    f"{len(data)} bytes",
                    expression=[f"{at}.size"],
                )
            )
        if attachment["hash"] != digest:
            out.append(
                Issue(
                    "business-rule",
                    "attachment.hash (base64 SHA-1) does not match the document's content",
                    expression=[f"{at}.hash"],
                )
            )
    return out


def _check_comprehensive(resource: dict[str, Any], where: str, level: Level) -> list[Issue]:
    """The DocumentReference elements the Comprehensive profiles add to Minimal (XDS
    DocumentEntry: confidentialityCode, languageCode, creationTime, formatCode,
    healthcareFacilityTypeCode, practiceSettingCode, sourcePatientInfo)."""
    out = []
    if not resource.get("securityLabel"):
        out.append(_required(where, "securityLabel", "DocumentReference.securityLabel"))
    for k, content in enumerate(resource.get("content", []) or []):
        if not isinstance(content, dict):
            continue
        attachment = content.get("attachment") or {}
        for field in ("language", "creation"):
            if not attachment.get(field):
                out.append(
                    _required(where, f"content[{k}].attachment.{field}", f"attachment.{field}")
                )
        if not content.get("format"):
            out.append(_required(where, f"content[{k}].format", "content.format"))
    context = resource.get("context")
    if not isinstance(context, dict):
        context = {}
    for field in ("facilityType", "practiceSetting", "sourcePatientInfo"):
        if not context.get(field):
            out.append(_required(where, f"context.{field}", f"DocumentReference.context.{field}"))
    if level.contained:
        out += _contained_refs(resource, where, ["author", "authenticator"])
        out += _contained_refs(context, f"{where}.context", ["sourcePatientInfo"], resource)
    return out


def _contained_refs(
    resource: dict[str, Any],
    where: str,
    fields: list[str],
    holder: dict[str, Any] | None = None,
) -> list[Issue]:
    """Comprehensive (not UnContained) metadata: these references point at resources
    contained in the resource itself (`#id`), so the metadata travels whole."""
    contained = {
        c.get("id") for c in (holder or resource).get("contained", []) or [] if isinstance(c, dict)
    }
    out = []
    for field in fields:
        value = resource.get(field)
        for k, ref in enumerate(value if isinstance(value, list) else [value] if value else []):
            target = ref.get("reference") if isinstance(ref, dict) else None
            if not (isinstance(target, str) and target.startswith("#") and target[1:] in contained):
                at = f"{where}.{field}" + (f"[{k}]" if isinstance(value, list) else "")
                out.append(
                    Issue(
                        "invalid",
                        f"{field} must reference a contained resource (#id) in a Comprehensive "
                        "Provide Bundle (UnContained.Comprehensive allows other references)",
                        expression=[at],
                    )
                )
    return out


def _required(where: str, path: str, what: str) -> Issue:
    return Issue(
        "required",
        f"{what} is required by MHD Comprehensive metadata",
        expression=[f"{where}.{path}"],
    )


def _content(attachment: dict[str, Any], by_url: dict[str, Any]) -> bytes | None:
    """The document bytes: inline `data`, or the Binary that `url` names in the Bundle."""
    encoded = attachment.get("data")
    if encoded is None:
        binary = by_url.get(str(attachment.get("url")))
        if not isinstance(binary, dict) or binary.get("resourceType") != "Binary":
            return None
        encoded = binary.get("data")
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
