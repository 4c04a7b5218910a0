"""The process runtime: settings, database, registry and search parser, built by create_app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.audit.balp import MINOR, Touch, audit_event
from app.audit.recorder import AuditRecorder
from app.audit.trail import AuditTrail, load_key
from app.auth.keys import KeySet, dev_jwks
from app.auth.tokens import TokenVerifier
from app.config import Settings
from app.errors import FhirError
from app.fhir.registry import Registry, build_registry
from app.fhir.search import SearchParser
from app.policy.principal import SYSTEM, Principal
from app.policy.seam import Policy, Rules
from app.services.resources import Access, ResourceService
from app.storage.db import make_engine, session_factory, transaction
from app.storage.repository import Repository


@dataclass
class Runtime:
    """Everything a request needs that outlives it. Holds no patient state: the database does."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: Registry
    parser: SearchParser
    verifier: TokenVerifier
    trail: AuditTrail
    policy: Policy

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """Connect to the configured database and load the resource registry."""
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        registry = build_registry()
        parser = SearchParser(
            registry,
            default_count=settings.default_page_size,
            max_count=settings.max_page_size,
            max_include=settings.max_include,
        )
        if settings.env == "production" and not settings.audit:
            raise RuntimeError("RIX_AUDIT=false is refused in production")
        if settings.env == "production" and not settings.consent_enforcement:
            raise RuntimeError("RIX_CONSENT_ENFORCEMENT=false is refused in production")
        rules = Rules(
            opt_in=settings.community_policy == "opt-in",
            enforce=settings.consent_enforcement,
            break_glass_hours=settings.break_glass_hours,
            deletion_approval=settings.deletion_approval,
        )
        return cls(
            settings,
            engine,
            session_factory(engine),
            registry,
            parser,
            TokenVerifier(settings, trusted_keys(settings)),
            AuditTrail(load_key(settings)),
            Policy(registry, parser, rules),
        )

    @contextmanager
    def resources(
        self,
        base_url: str | None,
        *,
        write: bool = False,
        principal: Principal = SYSTEM,
        request_id: str | None = None,
    ) -> Iterator[ResourceService]:
        """A ResourceService for `principal` inside one database transaction.

        Audit (fail closed): the AuditEvents of a request commit in the same transaction as
        what it did, before the caller gets any result; a failed or refused request is recorded
        in a transaction of its own after the rollback.
        """
        recorder = AuditRecorder(principal, request_id, enabled=self.settings.audit)
        try:
            # With audit on, every unit writes (its own record), so it starts as a writer.
            with transaction(self.sessions, write=write or self.settings.audit) as session:
                repo = Repository(session, self.registry, base_url)
                access = Access(principal, self.policy, recorder, self.trail)
                service = ResourceService(repo, self.registry, self.parser, access)
                yield service
                service.finish()
                durable = write or self.settings.audit_sync_reads
                self.trail.append(repo, recorder.success_events(), durable=durable)
        except FhirError as exc:
            self._append(recorder.failure_events(exc))
            raise

    def _append(self, events: list[dict[str, Any]]) -> None:
        if events:
            with transaction(self.sessions, write=True) as session:
                self.trail.append(Repository(session, self.registry), events)

    def record_authentication_failure(
        self, request_id: str | None, claimed_subject: str | None, reason: str
    ) -> None:
        """Audit a refused token (BALP: user authentication, failure) with the internal reason."""
        if not self.settings.audit:
            return
        event = audit_event(
            Touch("operation", None),
            principal=None,
            request_id=request_id,
            outcome=MINOR,
            outcome_text=f"401: {reason}",
            claimed_subject=claimed_subject,
            event_code=(
                "http://dicom.nema.org/resources/ontology/DCM",
                "110114",
                "User Authentication",
            ),
        )
        with transaction(self.sessions, write=True) as session:
            self.trail.append(Repository(session, self.registry), [event])


def trusted_keys(settings: Settings) -> KeySet:
    """The token issuer's keys: RIX_JWKS_FILE, RIX_JWKS_URL, or (development only) the
    development issuer's key from RIX_DATA_DIR."""
    if settings.jwks_file:
        return KeySet.from_file(settings.jwks_file)
    if settings.jwks_url:
        return KeySet(url=settings.jwks_url)
    if settings.env == "production":
        raise RuntimeError("Set RIX_JWKS_FILE or RIX_JWKS_URL: production trusts no built-in key")
    return KeySet(keys=dev_jwks(settings.data_dir)["keys"])
