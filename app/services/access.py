"""`$access-check`: may this person see these items? The policy seam's own answer, for a caller
about itself, or for the DPO and administrators about anyone (role, organisation, RPPS, purpose
of use), with the reason. Audited like every access."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from app.audit.balp import Authorization
from app.errors import Forbidden, Invalid
from app.fhir.parameters import parameters_of
from app.policy.principal import PURPOSES, ROLES, Principal
from app.policy.seam import CLINICAL_ROLES, local_reference
from app.services.facts import RequestFacts

if TYPE_CHECKING:
    from app.services.resources import ResourceService

# Who may ask about someone else, and be told why.
EXPLAINED = frozenset({"admin", "dpo"})
MAX_ITEMS = 100
# Parameters that describe the person to check (else: the caller).
SUBJECT_PARAMETERS = ("role", "organization", "rpps", "purposeOfUse", "subject")


def access_check(service: ResourceService, body: Any) -> dict[str, Any]:
    """`POST [base]/$access-check` with `item` (valueReference `Type/id`, 1..100) and, for
    `admin` and `dpo`, the person to check (`role`, `organization` = site id, `rpps`,
    `purposeOfUse`, `subject` = token subject, whose break-glass grants count). Answers one
    `result` per item: `item`, `allowed`, and for `admin`/`dpo` the `reason`. A caller asking
    about itself learns nothing more than a read would tell it: an item it may not see and one
    that does not exist are both `allowed = false`."""
    caller = service.principal
    service.policy.start_operation(caller, "access-check")
    items: list[tuple[str, str]] = []
    claims: dict[str, str] = {}
    for p in parameters_of(body, "access-check"):
        name = p.get("name")
        if name == "item":
            reference = (p.get("valueReference") or {}).get("reference")
            target = local_reference(reference)
            if target is None or target[0] not in service.registry:
                raise Invalid(f"'item' must be a valueReference to Type/id (got {reference!r})")
            items.append(target)
        elif name in SUBJECT_PARAMETERS:
            value = p.get("valueCode") or p.get("valueString")
            if not isinstance(value, str) or not value:
                raise Invalid(f"'{name}' needs a valueCode or valueString")
            claims[str(name)] = value
        else:
            raise Invalid(f"$access-check has no parameter '{name}'")
    if not items or len(items) > MAX_ITEMS:
        raise Invalid(f"$access-check takes 1 to {MAX_ITEMS} 'item' parameters")
    explain = caller.role in EXPLAINED
    if claims and not explain:
        raise Forbidden("only the DPO and administrators may check another person's access")
    subject = _subject(caller, claims) if claims else caller
    decisions: list[Authorization] = []

    def note(decision: Authorization) -> None:
        decisions.append(decision)
        if not claims:  # about someone else, a decision is this check's answer, not an access
            service.audit.authorize(decision)

    facts = RequestFacts(service.repo, service.identity, note)
    touch = service.audit.touch("operation", None, query=_query(items, claims))
    results = []
    for type_name, resource_id in items:
        start = len(decisions)
        allowed, reason, patients = _decide(service, subject, facts, type_name, resource_id)
        decided = [d for d in decisions[start:] if d.permit == allowed]
        if decided:
            reason = decided[-1].reason
        touch.add(f"{type_name}/{resource_id}", patients)
        parts: list[dict[str, Any]] = [
            {"name": "item", "valueReference": {"reference": f"{type_name}/{resource_id}"}},
            {"name": "allowed", "valueBoolean": allowed},
        ]
        if explain:
            parts.append({"name": "reason", "valueString": reason})
        results.append({"name": "result", "part": parts})
    return {"resourceType": "Parameters", "parameter": results}


def _decide(
    service: ResourceService,
    subject: Principal,
    facts: RequestFacts,
    type_name: str,
    resource_id: str,
) -> tuple[bool, str, set[str]]:
    """(allowed, why, the item's patients) for one item."""
    stored = service.repo.current(type_name, resource_id)
    if stored is None:
        return False, "not found", set()
    if stored.deleted or stored.content is None:
        return False, "deleted", set()
    content = stored.resource
    patients = service.policy.patients_of(type_name, resource_id, content)
    if not service.policy.may_read(subject, type_name):
        return False, f"role '{subject.role}' may not read {type_name}", patients
    if service.policy.can_see(subject, type_name, resource_id, lambda: content, facts):
        return True, "allowed", patients
    if subject.role in CLINICAL_ROLES:
        return False, "no care relationship (nor prescription, nor break-glass grant)", patients
    return False, "not visible to this role", patients


def _subject(caller: Principal, claims: dict[str, str]) -> Principal:
    """The person to check, from the parameters (what a token of theirs would carry)."""
    role = claims.get("role", "")
    if role not in ROLES:
        raise Invalid(f"'role' must be one of {', '.join(ROLES)}")
    purpose = claims.get("purposeOfUse", "TREAT")
    if purpose not in PURPOSES:
        raise Invalid(f"'purposeOfUse' must be one of {', '.join(PURPOSES)}")
    return dataclasses.replace(
        caller,
        subject=claims.get("subject", f"access-check:{caller.subject}"),
        name=f"access check by {caller.name}",
        role=role,
        organization_id=claims.get("organization"),
        organization_name=None,
        national_provider_identifier=claims.get("rpps"),
        purpose_of_use=purpose,
        person_id=None,
        patient=None,
        scopes=("user/*.rs",),  # the role matrix decides, as for a token with every scope
        token_id=None,
    )


def _query(items: list[tuple[str, str]], claims: dict[str, str]) -> str:
    """What was asked, for the audit record's query entity."""
    asked = "&".join(f"item={t}/{i}" for t, i in items)
    about = "&".join(f"{k}={v}" for k, v in sorted(claims.items()))
    return f"$access-check?{asked}" + (f"&{about}" if about else "")
