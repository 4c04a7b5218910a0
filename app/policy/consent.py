"""The patient's choices (RIX Consent profiles, profiles/README.md) as decisions enforcement
reads: pure functions over resources, no storage.

- `decision(consent)`: one Consent resource -> a `Decision` (active, kind, deny or permit, the
  exams it names, whether it carries the emergency permit).
- `covers(decision, type, id, resource, lookup)`: whether an active deny covers an item (only
  the RIX kinds `opposition` and `exam-opposition` are enforced as denies). An
  opposition covers every exam item of the person (ImagingStudy, DocumentReference, List,
  ServiceRequest); an exam opposition covers the exams it names (`meaning = dependents`): the
  ImagingStudy named by literal reference, by Study Instance UID or by accession number, and
  the DocumentReferences that point at it (`context.related`, by reference or by the same UID or
  accession number), and nothing else. A Binary is decided through its `securityContext` by the
  policy seam, not here.
- `lets_through(decision)`: whether a deny carries the emergency permit, which a break-glass
  use (purpose of use ETREAT or BTG with an open grant, `app.policy.seam`) may pass.
- `shares(decision)`: an active community-sharing permit (explicit opt-in communities).
- `Denies`: a person's active denies indexed by what they name, which answers "which denies
  cover this item" by lookups, as `covers` would one decision at a time (enforcement decides
  every item of every page: that is its hot path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KIND_SYSTEM = "https://fhir.rix.example/CodeSystem/consent-kind"
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
DICOM_UID_SYSTEM = "urn:dicom:uid"
ACCESSION_CODE = "ACSN"
EMERGENCY_PURPOSES = frozenset({"ETREAT", "BTG"})
# The kinds enforced as a deny (a Consent without a RIX kind is not a RIX decision: not enforced).
DENY_KINDS = frozenset({"opposition", "exam-opposition"})
# The explicit consent an opt-in community needs before an exam leaves its producing site.
COMMUNITY_SHARING = "community-sharing"
# The kinds enforcement reads for access decisions (external diffusion is the share codes').
ENFORCED_KINDS = DENY_KINDS | {COMMUNITY_SHARING}
# What an opposition hides: the person's exams, their reports and manifests, the MHD
# SubmissionSets / Folders that list them, and the orders.
COVERED_TYPES = frozenset({"ImagingStudy", "DocumentReference", "List", "ServiceRequest"})
# What a site may not send for an opposed patient (the exam stays at the site).
REFUSED_TYPES = frozenset({"ImagingStudy", "DocumentReference", "List"})
# An incoming version in one of these statuses takes data out of sharing: always accepted.
WITHDRAWING = frozenset({"entered-in-error", "superseded", "cancelled", "retired"})

# Looks a resource up by type and id (None when unknown or deleted).
Lookup = Callable[[str, str], dict[str, Any] | None]


@dataclass(frozen=True)
class Exam:
    """One exam a Consent names (`provision.data.reference`): exactly one way is set."""

    reference: tuple[str, str] | None = None  # (type, id) of a literal relative reference
    study_uid: str | None = None  # the bare Study Instance UID (no `urn:oid:`)
    accession: str | None = None
    accession_system: str | None = None  # the issuer; None matches any


@dataclass(frozen=True)
class Decision:
    """A Consent as enforcement reads it."""

    consent_id: str
    active: bool
    kind: str | None
    deny: bool
    exams: tuple[Exam, ...]
    emergency: bool


def decision(consent: dict[str, Any]) -> Decision:
    """Read one Consent resource."""
    kinds = [
        coding.get("code")
        for concept in _dicts(consent.get("category"))
        for coding in _dicts(concept.get("coding"))
        if coding.get("system") == KIND_SYSTEM
    ]
    provision = _dict(consent.get("provision"))
    exams = tuple(
        exam
        for data in _dicts(provision.get("data"))
        if (exam := _exam(data.get("reference"))) is not None
    )
    return Decision(
        consent_id=str(consent.get("id") or ""),
        active=consent.get("status") == "active",
        kind=kinds[0] if len(kinds) == 1 else None,
        deny=provision.get("type") == "deny",
        exams=exams,
        emergency=any(_is_emergency_permit(p) for p in _dicts(provision.get("provision"))),
    )


def _exam(reference: Any) -> Exam | None:
    if not isinstance(reference, dict):
        return None
    literal = reference.get("reference")
    if isinstance(literal, str):
        parts = literal.split("/")
        if len(parts) == 2 and parts[0] in ("ImagingStudy", "DocumentReference") and parts[1]:
            return Exam(reference=(parts[0], parts[1]))
        return None
    identifier = reference.get("identifier")
    if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
        return None
    if identifier.get("system") == DICOM_UID_SYSTEM:
        return Exam(study_uid=_bare_uid(identifier["value"]))
    if _is_accession(identifier):
        system = identifier.get("system")
        return Exam(accession=identifier["value"], accession_system=system or None)
    return None


def _is_emergency_permit(provision: dict[str, Any]) -> bool:
    purposes = {
        p.get("code")
        for p in _dicts(provision.get("purpose"))
        if p.get("system") == ACT_REASON_SYSTEM
    }
    return provision.get("type") == "permit" and bool(purposes & EMERGENCY_PURPOSES)


def lets_through(decision: Decision) -> bool:
    """True when this deny carries the emergency permit (ETREAT + BTG): a break-glass use may
    pass it; a deny without it refuses emergency access too."""
    return decision.emergency


def shares(decision: Decision) -> bool:
    """True for an active community-sharing permit (the patient's explicit opt-in)."""
    return decision.active and not decision.deny and decision.kind == COMMUNITY_SHARING


def covers(
    decision: Decision,
    type_name: str,
    resource_id: str,
    resource: dict[str, Any],
    lookup: Lookup,
) -> bool:
    """True when this active deny covers the item (see the module docstring)."""
    if not decision.active or not decision.deny or type_name not in COVERED_TYPES:
        return False
    if decision.kind == "opposition":
        return True
    if decision.kind != "exam-opposition":
        return False
    if type_name == "ImagingStudy":
        return any(_names_study(exam, resource_id, resource) for exam in decision.exams)
    if type_name == "DocumentReference":
        return any(_names_document(exam, resource_id, resource, lookup) for exam in decision.exams)
    return False


@dataclass
class Denies:
    """A person's active denies by what they name (see the module docstring)."""

    whole: list[Decision]  # oppositions: every exam item
    by_reference: dict[tuple[str, str], list[Decision]]
    by_uid: dict[str, list[Decision]]
    # accession -> (issuer or None, decision): an issuer-less side matches any issuer
    by_accession: dict[str, list[tuple[str | None, Decision]]]

    @classmethod
    def of(cls, decisions: list[Decision]) -> Denies:
        """Index the active denies among `decisions`."""
        out = cls([], {}, {}, {})
        for d in decisions:
            if not d.active or not d.deny:
                continue
            if d.kind == "opposition":
                out.whole.append(d)
            elif d.kind == "exam-opposition":
                for exam in d.exams:
                    if exam.reference is not None:
                        out.by_reference.setdefault(exam.reference, []).append(d)
                    elif exam.study_uid is not None:
                        out.by_uid.setdefault(exam.study_uid, []).append(d)
                    elif exam.accession is not None:
                        entry = (exam.accession_system, d)
                        out.by_accession.setdefault(exam.accession, []).append(entry)
        return out

    def covering(
        self, type_name: str, resource_id: str, resource: dict[str, Any], lookup: Lookup
    ) -> list[Decision]:
        """The denies that cover this item, each once, in a stable order (what `covers` says
        of each decision)."""
        if type_name not in COVERED_TYPES:
            return []
        found = list(self.whole)
        if type_name == "ImagingStudy":
            found += self._naming_study(resource_id, resource)
        elif type_name == "DocumentReference":
            found += self.by_reference.get(("DocumentReference", resource_id), [])
            for related in _dicts(_dict(resource.get("context")).get("related")):
                target = related.get("reference")
                if isinstance(target, str) and target.startswith("ImagingStudy/"):
                    study_id = target.split("/")[1]
                    found += self.by_reference.get(("ImagingStudy", study_id), [])
                    if self.by_uid or self.by_accession:
                        study = lookup("ImagingStudy", study_id)
                        if study is not None:
                            found += self._by_identifiers(_dicts(study.get("identifier")))
                else:
                    found += self._by_identifiers([related.get("identifier")])
        unique = {d.consent_id: d for d in found}
        return [unique[k] for k in sorted(unique)]

    def _naming_study(self, study_id: str, study: dict[str, Any]) -> list[Decision]:
        named = self.by_reference.get(("ImagingStudy", study_id), [])
        return named + self._by_identifiers(_dicts(study.get("identifier")))

    def _by_identifiers(self, identifiers: list[Any]) -> list[Decision]:
        out: list[Decision] = []
        for identifier in identifiers:
            if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
                continue
            if identifier.get("system") == DICOM_UID_SYSTEM:
                out += self.by_uid.get(_bare_uid(identifier["value"]), [])
            elif _is_accession(identifier):
                system = identifier.get("system")
                out += [
                    d
                    for issuer, d in self.by_accession.get(identifier["value"], [])
                    if not system or not issuer or system == issuer
                ]
        return out


def _names_study(exam: Exam, study_id: str, study: dict[str, Any]) -> bool:
    if exam.reference is not None:
        return exam.reference == ("ImagingStudy", study_id)
    return any(_matches(exam, i) for i in _dicts(study.get("identifier")))


def _names_document(exam: Exam, document_id: str, document: dict[str, Any], lookup: Lookup) -> bool:
    if exam.reference == ("DocumentReference", document_id):
        return True
    for related in _dicts(_dict(document.get("context")).get("related")):
        target = related.get("reference")
        if isinstance(target, str) and target.startswith("ImagingStudy/"):
            study_id = target.split("/")[1]
            if exam.reference is not None:
                if exam.reference == ("ImagingStudy", study_id):
                    return True
                continue
            study = lookup("ImagingStudy", study_id)
            if study is not None and _names_study(exam, study_id, study):
                return True
        elif exam.reference is None and _matches(exam, related.get("identifier")):
            return True
    return False


def _matches(exam: Exam, identifier: Any) -> bool:
    """True when an item's identifier is the exam's Study UID or accession number (an
    accession without an issuer on either side matches any issuer)."""
    if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
        return False
    if exam.study_uid is not None:
        return (
            identifier.get("system") == DICOM_UID_SYSTEM
            and _bare_uid(identifier["value"]) == exam.study_uid
        )
    if exam.accession is not None and _is_accession(identifier):
        system = identifier.get("system")
        return identifier["value"] == exam.accession and (
            not system or not exam.accession_system or system == exam.accession_system
        )
    return False


def _is_accession(identifier: dict[str, Any]) -> bool:
    coding = _dicts(_dict(identifier.get("type")).get("coding"))
    return any(c.get("code") == ACCESSION_CODE for c in coding)


def _bare_uid(value: str) -> str:
    return value.removeprefix("urn:oid:")


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
