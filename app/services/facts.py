"""The data the policy seam's decisions need (site namespaces, who is known where, patients'
choices, break-glass grants, who prescribed an exam), looked up once per request and forgotten
when the request itself writes what they were read from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import false, select, text

from app.audit.balp import SUBJECT_SYSTEM, Authorization
from app.fhir.naming import NAMESPACE_SYSTEM, RPPS_SYSTEMS, SITE_ID_SYSTEM, ipp_system, rpps
from app.fhir.values import now_utc
from app.identity.vigilance import Vigilance
from app.policy.breakglass import Grant, read_grant
from app.policy.consent import (
    DENY_KINDS,
    ENFORCED_KINDS,
    KIND_SYSTEM,
    Decision,
    Denies,
    decision,
)
from app.policy.seam import local_reference
from app.storage.repository import Repository, Stored
from app.storage.tables import INDEX_TABLES, RESOURCE

# "Is some active deny stored?", with its constants written into the SQL: bound parameters let
# PostgreSQL settle on a generic plan after a few runs, one that walks every `status = active`
# token (45-56 ms a request with 2.5M Consents, against 0.07 ms planned for these values). The
# kind first (few rows, then stop at the first), its status and liveness checked per row.
_TOKEN = INDEX_TABLES["token"].name
_ANY_ACTIVE_DENY = text(
    f"SELECT 1 FROM {_TOKEN} kind JOIN {RESOURCE.name} r ON r.pk = kind.resource_pk"
    " WHERE kind.resource_type = 'Consent' AND kind.param = 'category'"
    f" AND kind.system = '{KIND_SYSTEM}'"
    f" AND kind.code IN ({', '.join(repr(k) for k in sorted(DENY_KINDS))})"
    " AND NOT r.deleted"
    f" AND EXISTS (SELECT 1 FROM {_TOKEN} status WHERE status.resource_pk = kind.resource_pk"
    " AND status.resource_type = 'Consent' AND status.param = 'status'"
    " AND status.code = 'active')"
    " LIMIT 1"
)


class RequestFacts:
    """The policy's `Facts`, over this request's repository."""

    def __init__(
        self,
        repo: Repository,
        identity: Vigilance,
        authorize: Callable[[Authorization], None] = lambda _: None,
    ) -> None:
        self.repo = repo
        self.identity = identity
        self.record = authorize
        self._sites: dict[str, set[str]] = {}
        self._registered: set[str] | None = None
        self._known: dict[tuple[str, frozenset[str]], bool] = {}
        self._resources: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._any_consent: bool | None = None
        self._consents: dict[frozenset[str], list[Decision]] = {}
        self._denies: dict[frozenset[str], Denies] = {}
        self._grants: dict[str, dict[str, Grant]] = {}

    def on_write(self, stored: Stored) -> None:
        """Forget what this write may change, so that a later entry of the same transaction
        (a study after its patient's opposition, a Binary after its DocumentReference) is
        decided on what the transaction wrote."""
        self._resources.pop((stored.type, stored.id), None)
        if stored.type == "Consent":
            self._any_consent = None
            self._consents.clear()
            self._denies.clear()
        elif stored.type == "Organization":
            self._sites.clear()
            self._registered = None
        elif stored.type == "Task":
            self._grants.clear()
        elif stored.type == "Patient":
            self._known.clear()
            self._consents.clear()
            self._denies.clear()

    def site_namespaces(self, site_id: str) -> set[str]:
        """The site's declared namespaces (site registry), and always its default one."""
        if site_id not in self._sites:
            declared = {ipp_system(site_id)}
            for org in self.repo.by_identifier("Organization", SITE_ID_SYSTEM, site_id):
                for ident in org.resource.get("identifier", []):
                    if ident.get("system") == NAMESPACE_SYSTEM and ident.get("value"):
                        declared.add(ident["value"])
            self._sites[site_id] = declared
        return self._sites[site_id]

    def registered_namespaces(self) -> set[str]:
        """Every namespace some site declares."""
        if self._registered is None:
            self.repo.flush()
            token = INDEX_TABLES["token"]
            rows = self.repo.session.execute(
                select(token.c.code)
                .join(RESOURCE, RESOURCE.c.pk == token.c.resource_pk)
                .where(
                    token.c.resource_type == "Organization",
                    token.c.param == "identifier",
                    token.c.system == NAMESPACE_SYSTEM,
                    RESOURCE.c.deleted == false(),
                )
            )
            self._registered = {r[0] for r in rows if r[0]}
        return self._registered

    def known_in(self, patient_id: str, namespaces: set[str]) -> bool:
        """True when the person of this record has a record in one of these namespaces."""
        key = (patient_id, frozenset(namespaces))
        if key not in self._known:
            self._known[key] = self.identity.known_in(patient_id, namespaces)
        return self._known[key]

    def records_of_person(self, patient_id: str) -> set[str]:
        """Every record of this record's person (itself included)."""
        return self.identity.members([patient_id])

    def lookup(self, type_name: str, resource_id: str) -> dict[str, Any] | None:
        """The current content of a resource, None when unknown or deleted (a Binary's
        `securityContext`, decided on with its rights); read once per request."""
        key = (type_name, resource_id)
        if key not in self._resources:
            stored = self.repo.current(type_name, resource_id)
            live = stored is not None and not stored.deleted and stored.content is not None
            self._resources[key] = stored.resource if stored is not None and live else None
        return self._resources[key]

    def consents_exist(self) -> bool:
        """True when some active opposition or exam opposition is stored at all (one indexed
        probe per request): without one, no item needs a consent decision."""
        if self._any_consent is None:
            self.repo.flush()
            found = self.repo.session.execute(_ANY_ACTIVE_DENY).first()
            self._any_consent = found is not None
        return self._any_consent

    def consents_of(self, patient_id: str) -> list[Decision]:
        """The active decisions of this record's person (Consents whose `patient` is any of the
        person's records) that access decisions read (denies and community-sharing permits), in
        one statement per person and request."""
        records = frozenset(self.records_of_person(patient_id))
        if records not in self._consents:
            consents = self._referring(
                "Consent", "patient", target_type="Patient", target_id=sorted(records)
            )
            found = [decision(s.resource) for s in consents if s.content is not None]
            self._consents[records] = [d for d in found if d.active and d.kind in ENFORCED_KINDS]
        return self._consents[records]

    def denies_of(self, patient_id: str) -> Denies:
        """The active denies of this record's person, indexed for the per-item decisions."""
        records = frozenset(self.records_of_person(patient_id))
        if records not in self._denies:
            self._denies[records] = Denies.of(self.consents_of(patient_id))
        return self._denies[records]

    def remember(self, found: list[Stored]) -> None:
        """Current versions this request has read anyway (a search page): `lookup` answers
        them without asking the database again (a report's study, decided with its page)."""
        for stored in found:
            if not stored.deleted and stored.content is not None:
                self._resources.setdefault((stored.type, stored.id), stored.resource)

    def grants(self, subject: str) -> dict[str, Grant]:
        """The open break-glass grants of this caller, by Patient record: a grant opens every
        record of its patient's person."""
        if subject not in self._grants:
            tasks = self._referring(
                "Task", "requester", identifier_system=SUBJECT_SYSTEM, identifier_value=subject
            )
            now = now_utc()
            out: dict[str, Grant] = {}
            for current in tasks:
                first = self.repo.version("Task", current.id, 1)
                if first is None or first.content is None or current.content is None:
                    continue
                grant = read_grant(first.resource, current.resource, subject, now)
                if grant is None:
                    continue
                for record in self.records_of_person(grant.patient_id):
                    if record not in out or out[record].end < grant.end:
                        out[record] = grant
            self._grants[subject] = out
        return self._grants[subject]

    def _referring(self, type_name: str, param: str, **match: str | list[str]) -> list[Stored]:
        """The live resources of `type_name` whose reference parameter `param` matches (its
        index columns: a value, or a list of values), in one statement."""
        self.repo.flush()
        reference = INDEX_TABLES["reference"]
        conditions = [
            reference.c[column].in_(value)
            if isinstance(value, list)
            else reference.c[column] == value
            for column, value in match.items()
        ]
        rows = self.repo.session.execute(
            select(RESOURCE)
            .join(reference, reference.c.resource_pk == RESOURCE.c.pk)
            .where(
                reference.c.resource_type == type_name,
                reference.c.param == param,
                RESOURCE.c.deleted == false(),
                *conditions,
            )
        ).all()
        return list({row.pk: self.repo.row_stored(row) for row in rows}.values())

    def prescribers(self, type_name: str, resource: dict[str, Any]) -> set[str]:
        """The RPPS numbers of who ordered this exam: an ImagingStudy's `referrer` and the
        `requester` of the ServiceRequests it is `basedOn`; a ServiceRequest's `requester`; a
        DocumentReference's through the studies of its `context.related` about the same
        patient (its report)."""
        if type_name == "ServiceRequest":
            return self._rpps_of(resource.get("requester"))
        if type_name == "DocumentReference":
            # The report of a prescribed study, about the same patient (a document about
            # someone else that points at the study is not the prescriber's).
            subject = (resource.get("subject") or {}).get("reference")
            out: set[str] = set()
            for related in _dicts((resource.get("context") or {}).get("related")):
                target = local_reference(related.get("reference"))
                if target is not None and target[0] == "ImagingStudy":
                    study = self.lookup(*target)
                    if (
                        study is not None
                        and (study.get("subject") or {}).get("reference") == subject
                    ):
                        out |= self.prescribers("ImagingStudy", study)
            return out
        if type_name != "ImagingStudy":
            return set()
        found = self._rpps_of(resource.get("referrer"))
        for based_on in _dicts(resource.get("basedOn")):
            target = local_reference(based_on.get("reference"))
            if target is not None and target[0] == "ServiceRequest":
                order = self.lookup(*target)
                if order is not None:
                    found |= self._rpps_of(order.get("requester"))
        return found

    def _rpps_of(self, reference: Any, hops: int = 0) -> set[str]:
        """RPPS numbers a reference names: a logical reference by RPPS/IDNPS identifier, a
        Practitioner's identifiers, a PractitionerRole's practitioner."""
        if not isinstance(reference, dict) or hops > 1:
            return set()
        ident = reference.get("identifier")
        if isinstance(ident, dict) and ident.get("system") in RPPS_SYSTEMS:
            value = ident.get("value")
            return {rpps(value)} if isinstance(value, str) and value.strip() else set()
        target = local_reference(reference.get("reference"))
        if target is None:
            return set()
        content = (
            self.lookup(*target) if target[0] in ("Practitioner", "PractitionerRole") else None
        )
        if content is None:
            return set()
        if target[0] == "PractitionerRole":
            return self._rpps_of(content.get("practitioner"), hops + 1)
        return {
            rpps(i["value"])
            for i in _dicts(content.get("identifier"))
            if i.get("system") in RPPS_SYSTEMS and isinstance(i.get("value"), str)
        }


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
