"""Registry synchronisation of patients' decisions: an out-of-order version is refused.

Regional registries push Consents by conditional update on `identifier` (FHIR R4 http.html
"conditional update"; IHE PCF) and replay their feeds. For one decision the version with the
later `dateTime` wins (profiles/README.md, "Withdrawal and supersession"): an incoming version
whose `dateTime` is strictly older than the stored one's is stale, and applying it would revive
a decision the patient has since changed (a withdrawal undone by a late replay).
"""

from __future__ import annotations

from typing import Any

from app.errors import Conflict, Issue
from app.fhir.values import date_range

# The types whose versions carry the time of the decision they record, by that element.
DECIDED_AT: dict[str, str] = {"Consent": "dateTime"}


def check_not_stale(type_name: str, stored: dict[str, Any], incoming: dict[str, Any]) -> None:
    """Refuse (409) an incoming version whose decision time is strictly older than the stored
    version's. Equal times are a correction of the same decision and pass; a version without a
    time, or a time that cannot be ordered, is not judged here (validation owns its shape).

    FHIR dateTimes are compared as the intervals they denote (a date-only `2024-03-05` is the
    whole day, time zones normalised): "strictly older" means the incoming interval ends at or
    before the stored one begins, so a value of coarser precision that overlaps is never stale.
    """
    element = DECIDED_AT.get(type_name)
    if element is None:
        return
    old, new = stored.get(element), incoming.get(element)
    if not isinstance(old, str) or not isinstance(new, str):
        return
    try:
        old_low, _ = date_range(old)
        _, new_high = date_range(new)
    except ValueError:
        return
    if new_high <= old_low:
        raise Conflict(
            f"Stale {type_name}: its {element} {new} is older than the stored version's "
            f"{old}; the later decision stands and nothing was written",
            issues=[
                Issue(
                    "conflict",
                    f"Stale {type_name}: incoming {element} {new} is older than the stored "
                    f"version's {element} {old}",
                    expression=[f"{type_name}.{element}"],
                )
            ],
        )
