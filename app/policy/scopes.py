"""SMART on FHIR scopes (v2 `context/Type.cruds`, and v1 `.read`/`.write`/`.*`)."""

from __future__ import annotations

import re

# Interaction -> the SMART v2 permission letter it needs.
LETTER = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "search-type": "s",
    "history-type": "s",
    "history-system": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "operation": "r",
}
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([cruds]+|read|write|\*)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


def scope_allows(scopes: tuple[str, ...], type_name: str, interaction: str) -> bool:
    """True when some scope grants `interaction` on `type_name`."""
    needed = LETTER[interaction]
    for scope in scopes:
        match = _SCOPE.match(scope.split("?", 1)[0])
        if not match:
            continue
        _, scoped_type, permissions = match.groups()
        letters = _V1.get(permissions, permissions)
        if scoped_type in ("*", type_name) and needed in letters:
            return True
    return False
