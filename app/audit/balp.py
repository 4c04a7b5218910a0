"""Builds IHE BALP AuditEvents (Basic Audit Log Patterns) for RESTful interactions.

Patterns: Create/Read/Update/Delete/Query, each "with Patient" when a patient is involved,
authentication failure and authorisation refusal, and the authorization decisions of the
policy seam (AuthZconsent: what a patient's choice hid or refused, and break-glass uses). The
X-Request-Id correlates a request's events (BALP XrequestId entity).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from app.fhir.naming import SITE_ID_SYSTEM
from app.fhir.values import format_instant, now_utc
from app.policy.principal import Principal

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
ROLE_SYSTEM = "https://fhir.rix.example/CodeSystem/role"
SUBJECT_SYSTEM = "https://fhir.rix.example/sid/subject"
SOURCE_SITE = "RIX"

ACTIONS = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "search-type": "E",
    "history-type": "E",
    "history-system": "E",
    "operation": "E",
}
# FHIR AuditEvent.outcome: 0 success, 4 minor failure (client), 8 serious (server), 12 major.
SUCCESS, MINOR, SERIOUS = "0", "4", "8"
AUTHZ_SUBTYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
AUTHZ_CONSENT = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.AuthZconsent"


@dataclass(frozen=True)
class Authorization:
    """One decision of the policy seam worth its own audit record: an item a patient's choice
    hid or refused (`permit=False`), or an item a break-glass grant let through (`permit=True`).
    `consents` names the Consents that decided (none: a decision by role and grant only)."""

    patient: str
    item: str
    permit: bool
    reason: str
    consents: tuple[str, ...] = ()


@dataclass
class Touch:
    """What one interaction touched: resources (Type/id/_history/v), patients, a query."""

    interaction: str
    type: str | None
    items: list[str] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)
    query: str | None = None
    # Which patients each item is about, so events can be split per patient.
    links: list[tuple[str, frozenset[str]]] = field(default_factory=list)

    def add(self, item: str, patients: set[str]) -> None:
        """Note one resource the interaction returned or wrote, and its patients."""
        self.items.append(item)
        self.patients |= patients
        self.links.append((item, frozenset(patients)))

    def per_patient(self) -> list[Touch]:
        """BALP's "with Patient" patterns name one patient per event: a touch about several
        patients becomes one event per patient, naming only that patient's items (so a
        patient's own audit view never shows another patient), plus one event without any
        patient that keeps the query and every item for the privacy officer."""
        if len(self.patients) <= 1:
            return [self]
        links = self.links or [(item, frozenset(self.patients)) for item in self.items]
        split = [
            Touch(self.interaction, self.type, [i for i, ps in links if pid in ps], {pid})
            for pid in sorted(self.patients)
        ]
        return [*split, Touch(self.interaction, self.type, list(self.items), set(), self.query)]


def _user_agent(principal: Principal | None, claimed: str | None) -> dict[str, Any]:
    if principal is None:
        return {
            "type": {"coding": [{"system": SECURITY_ROLE, "code": "humanuser"}]},
            "who": {"display": f"unauthenticated (claimed: {claimed or 'nobody'})"},
            "requestor": True,
        }
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": SECURITY_ROLE, "code": "humanuser"}]},
        "who": {
            "identifier": {"system": SUBJECT_SYSTEM, "value": principal.subject},
            "display": principal.name,
        },
        "name": principal.name,
        "requestor": True,
        "role": [{"coding": [{"system": ROLE_SYSTEM, "code": principal.role}]}],
        "purposeOfUse": [{"coding": [{"system": ACT_REASON, "code": principal.purpose_of_use}]}],
    }
    if principal.token_id:
        agent["policy"] = [principal.token_id]
    if principal.national_provider_identifier:
        agent["altId"] = principal.national_provider_identifier
    return agent


def _organization_agent(principal: Principal) -> dict[str, Any]:
    return {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {
            "identifier": {"system": SITE_ID_SYSTEM, "value": principal.organization_id},
            "display": principal.organization_name or principal.organization_id,
        },
        "requestor": False,
    }


def _server_agent() -> dict[str, Any]:
    return {
        "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": "RIX FHIR server"},
        "requestor": False,
    }


def _source(code: str, display: str) -> dict[str, Any]:
    """AuditEvent.source: RIX, as the kind of source (security-source-type) the event needs."""
    return {
        "site": SOURCE_SITE,
        "observer": {"display": "RIX"},
        "type": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": code,
                "display": display,
            }
        ],
    }


def audit_event(
    touch: Touch,
    *,
    principal: Principal | None,
    request_id: str | None,
    outcome: str = SUCCESS,
    outcome_text: str | None = None,
    claimed_subject: str | None = None,
    event_code: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """One AuditEvent for one interaction (a BALP pattern chosen by its content)."""
    agents = [_user_agent(principal, claimed_subject)]
    if principal is not None and principal.organization_id:
        agents.append(_organization_agent(principal))
    agents.append(_server_agent())
    entities: list[dict[str, Any]] = [
        {
            "what": {"reference": f"Patient/{pid}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
        for pid in sorted(touch.patients)
    ]
    entities += [
        {
            "what": {"reference": item},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        }
        for item in touch.items
    ]
    if touch.query is not None:
        entities.append(
            {
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(touch.query.encode("utf-8")).decode("ascii"),
            }
        )
    if request_id:
        entities.append(
            {
                "what": {"identifier": {"value": request_id}},
                "type": {"system": BALP_ENTITY, "code": "XrequestId"},
            }
        )
    type_coding = (
        {"system": event_code[0], "code": event_code[1], "display": event_code[2]}
        if event_code
        else {"system": AUDIT_TYPE, "code": "rest", "display": "Restful Operation"}
    )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": type_coding,
        "action": ACTIONS.get(touch.interaction, "E"),
        "recorded": format_instant(now_utc()),
        "outcome": outcome,
        "agent": agents,
        "source": _source("4", "Application Server"),
    }
    if event_code is None:
        event["subtype"] = [{"system": RESTFUL, "code": touch.interaction}]
    if outcome_text:
        event["outcomeDesc"] = outcome_text
    if entities:
        event["entity"] = entities
    return event


def authorization_event(
    patient: str,
    consents: tuple[str, ...],
    permit: bool,
    text: str,
    *,
    principal: Principal | None,
    request_id: str | None,
) -> dict[str, Any]:
    """BALP AuthZconsent: a Security Alert (DCM 110113) recording the authorization decision
    on one patient's data (subtype AuthZ-Consent when Consents decided, AuthZ-Role otherwise);
    success for a permit, failure for a deny, with the reason and the items in `outcomeDesc`
    (the profile's entities are closed to patient, consent and token)."""
    agents: list[dict[str, Any]] = []
    if principal is not None:
        user = _user_agent(principal, None)
        user["type"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP",
                    "display": "information recipient",
                }
            ]
        }
        user.pop("altId", None)  # discouraged by the profile; the RPPS is in `who` below
        if principal.national_provider_identifier:
            user["who"]["display"] = (
                f"{principal.name} (RPPS {principal.national_provider_identifier})"
            )
        agents.append(user)
        if principal.organization_id:
            org = _organization_agent(principal)
            org["type"] = {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
                        "code": "PROV",
                        "display": "healthcare provider",
                    }
                ]
            }
            agents.append(org)
    agents.append(
        {
            "type": {
                "coding": [
                    {
                        "system": SECURITY_ROLE,
                        "code": "authserver",
                        "display": "authorization server",
                    }
                ]
            },
            "who": {"display": "RIX policy seam"},
            "requestor": False,
        }
    )
    entities: list[dict[str, Any]] = [
        {
            "what": {"reference": f"Patient/{patient}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
    ]
    entities += [
        {
            "what": {"reference": f"Consent/{cid}"},
            "type": {"system": "http://hl7.org/fhir/resource-types", "code": "Consent"},
        }
        for cid in consents
    ]
    if principal is not None and principal.token_id:
        entities.append(
            {
                "what": {
                    "identifier": {"value": f"urn:ietf:params:oauth:jti:{principal.token_id}"}
                },
                "type": {
                    "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes",
                    "code": "UserOauthAgent",
                },
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "meta": {"profile": [AUTHZ_CONSENT]},
        "type": {"system": DCM, "code": "110113", "display": "Security Alert"},
        "subtype": [
            {
                "system": AUTHZ_SUBTYPE,
                "code": "AuthZ-Consent" if consents else "AuthZ-Role",
                "display": "Authorization Decision using Roles and Consent"
                if consents
                else "Authorization Decision using only Roles",
            }
        ],
        "action": "E",
        "recorded": format_instant(now_utc()),
        "outcome": SUCCESS if permit else MINOR,
        "outcomeDesc": text,
        "agent": agents,
        "source": _source("6", "Security Server"),
        "entity": entities,
    }
    if principal is not None:
        event["purposeOfEvent"] = [
            {"coding": [{"system": ACT_REASON, "code": principal.purpose_of_use}]}
        ]
    if request_id:
        event["entity"].append(
            {
                "what": {"identifier": {"value": request_id}},
                "type": {"system": BALP_ENTITY, "code": "XrequestId"},
            }
        )
    return event
