"""Identity operations over the resource service: PIXm ITI-83 `$ihe-pix`, PDQm ITI-119
`$match`, and the identity-vigilance operator's `$link` / `$unlink`."""

from __future__ import annotations

from typing import Any

from app.errors import Forbidden, Invalid, Issue, NotFound
from app.fhir import models
from app.fhir.naming import INS_SYSTEMS
from app.fhir.parameters import parameters_of
from app.identity.traits import compare, traits_of
from app.services.resources import ResourceService
from app.storage.repository import Stored

MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
_DEFAULT_MATCH_COUNT = 10


def _token(text: str, name: str) -> tuple[str, str]:
    system, sep, value = text.partition("|")
    if not sep or not system or not value:
        raise Invalid(
            f"{name} must be 'system|value' (got '{text}')",
            issues=[Issue("invalid", f"{name} must be 'system|value'", expression=[name])],
        )
    return system, value


class IdentityOperations:
    """The identity operations of one request (policy, audit and visibility as for any read)."""

    def __init__(self, service: ResourceService) -> None:
        self.svc = service
        self.repo = service.repo
        self.identity = service.identity

    def _visible_patients(self, found: list[Stored]) -> list[Stored]:
        return [s for s in found if not s.deleted and self.svc.visible(s)]

    # -- ITI-83 ---------------------------------------------------------------------------

    def pix(self, source: str, targets: list[str]) -> dict[str, Any]:
        """PIXm Get Corresponding Identifiers: the identifiers (and records) of the person the
        source identifier names, in the target domains (all domains when none is given)."""
        self.svc.policy.start_operation(self.svc.principal, "ihe-pix")
        touch = self.svc.audit.touch("operation", "Patient", query=f"$ihe-pix?{source}")
        system, value = _token(source, "sourceIdentifier")
        # The common case first (a known identifier): the domain checks, which only choose
        # the error to give, cost queries only when they can decide something.
        sources = self._visible_patients(self.repo.by_identifier("Patient", system, value))
        if not sources:
            if not self._known_domain(system):
                raise Invalid(
                    "sourceIdentifier Assigning Authority not found",
                    issues=[
                        Issue("code-invalid", "sourceIdentifier Assigning Authority not found")
                    ],
                )
            self._check_targets(targets, set())
            raise NotFound(
                "sourceIdentifier Patient Identifier not found",
                issues=[Issue("not-found", "sourceIdentifier Patient Identifier not found")],
            )
        source_ids = {s.id for s in sources}
        person = self.identity.person_resources(source_ids)
        records = sources + self._visible_patients([s for s in person if s.id not in source_ids])
        self._check_targets(
            targets,
            {i.get("system") for r in records for i in r.resource.get("identifier", []) or []},
        )
        parameters: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = {(system, value)}
        for record in sorted(records, key=lambda r: r.id):
            touch.add(f"Patient/{record.id}", {record.id})
            matched = False
            for ident in record.resource.get("identifier", []):
                key = (ident.get("system"), ident.get("value"))
                if targets and key[0] not in targets:
                    continue
                matched = True
                if key in seen or not key[0] or not key[1]:
                    continue
                seen.add(key)
                shown = {k: ident[k] for k in ("use", "type", "system", "value") if k in ident}
                parameters.append({"name": "targetIdentifier", "valueIdentifier": shown})
            if record.id not in source_ids and (matched or not targets):
                parameters.append(
                    {"name": "targetId", "valueReference": {"reference": f"Patient/{record.id}"}}
                )
        # FHIR JSON has no empty arrays: no cross-reference is a Parameters without parameter.
        return {"resourceType": "Parameters", **({"parameter": parameters} if parameters else {})}

    def _check_targets(self, targets: list[str], present: set[Any]) -> None:
        for target in targets:
            if target not in present and not self._known_domain(target):
                raise Forbidden(
                    "targetSystem not found",
                    issues=[Issue("code-invalid", "targetSystem not found")],
                )

    def _known_domain(self, system: str) -> bool:
        """An identifier domain RIX knows: a site's namespace, the INS, or one in use."""
        if system in INS_SYSTEMS or system in self.svc.facts.registered_namespaces():
            return True
        if self.svc.principal.organization_id and system in self.svc.facts.site_namespaces(
            self.svc.principal.organization_id
        ):
            return True
        return self.repo.has_identifier_system("Patient", system)

    # -- ITI-119 --------------------------------------------------------------------------

    def match(self, parameters: Any) -> list[tuple[Stored, float, str]]:
        """PDQm Patient Demographics Match: scored candidates for the given Patient, best first.

        Grades (match-grade extension): `certain` (a shared identifier, or a shared trusted
        INS), `probable` (same name and birth date), `possible` (close spelling or day/month
        transposed). Candidates below `possible` are not returned."""
        self.svc.policy.start_operation(self.svc.principal, "match")
        resource, only_certain, count = _match_input(parameters)
        models.validate(resource, "Patient")  # the same 400 as a create would give
        touch = self.svc.audit.touch("operation", "Patient", query="$match")
        wanted = traits_of("", resource)
        scored: dict[str, tuple[Stored, float, str]] = {}
        for ident in resource.get("identifier", []) or []:
            # An identifier is certain only with its domain: IPP 1001 names someone else at
            # every other site.
            if ident.get("system") and ident.get("value"):
                for s in self.repo.by_identifier("Patient", ident["system"], ident["value"]):
                    scored[s.id] = (s, 0.99, "certain")
        for candidate in self.identity.candidates(wanted):
            if candidate.patient_id in scored:
                continue
            found = compare(wanted, candidate)
            if found is None:
                continue
            score = found[1]
            grade = "probable" if score >= 0.8 else "possible"
            stored = self.repo.current("Patient", candidate.patient_id)
            if stored is not None and not stored.deleted:
                scored[stored.id] = (stored, score, grade)
        results = [r for r in scored.values() if self.svc.visible(r[0])]
        if only_certain:
            results = [r for r in results if r[2] == "certain"]
        results.sort(key=lambda r: (-r[1], r[0].id))
        results = results[:count]
        for stored, _score, _grade in results:
            touch.add(f"Patient/{stored.id}", {stored.id})
        return [(self.svc.shown(s), score, grade) for s, score, grade in results]

    # -- operator decisions ---------------------------------------------------------------

    def link(self, patient_id: str, parameters: Any, *, unlink: bool = False) -> dict[str, Any]:
        """`$link` / `$unlink` of Patient/{id} with Patient `other` (and a `reason`)."""
        name = "unlink" if unlink else "link"
        self.svc.policy.start_operation(self.svc.principal, name)
        other, reason = _link_input(parameters, name)
        touch = self.svc.audit.touch(
            "operation",
            "Patient",
            items=[f"Patient/{patient_id}", f"Patient/{other}"],
            query=f"${name} Patient/{patient_id} Patient/{other}: {reason}",
        )
        touch.patients |= {patient_id, other}
        for pid in (patient_id, other):
            current = self.repo.current("Patient", pid)
            if current is None or current.deleted or not self.svc.visible(current):
                raise NotFound(f"Patient/{pid} is not known")
        if unlink:
            self.identity.unlink(patient_id, other, reason)
        else:
            self.identity.link(patient_id, other, reason)
        members = sorted(self.identity.members([patient_id]))
        return {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "person", "valueReference": {"reference": f"Patient/{m}"}} for m in members
            ]
            + [
                {
                    "name": "decision",
                    "part": [
                        {"name": "other", "valueReference": {"reference": f"Patient/{d['other']}"}},
                        {"name": "state", "valueCode": d["state"]},
                        {"name": "basis", "valueCode": d["basis"]},
                        {"name": "author", "valueString": d["author"]},
                        {"name": "reason", "valueString": d["reason"]},
                        {"name": "at", "valueInstant": d["at"]},
                    ],
                }
                for d in self.identity.decisions(patient_id)
            ],
        }


