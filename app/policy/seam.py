"""The policy seam every request path goes through (HAPI IConsentService-style):

- `start`: may this request begin? (role x type matrix and SMART scopes)
- `narrow`: extra search criteria, so the database skips what the caller may not see (speed)
- `can_see`: per item, for every item that leaves the server (the guarantee)
- `check_write`: organisation boundaries on what a caller may create or change, and patient
  choice at the door

The care relationship (`can_see` for `radiologist`, `clinician`, `gp`): an item about patients
(its `patient` search parameter; a Patient is about itself) leaves only when
- one of those patients' persons has a record at the caller's organisation (its namespaces,
  directly or through an identity link); or
- the caller prescribed it: the RPPS number of the token is that of the exam's referrer or of
  the requester of the order it is based on (an ImagingStudy, its ServiceRequest, the reports
  pointing at the study), for those exams only; or
- the caller broke the glass: purpose of use ETREAT or BTG and an open `$break-glass` grant on
  the patient (`app.services.breakglass`), each use audited with the grant's reason.
Clinical data (ServiceRequest, ImagingStudy, DocumentReference, List), Consents and
Provenance naming no patient stay hidden; a Binary is seen with the rights of the resource its
`securityContext` names (FHIR binary.html: a document's bytes are the DocumentReference's), and
without one not at all; directory data (Organization, Endpoint, Practitioner...) is visible.

Patient choice (`app.policy.consent`, the RIX Consent model of profiles/README.md), for every
role but `patient`, outside the producing site (the site whose namespaces hold the item's
Patient record: its staff and systems always see it):
- an item an active deny of its person covers (an opposition: every ImagingStudy,
  DocumentReference, List, ServiceRequest; an exam opposition: the exams it names and the
  documents pointing at them; a Binary through its `securityContext`) is hidden, unless the
  caller uses a break-glass grant on the patient and every covering deny carries the emergency
  permit (deny beats permit; an opposition without it refuses emergency access too);
- in an explicit opt-in community (`RIX_COMMUNITY_POLICY=opt-in`), an exam of a patient without
  an active community-sharing Consent ("not yet informed") is hidden too, unless the caller uses
  a break-glass grant.
Each such hide, and each break-glass use, is noted for the audit (BALP AuthZconsent).
`check_write` refuses (422) incoming content a deny covers (ImagingStudy, DocumentReference,
List), for every writer: the exam stays at the site.

Audit (`complete`) is the AuditRecorder's job, fed by the same service calls. Hidden and missing
are indistinguishable: callers turn a `can_see` refusal into 404, never 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.audit.balp import Authorization
from app.errors import Forbidden, Unprocessable
from app.fhir.fhirpath import reference_type
from app.fhir.naming import IPP_PREFIX, rpps
from app.fhir.registry import Registry
from app.fhir.search import SearchParser, SearchQuery
from app.policy import consent
from app.policy.breakglass import GRANT_TERMS, Grant, is_break_glass
from app.policy.consent import Decision
from app.policy.principal import Principal
from app.policy.rules import CLINICAL_DATA, role_allows
from app.policy.scopes import LETTER, scope_allows

# Looks a Patient up by its logical id (None when unknown or deleted).
PatientLookup = Callable[[str], dict[str, Any] | None]

# Roles that see patients only where a care relationship exists (the patient is known at the
# caller's organisation, the caller prescribed the exam, or broke the glass).
CLINICAL_ROLES = frozenset({"radiologist", "clinician", "gp"})
# What a prescriber sees of the exams he ordered (the study, its order, its reports).
PRESCRIBED = frozenset({"ImagingStudy", "ServiceRequest", "DocumentReference"})
# Types whose items a clinical role never sees without a patient to establish the relationship
# (a Provenance about a study, a Consent naming nobody, would otherwise tell who did what).
CARE_DATA = (frozenset(CLINICAL_DATA) - {"Binary"}) | {"Consent", "Provenance"}
# How many `securityContext` hops a decision follows (a Binary's context is its DocumentReference:
# one hop); a longer chain, or a loop, ends hidden.
CONTEXT_DEPTH = 3
# Who may take identity-vigilance decisions and use the cross-reference (PIXm) and matching.
IDENTITY_OPERATORS = frozenset({"admin", "identity-officer"})
OPERATIONS: dict[str, frozenset[str]] = {
    "link": IDENTITY_OPERATORS,
    "unlink": IDENTITY_OPERATORS,
    "ihe-pix": IDENTITY_OPERATORS | {"site-system"} | CLINICAL_ROLES,
    "match": IDENTITY_OPERATORS | {"site-system"} | CLINICAL_ROLES,
    "health": frozenset({"admin"}),
    "break-glass": frozenset({"radiologist", "clinician"}),
    "access-check": frozenset(
        {"admin", "dpo", "site-system", "radiologist", "clinician", "gp", "registry"}
    ),
}


class Facts(Protocol):
    """What decisions need to know from the data, looked up for one request."""

    def site_namespaces(self, site_id: str) -> set[str]:
        """The patient-identifier namespaces of a site (site registry)."""
        ...

    def registered_namespaces(self) -> set[str]:
        """Every site's declared patient-identifier namespace."""
        ...

    def known_in(self, patient_id: str, namespaces: set[str]) -> bool:
        """True when the person of this Patient record has a record in these namespaces."""
        ...

    def records_of_person(self, patient_id: str) -> set[str]:
        """Every Patient record of this record's person (itself included)."""
        ...

    def lookup(self, type_name: str, resource_id: str) -> dict[str, Any] | None:
        """The current content of a resource (None when unknown or deleted)."""
        ...

    def consents_exist(self) -> bool:
        """True when some active Consent is stored at all."""
        ...

    def consents_of(self, patient_id: str) -> list[Decision]:
        """The active decisions of this record's person (any of its records' Consents)."""
        ...

    def denies_of(self, patient_id: str) -> consent.Denies:
        """The same person's active denies, indexed (`consent.Denies`)."""
        ...

    def grants(self, subject: str) -> dict[str, Grant]:
        """The caller's open break-glass grants, by Patient record."""
        ...

    def prescribers(self, type_name: str, resource: dict[str, Any]) -> set[str]:
        """The RPPS numbers of who ordered this exam."""
        ...

    def record(self, decision: Authorization) -> None:
        """Note a decision for the audit (BALP AuthZconsent)."""
        ...


