"""Break-glass grants as the policy reads them: pure functions over the `Task` RIX writes for
each `$break-glass` (`app.services.breakglass`).

A grant is a Task with code `access-task#break-glass`: `for` the Patient record, `requester` the
holder (by token subject), `reasonCode.text` the reason, `restriction.period` the validity; its
status `cancelled` (the DPO's) ends it early. Its terms are read from the Task's first version,
which only RIX writes, so editing the Task (the DPO's review) cannot widen a grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.audit.balp import SUBJECT_SYSTEM
from app.fhir.bundles import RIX_CANONICAL

ACCESS_TASK_SYSTEM = f"{RIX_CANONICAL}/CodeSystem/access-task"
BREAK_GLASS_CODE = "break-glass"
# What RIX writes of a grant and nobody may change afterwards.
GRANT_TERMS = ("code", "for", "requester", "reasonCode", "restriction", "authoredOn", "input")
# Status values that end a grant before its period does (the DPO's decision).
ENDED = frozenset({"cancelled", "rejected", "failed", "entered-in-error"})


@dataclass(frozen=True)
class Grant:
    """An open break-glass grant on one Patient record."""

    task_id: str
    patient_id: str
    reason: str
    end: datetime


def is_break_glass(task: dict[str, Any]) -> bool:
    """True for a Task carrying the break-glass code."""
    codings = (task.get("code") or {}).get("coding") or []
    return any(
        isinstance(c, dict)
        and c.get("system") == ACCESS_TASK_SYSTEM
        and c.get("code") == BREAK_GLASS_CODE
        for c in codings
    )


def read_grant(
    first: dict[str, Any], current: dict[str, Any], holder: str, now: datetime
) -> Grant | None:
    """The grant a break-glass Task holds for `holder` (a token subject) at `now` (naive UTC):
    its terms, holder included, from the first version (RIX's), its end from the current
    status; None when expired, ended, someone else's or not a grant."""
    if not is_break_glass(first) or current.get("status") in ENDED:
        return None
    requester = ((first.get("requester") or {}).get("identifier")) or {}
    if requester.get("system") != SUBJECT_SYSTEM or requester.get("value") != holder:
        return None
    target = ((first.get("for") or {}).get("reference") or "").split("/")
    end_text = ((first.get("restriction") or {}).get("period") or {}).get("end")
    if len(target) != 2 or target[0] != "Patient" or not isinstance(end_text, str):
        return None
    try:
        end = datetime.fromisoformat(end_text)
    except ValueError:
        return None
    if end.tzinfo is not None:  # RIX writes UTC instants; `now` is naive UTC (now_utc)
        end = end.astimezone(UTC).replace(tzinfo=None)
    if end <= now:
        return None
    reason = str((first.get("reasonCode") or {}).get("text") or "")
    return Grant(str(first.get("id") or ""), target[1], reason, end)
