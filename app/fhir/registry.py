"""The resource registry: one entry per served type drives routes, search, capability, OpenAPI."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.errors import NotFound
from app.fhir.searchparams import SearchParam, load_definitions, params_for

# The types RIX serves (FHIR R4). Adding one here needs no migration.
SERVED_TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Endpoint",
    "ServiceRequest",
    "ImagingStudy",
    "DocumentReference",
    "List",
    "Binary",
    "Consent",
    "AuditEvent",
    "Task",
    "Provenance",
)

INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)


@dataclass
class ResourceDefinition:
    """What the server knows about one resource type."""

    name: str
    params: dict[str, SearchParam] = field(default_factory=dict)
    interactions: tuple[str, ...] = INTERACTIONS
    conditional_create: bool = True
    conditional_update: bool = True
    conditional_delete: bool = True
    # Interactions the type refuses on purpose, with the reason the refusal gives (not
    # advertised in the CapabilityStatement, answered 405 with this text).
    refused: dict[str, str] = field(default_factory=dict)

    def param(self, code: str) -> SearchParam | None:
        """The search parameter called `code`, if the type has one."""
        return self.params.get(code)

    def add(self, param: SearchParam) -> None:
        """Register an extra (RIX or IHE profile) search parameter."""
        self.params[param.code] = param


class Registry:
    """The served resource types by name."""

    def __init__(self, definitions: dict[str, ResourceDefinition]) -> None:
        self.types = definitions

    def get(self, name: str) -> ResourceDefinition:
        """The definition of `name`; an unknown or unserved type is a 404."""
        try:
            return self.types[name]
        except KeyError:
            raise NotFound(f"Resource type '{name}' is not supported by this server") from None

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def names(self) -> list[str]:
        """The served type names, in registration order."""
        return list(self.types)


# Audit records are immutable (IHE RESTful ATNA): no update, patch or delete, for anyone.
IMMUTABLE = {"AuditEvent"}
# They have one version each, so no history or vread either: ITI-81 search is the way in.
IMMUTABLE_INTERACTIONS = ("read", "create", "search-type")

# A patient's decision is never erased (profiles/README.md, "Withdrawal and supersession"; IHE
# PCF): it is withdrawn by a new version with status = inactive, so its history stays whole.
NEVER_DELETED = {
    "Consent": (
        "Consents are never deleted: withdraw a decision with a new version of the same "
        "Consent (same identifier) with status=inactive and the withdrawal's dateTime"
    ),
}


def build_registry() -> Registry:
    """The registry of SERVED_TYPES with their R4 search parameters."""
    definitions = load_definitions()
    return Registry(
        {
            name: ResourceDefinition(
                name,
                {p.code: p for p in params_for(name, definitions)},
                IMMUTABLE_INTERACTIONS
                if name in IMMUTABLE
                else tuple(i for i in INTERACTIONS if i != "delete" or name not in NEVER_DELETED),
                conditional_update=name not in IMMUTABLE,
                conditional_delete=name not in IMMUTABLE and name not in NEVER_DELETED,
                refused={"delete": NEVER_DELETED[name]} if name in NEVER_DELETED else {},
            )
            for name in SERVED_TYPES
        }
    )