def _match_input(parameters: Any) -> tuple[dict[str, Any], bool, int]:
    resource: dict[str, Any] | None = None
    only_certain, count = False, _DEFAULT_MATCH_COUNT
    for p in parameters_of(parameters, "match"):
        name = p.get("name")
        if name == "resource":
            resource = p.get("resource")
        elif name == "onlyCertainMatches":
            if not isinstance(p.get("valueBoolean"), bool):
                raise Invalid("onlyCertainMatches must be a valueBoolean")
            only_certain = p["valueBoolean"]
        elif name == "count":
            value = p.get("valueInteger")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise Invalid("count must be a positive valueInteger")
            count = min(value, 100)
        else:
            raise Invalid(f"$match has no parameter '{name}'")
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        raise Invalid("$match needs a 'resource' parameter holding a Patient")
    return resource, only_certain, count


def _link_input(parameters: Any, operation: str) -> tuple[str, str]:
    other, reason = None, ""
    for p in parameters_of(parameters, operation):
        if p.get("name") == "other":
            ref = (p.get("valueReference") or {}).get("reference", "")
            if not isinstance(ref, str) or not ref.startswith("Patient/") or ref.count("/") != 1:
                raise Invalid("'other' must be a valueReference to Patient/{id}")
            other = ref.split("/")[1]
        elif p.get("name") == "reason":
            reason = str(p.get("valueString") or "")
        else:
            raise Invalid(f"${operation} has no parameter '{p.get('name')}'")
    if other is None:
        raise Invalid(f"${operation} needs 'other' (the Patient record to {operation})")
    if not reason.strip():
        raise Invalid(f"${operation} needs a 'reason' (identity-vigilance decisions are traced)")
    return other, reason.strip()
