"""The role x resource-type matrix: which `subject_role` may do what (SMART letters c r u d s).

This table is the documentation too (README "Roles"): change it here, not in routes.
"""

from __future__ import annotations

ALL = "cruds"
READ = "rs"

# Clinical data: a clinical role sees an item only through a care relationship with its patient
# (`app.policy.seam`); a Binary (a document's bytes) through its `securityContext`.
CLINICAL_DATA = ("ServiceRequest", "ImagingStudy", "DocumentReference", "List", "Binary")

MATRIX: dict[str, dict[str, str]] = {
    # Consents are withdrawn (status inactive), never deleted: nobody has `d` on them.
    "admin": {"*": ALL, "AuditEvent": READ, "Consent": "crus"},
    # Identity vigilance: reviews suspected duplicates (Task), links and unlinks records.
    "identity-officer": {
        "Organization": READ,
        "Endpoint": READ,
        "Patient": READ,
        "Task": "rus",
    },
    "site-system": {
        "Organization": READ,
        "Endpoint": READ,
        "Practitioner": ALL,
        "PractitionerRole": ALL,
        "Patient": ALL,
        **dict.fromkeys(CLINICAL_DATA, ALL),
        "Consent": "crus",
        "Task": "crus",
        "Provenance": "crs",
        "AuditEvent": "c",
    },
    "radiologist": {
        "Organization": READ,
        "Endpoint": READ,
        "Practitioner": READ,
        "PractitionerRole": READ,
        "Patient": READ,
        **dict.fromkeys(CLINICAL_DATA, READ),
        "Consent": READ,
        "Provenance": READ,
    },
    "gp": {
        "Organization": READ,
        "Endpoint": READ,
        "Practitioner": READ,
        "PractitionerRole": READ,
        "Patient": READ,
        **dict.fromkeys(CLINICAL_DATA, READ),
    },
    "registry": {
        "Organization": READ,
        "Endpoint": READ,
        "Patient": READ,
        "Consent": "crus",
        "Task": "crus",
    },
    "dpo": {
        "*": READ,
        # Reviews Tasks (suspected duplicates, break-glass) and files and decides patients'
        # deletion requests (`app.services.deletion`).
        "Task": "crus",
    },
    "patient": {
        "Patient": READ,
        # Binary carries no patient link to check: patients reach documents through
        # DocumentReference (attachment data) instead.
        **dict.fromkeys(CLINICAL_DATA[:-1], READ),
        "Consent": READ,
        "AuditEvent": READ,
    },
}
MATRIX["clinician"] = dict(MATRIX["radiologist"])


def role_allows(role: str, type_name: str, letter: str) -> bool:
    """True when `role` may do the interaction `letter` on `type_name`."""
    grants = MATRIX.get(role, {})
    return letter in grants.get(type_name, grants.get("*", ""))
