"""Identifier systems (NamingSystems) and extensions RIX uses for sites, their PACS endpoints,
their patient-identifier namespaces, and identity vigilance."""

from __future__ import annotations

from app.fhir.bundles import RIX_CANONICAL

SITE_ID_SYSTEM = f"{RIX_CANONICAL}/sid/site-id"
EMITTER_SYSTEM = f"{RIX_CANONICAL}/sid/emitter"
AE_TITLE_SYSTEM = f"{RIX_CANONICAL}/sid/ae-title"
# Endpoint.identifier of a registry endpoint without an AE title: value "<site id>-<index>".
ENDPOINT_ID_SYSTEM = f"{RIX_CANONICAL}/sid/endpoint"
# Organization.identifier whose value is the URI of the site's patient-identifier namespace.
NAMESPACE_SYSTEM = f"{RIX_CANONICAL}/sid/patient-id-namespace"
ENDPOINT_TIMEOUT_URL = f"{RIX_CANONICAL}/StructureDefinition/endpoint-timeout"
ENDPOINT_CREDENTIALS_URL = f"{RIX_CANONICAL}/StructureDefinition/endpoint-credentials-ref"
IPP_PREFIX = f"{RIX_CANONICAL}/sid/ipp/"

# INS (Identifiant National de Santé): production NIR-based OID, test and demo OIDs.
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_TEST = "urn:oid:1.2.250.1.213.1.4.10"
INS_DEMO = "urn:oid:1.2.250.1.213.1.4.11"
INS_SYSTEMS = frozenset({INS_NIR, INS_TEST, INS_DEMO})
# FR Core identity reliability (the INS identity status: PROV, VALI, RECUP, QUAL...).
IDENTITY_RELIABILITY_URL = (
    "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
)
# A health professional's national number: FR Core's IDNPS (`8` + the 11-digit RPPS number).
RPPS_SYSTEMS = frozenset({"urn:oid:1.2.250.1.71.4.2.1"})
IDENTITY_TASK_SYSTEM = f"{RIX_CANONICAL}/CodeSystem/identity-task"
IDENTITY_FLAG_SYSTEM = f"{RIX_CANONICAL}/CodeSystem/identity-flag"


def ipp_system(site_id: str) -> str:
    """The default namespace of a site's local patient identifiers (IPP), used when the site
    registry does not declare one."""
    return f"{IPP_PREFIX}{site_id}"


def rpps(value: str) -> str:
    """A professional's RPPS number as compared: the IDNPS form (`8` + the 11-digit RPPS) and
    the bare RPPS are the same professional."""
    value = value.strip()
    return value[1:] if len(value) == 12 and value.startswith("8") else value
