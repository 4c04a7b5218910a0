"""Break-glass (`$break-glass`): a clinician's declared emergency access to a patient outside
the care relationship, time-boxed, audited with its reason, and reviewed by the DPO.

The grant is a FHIR `Task` RIX writes itself (how the policy reads it: `app.policy.breakglass`):
`for` the Patient record, `requester` the caller (by token subject), `reasonCode.text` the
mandatory reason, `restriction.period` the validity (`RIX_BREAK_GLASS_HOURS`, default 4 h),
`input` the purpose of use, role, organisation and RPPS the caller declared. It is also the
DPO's review item: status `requested` until the DPO closes it (`completed`; `cancelled` also
ends the grant at once). Clients cannot create such Tasks (`Policy.check_write`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.audit.balp import SUBJECT_SYSTEM
from app.errors import Forbidden, Invalid, NotFound
from app.fhir.naming import SITE_ID_SYSTEM
from app.fhir.parameters import parameters_of
from app.fhir.values import format_instant, now_utc
from app.policy.breakglass import ACCESS_TASK_SYSTEM, BREAK_GLASS_CODE
from app.policy.consent import ACT_REASON_SYSTEM, EMERGENCY_PURPOSES
from app.policy.principal import Principal

if TYPE_CHECKING:
    from app.services.resources import ResourceService

MIN_REASON = 10  # characters: a reason is a sentence someone can review, not "x"
MAX_REASON = 1000


def grant_task(
    principal: Principal, patient_id: str, reason: str, now: datetime, hours: float
) -> dict[str, Any]:
    """The Task recording a break-glass grant (see the module docstring)."""
    inputs: list[dict[str, Any]] = [
        {
            "type": {"text": "purposeOfUse"},
            "valueCoding": {"system": ACT_REASON_SYSTEM, "code": principal.purpose_of_use},
        },
        {"type": {"text": "role"}, "valueString": principal.role},
    ]
    if principal.organization_id:
        inputs.append(
            {
                "type": {"text": "organization"},
                "valueIdentifier": {"system": SITE_ID_SYSTEM, "value": principal.organization_id},
            }
        )
    if principal.national_provider_identifier:
        inputs.append(
            {"type": {"text": "rpps"}, "valueString": principal.national_provider_identifier}
        )
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": {
            "coding": [
                {
                    "system": ACCESS_TASK_SYSTEM,
                    "code": BREAK_GLASS_CODE,
                    "display": "Break-glass access to review",
                }
            ]
        },
        "description": "Emergency access outside the care relationship: review by the DPO",
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": format_instant(now),
        "requester": {
            "identifier": {"system": SUBJECT_SYSTEM, "value": principal.subject},
            "display": principal.name,
        },
        "reasonCode": {"text": reason},
        "restriction": {
            "period": {
                "start": format_instant(now),
                "end": format_instant(now + timedelta(hours=hours)),
            }
        },
        "input": inputs,
    }


def break_glass(service: ResourceService, body: Any) -> dict[str, Any]:
    """`POST [base]/Patient/$break-glass`: open a grant on a Patient record (`patient`, a
    reference, or `identifier`, such as the INS) for the caller, who must be a clinician or
    radiologist with purpose of use ETREAT or BTG and give a `reason`. Answers Parameters: the
    grant (Task), its end, and the records it opens (every record of the patient's person)."""
    principal = service.principal
    service.policy.start_operation(principal, "break-glass")
    if principal.purpose_of_use not in EMERGENCY_PURPOSES:
        raise Forbidden("break-glass needs a token whose purpose_of_use is ETREAT or BTG")
    patient_id, identifier, reason = None, None, ""
    for p in parameters_of(body, "break-glass"):
        name = p.get("name")
        if name == "patient":
            patient_id = (p.get("valueReference") or {}).get("reference")
        elif name == "identifier":
            ident = p.get("valueIdentifier") or {}
            identifier = f"{ident.get('system') or ''}|{ident.get('value') or ''}"
        elif name == "reason":
            reason = str(p.get("valueString") or "")
        else:
            raise Invalid(f"$break-glass has no parameter '{name}'")
    text = " ".join(reason.split())
    if len(text) < MIN_REASON:
        raise Invalid(
            f"break-glass needs a reason (parameter 'reason', at least {MIN_REASON} characters)"
        )
    if len(text) > MAX_REASON:
        raise Invalid(f"the break-glass reason is limited to {MAX_REASON} characters")
    record = _patient(service, patient_id, identifier)
    now = now_utc()
    hours = service.policy.rules.break_glass_hours
    task = service.repo.create(grant_task(principal, record, text, now, hours))
    records = sorted(service.identity.members([record]))
    service.audit.touch(
        "operation", "Task", items=[f"Task/{task.id}/_history/1"], patients=set(records)
    )
    end = task.resource["restriction"]["period"]["end"]
    opened = [{"name": "patient", "valueReference": {"reference": f"Patient/{r}"}} for r in records]
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "grant", "valueReference": {"reference": f"Task/{task.id}"}},
            {"name": "expires", "valueDateTime": end},
            *opened,
        ],
    }


def _patient(service: ResourceService, patient_id: str | None, identifier: str | None) -> str:
    """The Patient record the grant opens: exactly one of `patient` or `identifier`; a record
    unknown (or deleted) is 404, several matching records of different persons are refused."""
    if bool(patient_id) == bool(identifier):
        raise Invalid("give exactly one of 'patient' (Patient/id) or 'identifier' (system|value)")
    if patient_id:
        if not patient_id.startswith("Patient/") or patient_id.count("/") != 1:
            raise Invalid("'patient' must be a valueReference to Patient/{id}")
        pid = patient_id.removeprefix("Patient/")
        stored = service.repo.current("Patient", pid)
        if stored is None or stored.deleted:
            raise NotFound(f"Patient/{pid} is not known")
        return pid
    system, sep, value = (identifier or "").partition("|")
    if not sep or not system or not value:
        raise Invalid("'identifier' is system|value (e.g. the INS)")
    found = service.repo.by_identifier("Patient", system, value)
    if not found:
        raise NotFound(f"no Patient has the identifier {system}|{value}")
    persons = {frozenset(service.identity.members([s.id])) for s in found}
    if len(persons) > 1:
        raise Invalid(
            f"the identifier {system}|{value} names records of several persons; give 'patient'"
        )
    return sorted(s.id for s in found)[0]
