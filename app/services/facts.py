"""The data the policy seam's decisions need (site namespaces, who is known where), looked up
once per request."""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, select

from app.fhir.naming import NAMESPACE_SYSTEM, SITE_ID_SYSTEM, ipp_system
from app.identity.vigilance import Vigilance
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
