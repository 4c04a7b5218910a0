"""Identifier systems (NamingSystems) RIX uses for sites, PACS emitters and site namespaces."""

from __future__ import annotations

from app.fhir.bundles import RIX_CANONICAL

SITE_ID_SYSTEM = f"{RIX_CANONICAL}/sid/site-id"
EMITTER_SYSTEM = f"{RIX_CANONICAL}/sid/emitter"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
IPP_PREFIX = f"{RIX_CANONICAL}/sid/ipp/"


def ipp_system(site_id: str) -> str:
    """The namespace of a site's local patient identifiers (IPP)."""
    return f"{IPP_PREFIX}{site_id}"
