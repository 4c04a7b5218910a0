"""Collects what a request touches and turns it into BALP AuditEvents when the request ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.audit.balp import MINOR, SERIOUS, Authorization, Touch, audit_event, authorization_event
from app.errors import FhirError
from app.policy.principal import Principal

# Directory data, not patient data: reading it is not audited (writing it is).
UNAUDITED_READS = {"Organization", "Endpoint", "Practitioner", "PractitionerRole"}
READS = {"read", "vread", "history-instance", "search-type", "history-type", "history-system"}
WRITES = {"create", "update", "patch", "delete"}


@dataclass
class AuditRecorder:
    """One request's audit: touches are added as the services work, events built at the end."""

    principal: Principal | None
    request_id: str | None
    enabled: bool = True
    touches: list[Touch] = field(default_factory=list)
    # The policy seam's decisions worth a record of their own (BALP AuthZconsent), in order.
    authorizations: dict[Authorization, None] = field(default_factory=dict)

    def touch(
        self,
        interaction: str,
        type_name: str | None,
        *,
        items: list[str] | None = None,
        patients: set[str] | None = None,
        query: str | None = None,
    ) -> Touch:
        """Note an interaction; later calls may add items and patients to the returned Touch."""
        touch = Touch(interaction, type_name, list(items or []), set(patients or set()), query)
        self.touches.append(touch)
        return touch

    def authorize(self, decision: Authorization) -> None:
        """Note a decision of the policy seam (the same one twice is recorded once)."""
        self.authorizations[decision] = None

    def _authorization_events(self) -> list[dict[str, Any]]:
        """One AuthZconsent event per patient, outcome, reason and deciding Consents, naming
        every item the decision applied to in this request."""
        grouped: dict[tuple[str, tuple[str, ...], bool, str], list[str]] = {}
        for a in self.authorizations:
            grouped.setdefault((a.patient, a.consents, a.permit, a.reason), []).append(a.item)
        return [
            authorization_event(
                patient,
                consents,
                permit,
                f"{reason}: {', '.join(items)}",
                principal=self.principal,
                request_id=self.request_id,
            )
            for (patient, consents, permit, reason), items in grouped.items()
        ]

    def _audited(self, touch: Touch) -> bool:
        if touch.type == "AuditEvent" and touch.interaction == "create":
            return False  # an ITI-20 record is its own trace
        return not (touch.interaction in READS and touch.type in UNAUDITED_READS)

    def _grouped(self) -> list[Touch]:
        """Audited touches, the writes of one kind merged: a transaction Bundle creating 100
        resources leaves one Create event naming all of them, not 100 events."""
        out: list[Touch] = []
        writes: dict[tuple[str, str | None], Touch] = {}
        for t in self.touches:
            if not self._audited(t):
                continue
            if t.interaction not in WRITES:
                out.append(t)
                continue
            merged = writes.get((t.interaction, t.type))
            if merged is None:
                merged = writes[(t.interaction, t.type)] = Touch(t.interaction, t.type)
                out.append(merged)
            for item, patients in t.links or [(i, frozenset(t.patients)) for i in t.items]:
                merged.add(item, set(patients))
        return [split for touch in out for split in touch.per_patient()]

    def success_events(self) -> list[dict[str, Any]]:
        """The events of a request that succeeded."""
        if not self.enabled:
            return []
        return [
            audit_event(t, principal=self.principal, request_id=self.request_id)
            for t in self._grouped()
        ] + self._authorization_events()

    def failure_events(self, error: FhirError | None) -> list[dict[str, Any]]:
        """The events of a request that failed: every refusal and error is traced, with the
        internal reason (never shown to the caller)."""
        if not self.enabled:
            return []
        status = error.status if error else 500
        text = error.diagnostics if error else "internal error"
        outcome = SERIOUS if status >= 500 else MINOR
        touches = self._grouped() or [Touch("operation", None)]
        return [
            audit_event(
                Touch(t.interaction, t.type, t.items, t.patients, t.query),
                principal=self.principal,
                request_id=self.request_id,
                outcome=outcome,
                outcome_text=f"{status}: {text}",
            )
            for t in touches
        ] + self._authorization_events()
