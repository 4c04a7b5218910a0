"""The CapabilityStatement, generated from the resource registry (FHIR R4 capabilitystatement)."""

from __future__ import annotations

from typing import Any

from app import __version__
from app.config import Settings
from app.fhir.bundles import RIX_CANONICAL
from app.fhir.registry import Registry
from app.fhir.values import format_instant, now_utc

_RESULT_PARAMS = (
    ("_sort", "string", "Sort keys, comma-separated, '-' for descending"),
    ("_count", "number", "Page size (capped by the server maximum)"),
    ("_include", "special", "Type:param[:Target], with :iterate"),
    ("_revinclude", "special", "Type:param[:Target], with :iterate"),
    ("_summary", "token", "count | data | false"),
    ("_elements", "string", "Top-level elements to return"),
    ("_total", "token", "none | estimate | accurate"),
    ("_has", "special", "Reverse chaining: _has:Type:reference:param=value"),
)


# Type-level operations (IHE PIXm, PDQm, identity vigilance, priors, break-glass): (type, name,
# definition).
_OPERATIONS = {
    "Patient": (
        ("ihe-pix", "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"),
        ("match", "http://hl7.org/fhir/OperationDefinition/Patient-match"),
        ("link", f"{RIX_CANONICAL}/OperationDefinition/Patient-link"),
        ("unlink", f"{RIX_CANONICAL}/OperationDefinition/Patient-unlink"),
        ("priors", f"{RIX_CANONICAL}/OperationDefinition/Patient-priors"),
        ("break-glass", f"{RIX_CANONICAL}/OperationDefinition/Patient-break-glass"),
    ),
    "ImagingStudy": (("kos", f"{RIX_CANONICAL}/OperationDefinition/ImagingStudy-kos"),),
    "Endpoint": (("health", f"{RIX_CANONICAL}/OperationDefinition/Endpoint-health"),),
}
_INSTANTIATES = (
    "https://profiles.ihe.net/ITI/PIXm/CapabilityStatement/IHE.PIXm.Manager",
    "https://profiles.ihe.net/ITI/PDQm/CapabilityStatement/IHE.PDQm.Supplier",
    "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentRecipient.Comprehensive",
    "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentResponder",
)
_PERSON_SEARCH = (
    "Person-wide patient searches (IHE PIXm): on every type but Patient, `patient` and `subject` "
    "criteria naming a Patient (`Patient/id`, or the chain `patient.identifier=system|value`) "
    "match the data of every record linked to that Patient's person (same trusted INS, a "
    "site's merge, or an identity-vigilance decision): a site querying with its own IPP gets "
    "the person's exams from every site. An unlink takes effect at once. Patient resources "
    "show the person's other records as `link` (seealso) and a `homonym` meta tag when another "
    "person has the same name and birth date."
)


_CHANGE_FEED = (
    "A searchset or history Bundle's meta.lastUpdated is a safe horizon, the same on every page "
    "of one snapshot: every version stamped before it was committed and readable when the first "
    "page was read. Follow changes with `_history?_since=<that meta.lastUpdated>`, paging to the "
    "end each time: nothing is missed (at least once: de-duplicate by id and versionId). "
    "Consents are withdrawn (status=inactive), never deleted; a Consent whose dateTime is older "
    "than the stored one's is refused (409). "
)


def capability_statement(registry: Registry, base_url: str, settings: Settings) -> dict[str, Any]:
    """What this server does, for every registered type."""
    resources = []
    for name in registry.names():
        definition = registry.get(name)
        params = [
            {
                "name": p.code,
                "definition": f"http://hl7.org/fhir/SearchParameter/{name}-{p.code}"
                if not p.code.startswith("_")
                else f"http://hl7.org/fhir/SearchParameter/Resource-{p.code[1:]}",
                "type": p.type,
                **({"documentation": p.description} if p.description else {}),
            }
            for p in sorted(definition.params.values(), key=lambda p: p.code)
        ]
        params += [
            {"name": code, "type": type_, "documentation": doc}
            for code, type_, doc in _RESULT_PARAMS
        ]
        resources.append(
            {
                "type": name,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{name}",
                "interaction": [{"code": i} for i in definition.interactions],
                "versioning": "versioned-update"
                if "update" in definition.interactions
                else "versioned",
                "readHistory": "vread" in definition.interactions,
                "updateCreate": "update" in definition.interactions,
                "conditionalCreate": definition.conditional_create,
                "conditionalRead": "not-match",
                "conditionalUpdate": definition.conditional_update,
                "conditionalDelete": "single" if definition.conditional_delete else "not-supported",
                "referencePolicy": ["literal", "logical", "resolves"],
                "searchInclude": sorted(
                    f"{name}:{p.code}" for p in definition.params.values() if p.type == "reference"
                ),
                "searchRevInclude": sorted(
                    f"{other}:{p.code}"
                    for other in registry.names()
                    for p in registry.get(other).params.values()
                    if p.type == "reference" and (not p.targets or name in p.targets)
                ),
                "searchParam": params,
                **(
                    {
                        "operation": [
                            {"name": op, "definition": definition}
                            for op, definition in _OPERATIONS[name]
                        ],
                        **({"documentation": _PERSON_SEARCH} if name == "Patient" else {}),
                    }
                    if name in _OPERATIONS
                    else {}
                ),
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "url": f"{RIX_CANONICAL}/CapabilityStatement/rix",
        "name": "RIX",
        "title": "RIX - Regional Imaging eXchange",
        "status": "active",
        "date": format_instant(now_utc())[:10],
        "publisher": "RIX",
        "kind": "instance",
        "instantiates": list(_INSTANTIATES),
        "software": {"name": "RIX", "version": __version__},
        "implementation": {"description": "RIX FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json", "application/fhir+xml", "xml"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Search results page on a snapshot: next/previous links carry _offset and "
                    "_snapshot so that resources created while a client pages never shift pages. "
                    + _CHANGE_FEED
                    + _PERSON_SEARCH
                ),
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                "operation": [
                    {
                        "name": "access-check",
                        "definition": f"{RIX_CANONICAL}/OperationDefinition/access-check",
                    }
                ],
            }
        ],
    }
