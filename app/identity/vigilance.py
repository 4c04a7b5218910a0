"""Identity vigilance, the Patient Identifier Cross-reference Manager's logic (IHE PIXm):
records are one person only when a trusted INS says so, a site merges its own records, or an
identity-vigilance operator decides; every other resemblance becomes a work item (Task) for an
operator, never a merge. Homonyms (same name and birth date, known to be different people) are
flagged so that clients can warn."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, false, insert, or_, select, text, true, update

from app.errors import Conflict, Invalid, NotFound
from app.fhir.naming import IDENTITY_FLAG_SYSTEM, IDENTITY_TASK_SYSTEM
from app.fhir.values import format_instant, now_utc
from app.identity.traits import Traits, compare, parse_names, same_name_and_birth, transposed
from app.identity.traits import traits_of as extract
from app.storage.repository import Repository, Stored
from app.storage.tables import IDENTITY_LINK, IDENTITY_RECORD, RESOURCE

LINKED, DISTINCT = "linked", "distinct"
PAIR_SYSTEM = f"{IDENTITY_TASK_SYSTEM}/pair"
OPEN_TASK = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")
HOMONYM_TAG = {
    "system": IDENTITY_FLAG_SYSTEM,
    "code": "homonym",
    "display": "Homonym: another person has the same name and birth date",
}
_MAX_CANDIDATES = 500
_LOCK_KEY = 0x52495849  # "RIXI": the advisory lock of identity changes
_REC = IDENTITY_RECORD.c
_LINK = IDENTITY_LINK.c


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


class Vigilance:
    """Identity decisions within one unit of work; `author` names who acts (for the record)."""

    def __init__(self, repo: Repository, author: str = "RIX") -> None:
        self.repo = repo
        self.session = repo.session
        self.author = author
        self._persons: dict[str, dict[str, Traits]] = {}  # read cache; writes clear it
        self._locked = False

    def _lock(self) -> None:
        """Serialise identity changes across processes (PostgreSQL): a transaction that
        writes a Patient would otherwise not see another's uncommitted record with the same
        INS or birth date, and both would miss the link or the work item. SQLite has one
        writer at a time already."""
        if not self._locked and self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        self._locked = True

    def prefetch(self, patient_ids: Iterable[str]) -> None:
        """Load the persons of many records in one query (a page of search results)."""
        wanted = sorted(set(patient_ids) - set(self._persons))
        if not wanted:
            return
        persons = select(_REC.person_id).where(_REC.patient_id.in_(wanted))
        by_person: dict[str, dict[str, Traits]] = {}
        rows = self.session.execute(select(IDENTITY_RECORD).where(_REC.person_id.in_(persons)))
        for row in rows:
            by_person.setdefault(row.person_id, {})[row.patient_id] = _traits(row)
        for records in by_person.values():
            for patient_id in records:
                self._persons[patient_id] = records
        for patient_id in wanted:
            self._persons.setdefault(patient_id, {})

    def person(self, patient_id: str) -> dict[str, Traits]:
        """The records of this record's person (itself included), with their traits: one
        query, remembered for the request (for each of the person's records: they share it)
        until a write changes identities."""
        if patient_id not in self._persons:
            asked = IDENTITY_RECORD.alias("asked")
            rows = self.session.execute(
                select(IDENTITY_RECORD)
                .join(asked, asked.c.person_id == _REC.person_id)
                .where(asked.c.patient_id == patient_id)
            )
            records = {row.patient_id: _traits(row) for row in rows}
            for record in records:
                self._persons.setdefault(record, records)
            self._persons[patient_id] = records
        return self._persons[patient_id]

    # -- reading --------------------------------------------------------------------------------

    def members(self, patient_ids: Iterable[str]) -> set[str]:
        """Every record of the persons these records belong to (the records themselves too)."""
        ids = set(patient_ids)
        if len(ids) == 1:
            return ids | set(self.person(next(iter(ids))))
        return self._members_now(ids)

    def person_resources(self, patient_ids: Iterable[str]) -> list[Stored]:
        """The live Patient resources of every record of these records' persons, in one
        statement (PIXm answers from them); a record never screened has no person row and
        stands alone."""
        ids = sorted(set(patient_ids))
        asked = IDENTITY_RECORD.alias("asked")
        rows = self.session.execute(
            select(RESOURCE)
            .join(IDENTITY_RECORD, _REC.patient_id == RESOURCE.c.resource_id)
            .join(asked, asked.c.person_id == _REC.person_id)
            .where(
                asked.c.patient_id.in_(ids),
                RESOURCE.c.resource_type == "Patient",
                RESOURCE.c.deleted == false(),
            )
        ).all()
        found = {row.resource_id: self.repo.row_stored(row) for row in rows}
        missing = {("Patient", i) for i in ids if i not in found}
        return [*found.values(), *self.repo.live_many(missing)] if missing else [*found.values()]

    def _members_now(self, ids: set[str]) -> set[str]:
        """`members`, asked of the database (the engine's view while it changes identities)."""
        if not ids:
            return ids
        persons = select(_REC.person_id).where(_REC.patient_id.in_(sorted(ids)))
        rows = self.session.execute(select(_REC.patient_id).where(_REC.person_id.in_(persons)))
        return ids | {r[0] for r in rows}

    def traits(self, patient_ids: Iterable[str]) -> dict[str, Traits]:
        """The stored traits of these records."""
        ids = sorted(set(patient_ids))
        if not ids:
            return {}
        rows = self.session.execute(select(IDENTITY_RECORD).where(_REC.patient_id.in_(ids)))
        return {row.patient_id: _traits(row) for row in rows}

    def known_in(self, patient_id: str, namespaces: set[str]) -> bool:
        """True when the person of this record has a record in one of these namespaces."""
        if not namespaces:
            return False
        return any(t.systems & namespaces for t in self.person(patient_id).values())

    def decorate(self, patient_id: str, resource: dict[str, Any]) -> bool:
        """Show the person on an outgoing Patient: `link` (seealso) to the person's other
        records, and the homonym flag (a meta tag). True when something was added."""
        records = self.person(patient_id)
        links = [x for x in resource.get("link", []) or [] if isinstance(x, dict)]
        listed = {(x.get("other") or {}).get("reference") for x in links}
        added = [
            {"other": {"reference": f"Patient/{o}"}, "type": "seealso"}
            for o in sorted(set(records) - {patient_id})
            if f"Patient/{o}" not in listed
        ]
        if added:
            resource["link"] = links + added
        own = records.get(patient_id)
        if own is None or not own.homonym:
            return bool(added)
        tags = (resource.setdefault("meta", {})).setdefault("tag", [])
        tags.append(dict(HOMONYM_TAG))
        return True

    def strip_computed(self, patient_id: str | None, resource: dict[str, Any]) -> None:
        """Before a Patient is stored: drop what `decorate` adds (a client writing back what
        it read), so a link or a flag is never frozen into the record and outlives an unlink.
        A `seealso` the client wrote to a record outside the person stays."""
        members = self.person(patient_id) if patient_id else {}
        links = [
            x
            for x in resource.get("link", []) or []
            if not (
                isinstance(x, dict)
                and x.get("type") == "seealso"
                and set(x) == {"other", "type"}
                and set(x.get("other") or {}) == {"reference"}
                and str(x["other"]["reference"]).removeprefix("Patient/") in members
            )
        ]
        if links:
            resource["link"] = links
        else:
            resource.pop("link", None)
        meta = resource.get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("tag"), list):
            meta["tag"] = [t for t in meta["tag"] if t.get("system") != IDENTITY_FLAG_SYSTEM]
            if not meta["tag"]:
                del meta["tag"]

    def candidates(self, wanted: Traits) -> list[Traits]:
        """Records born on the same date (or with day and month transposed)."""
        dates = [d for d in (wanted.birth_date, transposed(wanted.birth_date)) if d]
        if not dates:
            return []
        rows = self.session.execute(
            select(IDENTITY_RECORD).where(_REC.birth_date.in_(dates)).limit(_MAX_CANDIDATES)
        )
        return [_traits(row) for row in rows]

    # -- the engine: every Patient write ---------------------------------------------------------

    def on_write(self, stored: Stored) -> None:
        """Reconcile identity after a Patient record was created, changed or deleted."""
        if stored.type != "Patient":
            return
        try:
            self._reconcile(stored)
        finally:
            self._persons.clear()

    def _reconcile(self, stored: Stored) -> None:
        self._lock()
        before = self._members_now({stored.id})
        old = self.traits([stored.id]).get(stored.id)
        # Records that were this one's homonyms may not be any more (a corrected birth date,
        # a deletion): their flags are recomputed at the end.
        was_alike = self._alike(old) if old else set()
        if stored.deleted:
            self.session.execute(
                delete(IDENTITY_LINK).where(or_(_LINK.a == stored.id, _LINK.b == stored.id))
            )
            self.session.execute(delete(IDENTITY_RECORD).where(_REC.patient_id == stored.id))
            self._recompute(before - {stored.id})
            self._set_homonym(was_alike)
            return
        traits = extract(stored.id, stored.resource)
        self._save(traits)
        self._drop_stale_ins_links(traits)
        self._recompute(before | {stored.id})
        self._ins_links(traits)
        self._site_links(traits, stored.resource)
        self._recompute(before | self._members_now({stored.id}))
        self._screen(traits)
        self._set_homonym(was_alike)

    def _alike(self, t: Traits) -> set[str]:
        """Other records with the same names and birth date."""
        if not t.birth_date or not t.names:
            return set()
        rows = self.session.execute(
            select(IDENTITY_RECORD)
            .where(_REC.birth_date == t.birth_date, _REC.patient_id != t.patient_id)
            .limit(_MAX_CANDIDATES)
        )
        return {row.patient_id for row in rows if same_name_and_birth(t, _traits(row))}

    def _save(self, t: Traits) -> None:
        values = {
            "birth_date": t.birth_date,
            "names": t.names_key,
            "ins": t.ins,
            "ins_trusted": t.ins_trusted,
            "systems": " ".join(sorted(t.systems)),
        }
        exists = self.session.execute(
            select(_REC.patient_id).where(_REC.patient_id == t.patient_id)
        ).first()
        if exists:
            self.session.execute(
                update(IDENTITY_RECORD).where(_REC.patient_id == t.patient_id).values(**values)
            )
        else:
            self.session.execute(
                insert(IDENTITY_RECORD).values(
                    patient_id=t.patient_id, person_id=t.patient_id, homonym=False, **values
                )
            )

    def _edges(self, patient_id: str) -> list[Any]:
        return list(
            self.session.execute(
                select(IDENTITY_LINK).where(or_(_LINK.a == patient_id, _LINK.b == patient_id))
            )
        )

    def _edge(self, a: str, b: str) -> Any:
        a, b = _pair(a, b)
        return self.session.execute(select(IDENTITY_LINK).where(_LINK.a == a, _LINK.b == b)).first()

    def _set_edge(self, a: str, b: str, state: str, basis: str, reason: str) -> None:
        a, b = _pair(a, b)
        self.session.execute(delete(IDENTITY_LINK).where(_LINK.a == a, _LINK.b == b))
        self.session.execute(
            insert(IDENTITY_LINK).values(
                a=a,
                b=b,
                state=state,
                basis=basis,
                author=self.author,
                reason=reason,
                at=now_utc(),
            )
        )

    def _drop_stale_ins_links(self, t: Traits) -> None:
        """An INS link holds only while both records carry the same trusted INS."""
        for edge in self._edges(t.patient_id):
            if edge.state != LINKED or edge.basis != "ins":
                continue
            other = edge.b if edge.a == t.patient_id else edge.a
            theirs = self.traits([other]).get(other)
            if not (t.ins_trusted and theirs and theirs.ins_trusted and theirs.ins == t.ins):
                self.session.execute(
                    delete(IDENTITY_LINK).where(_LINK.a == edge.a, _LINK.b == edge.b)
                )

    def _ins_links(self, t: Traits) -> None:
        """Same INS, both validated or qualified: one person (unless an operator said no)."""
        if not t.ins_trusted:
            return
        rows = self.session.execute(
            select(_REC.patient_id).where(
                _REC.ins == t.ins, _REC.ins_trusted == true(), _REC.patient_id != t.patient_id
            )
        )
        for (other,) in rows:
            if self._edge(t.patient_id, other) is not None:
                continue  # already linked, or declared distinct by an operator
            if self._conflict(t.patient_id, other) is None:
                self._join(t.patient_id, other, "ins", f"same trusted INS {t.ins}")

    def _site_links(self, t: Traits, resource: dict[str, Any]) -> None:
        """A site's own merge: `link` (replaced-by, replaces, seealso) to another record of
        the same namespace."""
        for link in resource.get("link", []) or []:
            if not isinstance(link, dict) or link.get("type") == "refer":
                continue
            other = link.get("other") or {}
            targets: set[str] = set()
            ref = other.get("reference")
            if isinstance(ref, str) and ref.startswith("Patient/"):
                targets.add(ref.split("/")[1])
            ident = other.get("identifier")
            if isinstance(ident, dict) and ident.get("value"):
                found = self.repo.by_identifier("Patient", ident.get("system"), ident["value"])
                targets |= {s.id for s in found}
            for target in sorted(targets - {t.patient_id}):
                theirs = self.traits([target]).get(target)
                if theirs is None or not (theirs.systems & t.systems):
                    continue  # a site speaks only for its own namespace
                if self._edge(t.patient_id, target) is None and not self._conflict(
                    t.patient_id, target
                ):
                    self._join(t.patient_id, target, "site", f"Patient.link {link.get('type')}")

    def _join(self, a: str, b: str, basis: str, reason: str) -> None:
        """Link two records and relabel their person at once, so that the next decision of
        the same write sees it (a third record must not bridge two people declared distinct)."""
        self._set_edge(a, b, LINKED, basis, reason)
        self._recompute(self._members_now({a, b}))
        self._close_settled_tasks(self._members_now({a}))

    def _conflict(self, a: str, b: str) -> str | None:
        """Why the persons of a and b may not become one (None when they may)."""
        side_a, side_b = self._members_now({a}), self._members_now({b})
        if side_a & side_b:
            return None
        traits = self.traits(side_a | side_b)
        ins_a = {t.ins for p, t in traits.items() if p in side_a and t.ins_trusted}
        ins_b = {t.ins for p, t in traits.items() if p in side_b and t.ins_trusted}
        if ins_a and ins_b and ins_a != ins_b:
            return "the records carry different validated INS: they are two people"
        distinct = self.session.execute(
            select(_LINK.a, _LINK.b).where(
                _LINK.state == DISTINCT,
                or_(
                    and_(_LINK.a.in_(sorted(side_a)), _LINK.b.in_(sorted(side_b))),
                    and_(_LINK.a.in_(sorted(side_b)), _LINK.b.in_(sorted(side_a))),
                ),
            )
        ).all()
        if any(_pair(x, y) != _pair(a, b) for x, y in distinct):
            return "an identity-vigilance operator declared records of these persons distinct"
        return None

    def _recompute(self, patient_ids: set[str]) -> None:
        """Relabel the persons (connected components of `linked` decisions) of these records."""
        seen: set[str] = set()
        for start in sorted(patient_ids):
            if start in seen:
                continue
            component, frontier = {start}, [start]
            while frontier:
                node = frontier.pop()
                for edge in self._edges(node):
                    if edge.state != LINKED:
                        continue
                    other = edge.b if edge.a == node else edge.a
                    if other not in component:
                        component.add(other)
                        frontier.append(other)
            seen |= component
            self.session.execute(
                update(IDENTITY_RECORD)
                .where(_REC.patient_id.in_(sorted(component)))
                .values(person_id=min(component))
            )

    def _screen(self, t: Traits) -> None:
        """Look for other records that resemble this one: work items for what might be one
        person, homonym flags for what is known to be two."""
        if not t.names:
            self._set_homonym({t.patient_id})
            return
        mine = self._members_now({t.patient_id})
        alike = {t.patient_id}
        for other in self.candidates(t):
            if other.patient_id in mine:
                continue
            found = compare(t, other)
            if found is None:
                continue
            if same_name_and_birth(t, other):
                alike.add(other.patient_id)
            if self._conflict(t.patient_id, other.patient_id) is None and not self._distinct(
                t.patient_id, other.patient_id
            ):
                self._open_task(t.patient_id, other.patient_id, *found)
        self._set_homonym(alike)

    def _distinct(self, a: str, b: str) -> bool:
        edge = self._edge(a, b)
        return edge is not None and edge.state == DISTINCT

    def _set_homonym(self, patient_ids: set[str]) -> None:
        """Recompute the homonym flag of these records: another person (known distinct, by
        trusted INS or an operator's decision) has the same name and birth date."""
        for pid in sorted(patient_ids):
            own = self.traits([pid]).get(pid)
            if own is None:
                continue
            flagged = False
            if own.birth_date and own.names:
                rows = self.session.execute(
                    select(IDENTITY_RECORD)
                    .where(_REC.birth_date == own.birth_date, _REC.patient_id != pid)
                    .limit(_MAX_CANDIDATES)
                ).all()
                mine = self._members_now({pid})
                for row in rows:
                    other = _traits(row)
                    if other.patient_id in mine or not same_name_and_birth(own, other):
                        continue
                    if self._conflict(pid, other.patient_id) or self._distinct(
                        pid, other.patient_id
                    ):
                        flagged = True
                        break
            if flagged != own.homonym:
                self.session.execute(
                    update(IDENTITY_RECORD).where(_REC.patient_id == pid).values(homonym=flagged)
                )

    # -- work items ----------------------------------------------------------------------------

    def _open_tasks(self, a: str, b: str) -> list[Stored]:
        x, y = _pair(a, b)
        found = self.repo.by_identifier("Task", PAIR_SYSTEM, f"{x}~{y}")
        return [s for s in found if s.resource.get("status") in OPEN_TASK]

    def _open_task(self, a: str, b: str, reason: str, score: float) -> None:
        if self._open_tasks(a, b):
            return
        x, y = _pair(a, b)
        self.repo.create(
            {
                "resourceType": "Task",
                "identifier": [{"system": PAIR_SYSTEM, "value": f"{x}~{y}"}],
                "status": "requested",
                "intent": "proposal",
                "code": {
                    "coding": [
                        {
                            "system": IDENTITY_TASK_SYSTEM,
                            "code": "suspected-duplicate",
                            "display": "Suspected duplicate patient records",
                        }
                    ]
                },
                "description": f"{reason}: Patient/{x} and Patient/{y} may be one person",
                "focus": {"reference": f"Patient/{x}"},
                "authoredOn": format_instant(now_utc()),
                "input": [
                    {
                        "type": {"text": "candidate"},
                        "valueReference": {"reference": f"Patient/{y}"},
                    },
                    {"type": {"text": "reason"}, "valueString": reason},
                    {"type": {"text": "score"}, "valueDecimal": score},
                ],
            }
        )

    def _close_settled_tasks(self, members: set[str]) -> None:
        """Open work items about two records that are now one person are settled."""
        ordered = sorted(members)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                self._close_tasks(a, b, "linked: one person")

    def _close_tasks(self, a: str, b: str, outcome: str) -> None:
        for task in self._open_tasks(a, b):
            resource = dict(task.resource)
            resource["status"] = "completed"
            resource["businessStatus"] = {"text": outcome}
            resource["lastModified"] = format_instant(now_utc())
            self.repo.update(task, resource)

    # -- operator decisions --------------------------------------------------------------------

    def _require(self, *patient_ids: str) -> None:
        known = self.traits(patient_ids)
        for pid in patient_ids:
            if pid not in known:
                raise NotFound(f"Patient/{pid} is not known")

    def link(self, a: str, b: str, reason: str) -> None:
        """An operator's decision that two records are one person."""
        self._persons.clear()  # and again below: answers after the decision see it
        self._lock()
        if a == b:
            raise Invalid("A record cannot be linked to itself")
        self._require(a, b)
        problem = self._conflict(a, b)
        if problem:
            raise Conflict(f"Patient/{a} and Patient/{b} cannot be linked: {problem}")
        before = self._members_now({a, b})
        self._set_edge(a, b, LINKED, "operator", reason)
        self._recompute(before)
        self._close_settled_tasks(self._members_now({a}))
        self._set_homonym(before)
        self._persons.clear()

    def unlink(self, a: str, b: str, reason: str) -> None:
        """An operator's decision that two records are two people: the records part at once
        (if they were still joined through other links, `a` leaves its person entirely)."""
        self._lock()
        if a == b:
            raise Invalid("A record cannot be unlinked from itself")
        self._require(a, b)
        before = self._members_now({a, b})
        self._set_edge(a, b, DISTINCT, "operator", reason)
        self._recompute(before)
        if b in self._members_now({a}):
            for edge in self._edges(a):
                if edge.state == LINKED:
                    other = edge.b if edge.a == a else edge.a
                    self._set_edge(a, other, DISTINCT, "operator", f"detached: {reason}")
            self._recompute(before)
        self._close_tasks(a, b, "unlinked: two people")
        self._set_homonym(before)
        self._persons.clear()

    def decisions(self, patient_id: str) -> list[dict[str, Any]]:
        """The link decisions about one record (for the operator's view)."""
        return [
            {
                "other": edge.b if edge.a == patient_id else edge.a,
                "state": edge.state,
                "basis": edge.basis,
                "author": edge.author,
                "reason": edge.reason,
                "at": format_instant(edge.at),
            }
            for edge in self._edges(patient_id)
        ]


def _traits(row: Any) -> Traits:
    return Traits(
        row.patient_id,
        row.birth_date,
        parse_names(row.names),
        row.ins,
        bool(row.ins_trusted),
        frozenset(row.systems.split()) if row.systems else frozenset(),
        bool(row.homonym),
    )