@dataclass(frozen=True)
class Rules:
    """The deployment's policy settings: RIX_COMMUNITY_POLICY (`opt_in`),
    RIX_CONSENT_ENFORCEMENT (`enforce`), RIX_BREAK_GLASS_HOURS, RIX_DELETION_APPROVAL."""

    opt_in: bool = False
    enforce: bool = True
    break_glass_hours: float = 4.0
    deletion_approval: Literal["auto", "admin"] = "admin"


@dataclass
class Policy:
    """Access decisions for one server; stateless, so every process decides alike."""

    registry: Registry
    parser: SearchParser
    rules: Rules = field(default_factory=Rules)

    # -- start ----------------------------------------------------------------------------------

    def start(self, principal: Principal, interaction: str, type_name: str) -> None:
        """Refuse (403) an interaction the caller's role or scopes do not grant at all."""
        letter = LETTER[interaction]
        if not role_allows(principal.role, type_name, letter):
            raise Forbidden(f"Role '{principal.role}' may not {interaction} {type_name}")
        if not scope_allows(principal.scopes, type_name, interaction):
            raise Forbidden(f"The token's scopes do not grant {interaction} on {type_name}")
        if principal.role == "patient":
            if not principal.patient:
                raise Forbidden("A patient token must name its patient")
            if interaction in ("history-type", "history-system"):
                raise Forbidden("Patients read their records by search, not by type history")
            if type_name != "Patient" and self.registry.get(type_name).param("patient") is None:
                raise Forbidden(f"{type_name} is not available to patients")

    def may_read(self, principal: Principal, type_name: str) -> bool:
        """True when the caller's role and scopes grant reading `type_name` at all: what an
        `_include` or `_revinclude` brings along is held to it like a read of its own."""
        try:
            self.start(principal, "read", type_name)
        except Forbidden:
            return False
        return True

    def filters(self, principal: Principal, facts: Facts) -> bool:
        """True when `can_see` may drop items that the search's SQL matched: the care
        relationship is decided per item, and so are patients' choices (Consent) for every role
        once some Consent is active; a patient's searches are narrowed exactly."""
        if principal.role in CLINICAL_ROLES:
            return True
        if principal.role == "patient" or not self.rules.enforce:
            return False
        return self.rules.opt_in or facts.consents_exist()

    def start_operation(self, principal: Principal, name: str) -> None:
        """Refuse (403) an operation (`$link`, `$ihe-pix`...) the caller's role does not have."""
        if principal.role not in OPERATIONS.get(name, frozenset()):
            raise Forbidden(f"Role '{principal.role}' may not use ${name}")

    # -- narrow ---------------------------------------------------------------------------------

    def narrow(self, principal: Principal, query: SearchQuery) -> None:
        """Add criteria so the database returns only what the caller may see."""
        if principal.role != "patient":
            return
        pid = principal.patient or ""
        pairs = [("_id", pid)] if query.type == "Patient" else [("patient", f"Patient/{pid}")]
        query.criteria.extend(self.parser.parse(query.type, pairs).criteria)

    # -- can_see --------------------------------------------------------------------------------

    def can_see(
        self,
        principal: Principal,
        type_name: str,
        resource_id: str,
        resource: Callable[[], dict[str, Any]],
        facts: Facts,
        *,
        depth: int = 0,
    ) -> bool:
        """True when this item may leave the server for this caller (`resource` is read only
        when the decision needs the content; `depth` counts the `securityContext` hops
        followed to get here)."""
        if principal.role == "patient":
            # A patient's own data is that of every record of their person (PIXm links).
            mine = facts.records_of_person(principal.patient or "")
            return bool(mine & self.patients_of(type_name, resource_id, resource()))
        if principal.role in CLINICAL_ROLES:
            if not self._in_care(principal, type_name, resource_id, resource, facts, depth):
                return False
            # A Binary was decided, consent included, with the rights of its context.
            return type_name == "Binary" or self._consented(
                principal, type_name, resource_id, resource, facts
            )
        if type_name == "Binary":
            return self._binary_consented(principal, resource(), facts, depth)
        return self._consented(principal, type_name, resource_id, resource, facts)

    def _consented(
        self,
        principal: Principal,
        type_name: str,
        resource_id: str,
        resource: Callable[[], dict[str, Any]],
        facts: Facts,
    ) -> bool:
        """The patient's choices (see the module docstring): False when the item may not leave
        for this caller outside its producing site."""
        if not self.rules.enforce or type_name not in consent.COVERED_TYPES:
            return True
        if not self.rules.opt_in and not facts.consents_exist():
            return True
        content = resource()
        item = f"{type_name}/{resource_id}"
        for pid in sorted(self.patients_of(type_name, resource_id, content)):
            if self._producing_site(principal, pid, facts):
                continue
            decisions = facts.consents_of(pid)
            covering = facts.denies_of(pid).covering(type_name, resource_id, content, facts.lookup)
            ids = tuple(d.consent_id for d in covering)
            used = self._grant(principal, {pid}, facts)
            grant = used[1] if used is not None else None
            if covering:
                if grant is None:
                    facts.record(
                        Authorization(pid, item, False, "the patient opposed sharing", ids)
                    )
                    return False
                if not all(consent.lets_through(d) for d in covering):
                    reason = "the patient's opposition refuses emergency access too"
                    facts.record(Authorization(pid, item, False, reason, ids))
                    return False
                facts.record(Authorization(pid, item, True, _glass(grant, "emergency permit"), ids))
            elif self.rules.opt_in and not any(consent.shares(d) for d in decisions):
                if grant is None:
                    reason = "no community-sharing consent (opt-in community)"
                    facts.record(Authorization(pid, item, False, reason))
                    return False
                facts.record(Authorization(pid, item, True, _glass(grant, "not yet informed")))
        return True

    @staticmethod
    def _grant(principal: Principal, patients: set[str], facts: Facts) -> tuple[str, Grant] | None:
        """One of these patients and the caller's open break-glass grant on them, when the
        request is a break-glass use (a clinical role, purpose of use ETREAT or BTG)."""
        if principal.role not in CLINICAL_ROLES:
            return None
        if principal.purpose_of_use not in consent.EMERGENCY_PURPOSES:
            return None
        grants = facts.grants(principal.subject)
        return next(((p, grants[p]) for p in sorted(patients) if p in grants), None)

    def _binary_consented(
        self, principal: Principal, binary: dict[str, Any], facts: Facts, depth: int
    ) -> bool:
        """For a role outside the care relationship, a Binary is held to its `securityContext`'s
        consent decision (one without a context, or with an unknown one, has none to follow)."""
        context = self._context(binary, facts)
        if context is None or not self.rules.enforce:
            return True
        if not self.rules.opt_in and not facts.consents_exist():
            return True
        type_name, resource_id, content = context
        if depth >= CONTEXT_DEPTH:
            return False  # a loop or too long a chain: not followed to the end, so hidden
        if type_name == "Binary":
            return self._binary_consented(principal, content, facts, depth + 1)
        return self._consented(principal, type_name, resource_id, lambda: content, facts)

    @staticmethod
    def _producing_site(principal: Principal, patient_id: str, facts: Facts) -> bool:
        """True when the caller's organisation holds this very record (its identifiers are in
        the site's namespaces): the site that produced the data keeps seeing it."""
        if not principal.organization_id:
            return False
        own = facts.site_namespaces(principal.organization_id)
        record = facts.lookup("Patient", patient_id) or {}
        return any(
            isinstance(i, dict) and i.get("system") in own for i in record.get("identifier", [])
        )

    def _in_care(
        self,
        principal: Principal,
        type_name: str,
        resource_id: str,
        resource: Callable[[], dict[str, Any]],
        facts: Facts,
        depth: int,
    ) -> bool:
        """The care relationship: the item is about a patient known at the caller's
        organisation (see the module docstring)."""
        if type_name == "Binary":
            return self._through_context(principal, resource(), facts, depth)
        if type_name == "Patient":
            patients = {resource_id}  # demographics (PDQm) need no content to decide
        elif self.registry.get(type_name).param("patient") is None:
            return True  # directory data (Organization, Endpoint, Practitioner...)
        else:
            patients = self.patients_of(type_name, resource_id, resource())
        if not patients:
            return type_name not in CARE_DATA
        if principal.organization_id:
            own = facts.site_namespaces(principal.organization_id)
            if any(facts.known_in(pid, own) for pid in sorted(patients)):
                return True
        npi = principal.national_provider_identifier
        if (
            type_name in PRESCRIBED
            and npi
            and rpps(npi) in facts.prescribers(type_name, resource())
        ):
            return True
        used = self._grant(principal, patients, facts)
        if used is None:
            return False
        pid, grant = used
        item = f"{type_name}/{resource_id}"
        facts.record(Authorization(pid, item, True, _glass(grant, "care relationship")))
        return True

    def _through_context(
        self, principal: Principal, binary: dict[str, Any], facts: Facts, depth: int
    ) -> bool:
        """A Binary is seen with the access rights of the resource its `securityContext`
        names (a local `Type/id`); none, an unknown one or too deep a chain: hidden."""
        context = self._context(binary, facts)
        if context is None or depth >= CONTEXT_DEPTH:
            return False
        type_name, resource_id, content = context
        if not self.may_read(principal, type_name):
            return False  # bytes in the context of a Task, say, are not a clinician's
        return self.can_see(
            principal, type_name, resource_id, lambda: content, facts, depth=depth + 1
        )

    def _context(
        self, binary: dict[str, Any], facts: Facts
    ) -> tuple[str, str, dict[str, Any]] | None:
        """The live resource a Binary's `securityContext` names on this server (type, id,
        content); None without one, or for anything else."""
        target = local_reference((binary.get("securityContext") or {}).get("reference"))
        if target is None or target[0] not in self.registry:
            return None
        content = facts.lookup(*target)
        return (target[0], target[1], content) if content is not None else None

    def patients_of(self, type_name: str, resource_id: str, resource: dict[str, Any]) -> set[str]:
        """Logical ids of the patients a resource is about (by its `patient` search parameter)."""
        if type_name == "Patient":
            return {resource_id}
        param = self.registry.get(type_name).param("patient")
        if param is None or param.path is None:
            return set()
        out = set()
        for node in param.path.evaluate(resource):
            ref = node.get("reference") if isinstance(node, dict) else None
            if isinstance(ref, str) and reference_type(ref) == "Patient":
                out.add(ref.split("/_history")[0].rsplit("/", 1)[-1])
        return out

    # -- writes ---------------------------------------------------------------------------------

    def check_write(
        self,
        principal: Principal,
        type_name: str,
        resource_id: str | None,
        resource: dict[str, Any],
        patients: PatientLookup,
        facts: Facts,
        *,
        incoming: bool = True,
    ) -> None:
        """A site system writes only in its own site's patient-identifier namespace (a Binary:
        that of the patients of its `securityContext`). Filtering at the door: no writer
        brings in (`incoming`: the content to be stored, not the one being replaced) an exam
        its patient opposes."""
        if incoming:
            self._check_consent(type_name, resource_id, resource, facts)
            if type_name == "Task" and is_break_glass(resource):
                self._check_grant_review(principal, resource_id, resource, facts)
        if principal.role != "site-system":
            return
        if not principal.organization_id:
            raise Forbidden("A site-system token must name its organisation (site id)")
        own = facts.site_namespaces(principal.organization_id)
        if type_name == "Patient":
            _check_patient_namespaces(resource, own, facts.registered_namespaces())
            return
        about = self.patients_of(type_name, resource_id or "", resource)
        if type_name == "Binary":
            # A document's bytes belong to the patients of the resource they are read with.
            context = self._context(resource, facts)
            about = self.patients_of(*context) if context else set()
        for pid in about:
            patient = patients(pid)
            if patient is None:
                continue  # a dangling reference is the client's business; nothing to protect
            if not any(i.get("system") in own for i in patient.get("identifier", [])):
                raise Forbidden(
                    f"Patient/{pid} is not known in your site's namespace "
                    f"({', '.join(sorted(own))}); a site may only register data for its own "
                    "patients"
                )

    @staticmethod
    def _check_grant_review(
        principal: Principal, resource_id: str | None, task: dict[str, Any], facts: Facts
    ) -> None:
        """Break-glass Tasks are opened by `$break-glass` only; the DPO (or an admin) reviews
        and closes existing ones, changing their status and notes, never the grant's terms."""
        if principal.role not in ("dpo", "admin"):
            raise Forbidden("break-glass reviews are closed by the DPO")
        current = facts.lookup("Task", resource_id) if resource_id else None
        if current is None:
            raise Forbidden("break-glass grants are opened with $break-glass, not written")
        changed = sorted(k for k in GRANT_TERMS if task.get(k) != current.get(k))
        if changed:
            raise Unprocessable(
                f"a break-glass grant's terms cannot be changed ({', '.join(changed)}); "
                "review it with status, statusReason, businessStatus or note"
            )

    def _check_consent(
        self, type_name: str, resource_id: str | None, resource: dict[str, Any], facts: Facts
    ) -> None:
        """Refuse (422) an exam of a patient whose person opposes its sharing (an opposition:
        every exam; an exam opposition: the exams it names); content that takes data out of
        sharing (entered-in-error, superseded...) is always accepted."""
        if type_name not in consent.REFUSED_TYPES or resource.get("status") in consent.WITHDRAWING:
            return
        if not self.rules.enforce:
            return
        if not facts.consents_exist():
            return
        for pid in sorted(self.patients_of(type_name, resource_id or "", resource)):
            denies = facts.denies_of(pid)
            covering = denies.covering(type_name, resource_id or "", resource, facts.lookup)
            if not covering:
                continue
            # An opposition of all exams says more than one of this exam: named first.
            decision = next((d for d in covering if d.kind == "opposition"), covering[0])
            which = (
                "regional sharing" if decision.kind == "opposition" else "the sharing of this exam"
            )
            item = f"{type_name}/{resource_id or '(new)'}"
            reason = f"refused at the door: the patient opposed {which}"
            facts.record(Authorization(pid, item, False, reason, (decision.consent_id,)))
            raise Unprocessable(
                f"patient opposed to {which}; keep the exam locally (Consent/{decision.consent_id})"
            )


def local_reference(reference: Any) -> tuple[str, str] | None:
    """(type, id) of a relative literal reference (`Type/id`, `Type/id/_history/n`); None for
    anything else (absolute, contained, logical or malformed)."""
    if not isinstance(reference, str):
        return None
    parts = reference.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) != 2 or not parts[0][:1].isupper() or not parts[1]:
        return None
    return parts[0], parts[1]


def _check_patient_namespaces(resource: dict[str, Any], own: set[str], sites: set[str]) -> None:
    systems = {i.get("system") for i in resource.get("identifier", []) if isinstance(i, dict)}
    foreign = sorted(
        s
        for s in systems
        if isinstance(s, str) and (s.startswith(IPP_PREFIX) or s in sites) and s not in own
    )
    if foreign:
        raise Forbidden(
            f"A site may not write identifiers in another site's namespace ({', '.join(foreign)})"
        )
    if not own & systems:
        raise Forbidden(
            "A Patient written by a site must carry an identifier in its namespace "
            f"({', '.join(sorted(own))})"
        )


def _glass(grant: Grant, overrides: str) -> str:
    """How a break-glass use is described in its audit record (the reason included)."""
    return f"break-glass ({overrides}; Task/{grant.task_id}): {grant.reason}"
