"""The data the policy seam's decisions need (site namespaces, who is known where), looked up
once per request."""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, select

from app.fhir.naming import NAMESPACE_SYSTEM, SITE_ID_SYSTEM, ipp_system
from app.identity.vigilance import Vigilance
from app.policy.consent import DENY_KINDS, KIND_SYSTEM, Decision, decision
from app.storage.repository import Repository
from app.storage.tables import INDEX_TABLES, RESOURCE


class RequestFacts:
    """The policy's `Facts`, over this request's repository."""

    def __init__(self, repo: Repository, identity: Vigilance) -> None:
        self.repo = repo
        self.identity = identity
        self._sites: dict[str, set[str]] = {}
        self._registered: set[str] | None = None
        self._known: dict[tuple[str, frozenset[str]], bool] = {}
        self._resources: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._any_consent: bool | None = None
        self._consents: dict[frozenset[str], list[Decision]] = {}

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
            status = INDEX_TABLES["token"].alias("status")
            kind = INDEX_TABLES["token"].alias("kind")
            found = self.repo.session.execute(
                select(status.c.resource_pk)
                .join(kind, kind.c.resource_pk == status.c.resource_pk)
                .join(RESOURCE, RESOURCE.c.pk == status.c.resource_pk)
                .where(
                    status.c.resource_type == "Consent",
                    status.c.param == "status",
                    status.c.code == "active",
                    kind.c.resource_type == "Consent",
                    kind.c.param == "category",
                    kind.c.system == KIND_SYSTEM,
                    kind.c.code.in_(sorted(DENY_KINDS)),
                    RESOURCE.c.deleted == false(),
                )
                .limit(1)
            ).first()
            self._any_consent = found is not None
        return self._any_consent

    def consents_of(self, patient_id: str) -> list[Decision]:
        """The active decisions of this record's person (Consents whose `patient` is any of the
        person's records), in one statement per person and request."""
        if not self.consents_exist():
            return []
        records = frozenset(self.records_of_person(patient_id))
        if records not in self._consents:
            self.repo.flush()
            reference = INDEX_TABLES["reference"]
            rows = self.repo.session.execute(
                select(RESOURCE)
                .join(reference, reference.c.resource_pk == RESOURCE.c.pk)
                .where(
                    reference.c.resource_type == "Consent",
                    reference.c.param == "patient",
                    reference.c.target_type == "Patient",
                    reference.c.target_id.in_(sorted(records)),
                    RESOURCE.c.deleted == false(),
                )
            ).all()
            unique = {row.pk: self.repo.row_stored(row) for row in rows}.values()
            found = [decision(s.resource) for s in unique if s.content is not None]
            self._consents[records] = [d for d in found if d.active and d.kind in DENY_KINDS]
        return self._consents[records]
