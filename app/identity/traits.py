"""What identity matching compares in a Patient: normalised names, birth date, INS and its
identity status (FR Core identity reliability), identifier namespaces. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.fhir.naming import IDENTITY_RELIABILITY_URL, INS_SYSTEMS
from app.fhir.values import normalize

# INS identity statuses under which the INS may link records on its own (RNIV: an identity
# validated against an ID document, or qualified against the national INSi service).
TRUSTED_STATUSES = frozenset({"VALI", "QUAL"})


@dataclass(frozen=True)
class Traits:
    """The identity-relevant facts of one Patient record."""

    patient_id: str
    birth_date: str | None
    names: frozenset[tuple[str, str]]  # (normalised family, normalised given names)
    ins: str | None  # "system|value"
    ins_trusted: bool  # the INS may link records on its own (identity status VALI or QUAL)
    systems: frozenset[str]  # identifier systems (namespaces) the record carries
    homonym: bool = False  # flagged: another person has the same name and birth date

    @property
    def names_key(self) -> str:
        """The names, serialised for storage: `family/given|family/given`."""
        return "|".join(sorted(f"{f}/{g}" for f, g in self.names))


def traits_of(patient_id: str, resource: dict[str, Any]) -> Traits:
    """Extract the traits of a Patient resource."""
    names = set()
    for name in resource.get("name", []) or []:
        if not isinstance(name, dict):
            continue
        family = normalize(str(name.get("family") or ""))
        given = normalize(" ".join(str(g) for g in name.get("given", []) or []))
        if family or given:
            names.add((family, given))
    ins = None
    for identifier in resource.get("identifier", []) or []:
        system = identifier.get("system") if isinstance(identifier, dict) else None
        if system in INS_SYSTEMS and identifier.get("value"):
            ins = f"{system}|{identifier['value']}"
            break
    systems = {
        i["system"]
        for i in resource.get("identifier", []) or []
        if isinstance(i, dict) and isinstance(i.get("system"), str)
    }
    return Traits(
        patient_id,
        resource.get("birthDate"),
        frozenset(names),
        ins,
        ins is not None and identity_status(resource) in TRUSTED_STATUSES,
        frozenset(systems),
    )


def identity_status(resource: dict[str, Any]) -> str | None:
    """The identity status code (PROV, VALI, RECUP, QUAL...) of the FR Core identity
    reliability extension, if any."""
    for ext in resource.get("extension", []) or []:
        if not isinstance(ext, dict) or ext.get("url") != IDENTITY_RELIABILITY_URL:
            continue
        for sub in ext.get("extension", []) or []:
            if isinstance(sub, dict) and sub.get("url") == "identityStatus":
                coding = sub.get("valueCoding") or {}
                code = coding.get("code") if isinstance(coding, dict) else sub.get("valueCode")
                if isinstance(code, str):
                    return code.upper()
    return None


def parse_names(key: str) -> frozenset[tuple[str, str]]:
    """The inverse of Traits.names_key."""
    out = set()
    for part in key.split("|") if key else []:
        family, _, given = part.partition("/")
        out.add((family, given))
    return frozenset(out)


def transposed(birth_date: str | None) -> str | None:
    """The same date with day and month swapped (a classic keying error), when valid."""
    if not birth_date or len(birth_date) != 10:
        return None
    year, month, day = birth_date[:4], birth_date[5:7], birth_date[8:10]
    if day == month or not day.isdigit() or int(day) > 12:
        return None
    return f"{year}-{day}-{month}"


def edit_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance."""
    if a == b:
        return 0
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            best = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                best = min(best, rows[-2][j - 2] + 1)
            row.append(best)
        rows.append(row)
    return rows[-1][-1]


def _close(a: str, b: str) -> bool:
    """Close spellings: one typo in a short name, two in a long one."""
    if not a or not b:
        return False
    allowed = 1 if max(len(a), len(b)) <= 6 else 2
    return edit_distance(a.replace(" ", ""), b.replace(" ", "")) <= allowed


def _first_given(given: str) -> str:
    return given.split(" ")[0] if given else ""


def compare(a: Traits, b: Traits) -> tuple[str, float] | None:
    """Why two records might be one person, with a score in [0, 1]; None when they do not
    look alike. Only records with the same (or day/month-transposed) birth date compare."""
    if not a.birth_date or not b.birth_date:
        return None
    same_birth = a.birth_date == b.birth_date
    swapped = not same_birth and transposed(a.birth_date) == b.birth_date
    if not (same_birth or swapped):
        return None
    best: tuple[str, float] | None = None
    for fa, ga in a.names:
        for fb, gb in b.names:
            g1, g2 = _first_given(ga), _first_given(gb)
            if fa == fb and (ga == gb or g1 == g2):
                found = ("same name and birth date", 0.9)
            elif (fa == fb or _close(fa, fb)) and (g1 == g2 or _close(g1, g2)):
                found = ("close spelling, same birth date", 0.7)
            else:
                continue
            if swapped:
                found = ("same name, day and month of birth transposed", 0.6)
            if best is None or found[1] > best[1]:
                best = found
    return best


def same_name_and_birth(a: Traits, b: Traits) -> bool:
    """Homonymy: the same normalised family and given names and the same birth date."""
    return a.birth_date is not None and a.birth_date == b.birth_date and bool(a.names & b.names)
