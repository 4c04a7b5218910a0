"""FHIR RESTful interactions as use cases: read, vread, create, update, patch, delete,
their conditional forms, search and history (FHIR R4 http.html), over the repository."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import jsonpatch

from app.audit.recorder import AuditRecorder
from app.audit.trail import AuditTrail
from app.errors import (
    Forbidden,
    Gone,
    Invalid,
    Issue,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from app.fhir import jsonio, models
from app.fhir.registry import Registry
from app.fhir.search import SearchParser, SearchQuery, parse_int, split_token
from app.fhir.values import parse_search_date
from app.identity.vigilance import Vigilance
from app.policy.principal import Principal
from app.policy.seam import Policy
from app.services.consents import check_not_stale
from app.services.deletion import Deletions
from app.services.documents import Documents
from app.services.facts import RequestFacts
from app.services.links import resolve_links
from app.storage.repository import Repository, Stored

_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def check_id(resource_id: str) -> str:
    """A FHIR logical id: 1-64 of [A-Za-z0-9-.]."""
    if not 1 <= len(resource_id) <= 64 or set(resource_id) - _ID_CHARS:
        raise Invalid(
            f"'{resource_id}' is not a valid FHIR id (1-64 characters: A-Z a-z 0-9 - .)",
            issues=[Issue("value", f"Invalid id '{resource_id}'", expression=["id"])],
        )
    return resource_id


@dataclass
class Written:
    """The result of a write: HTTP status (200/201) and the stored version."""

    status: int
    stored: Stored


_FILL_ROUNDS = 5  # extra page reads at most to fill a page whose items were partly hidden
_COUNT_BOUND = 1000  # matches read at most to count what a filtered caller may see


@dataclass
class SearchResult:
    """A search's page, its total, and included resources."""

    query: SearchQuery
    matches: list[Stored]
    total: int | None
    included: list[Stored] = field(default_factory=list)
    # Where the next page starts when filling this one read past `offset + count` (items the
    # caller may not see were skipped); None: at `offset + count`, or no next page.
    next_offset: int | None = None
    # The safe horizon of the pages (Repository.horizon): the Bundle's meta.lastUpdated.
    horizon: datetime | None = None


@dataclass
class HistoryResult:
    """A page of history entries newest first, their total, and the snapshot to page with."""

    entries: list[Stored]
    total: int | None  # None: left out (a filtered caller's page that is not the whole answer)
    snapshot: int
    count: int
    offset: int
    # Every version stamped before it is in these pages or was before `_since` (the Bundle's
    # meta.lastUpdated: where the client's next `_since` starts).
    horizon: datetime | None = None
    # Where the next page starts when this one was filled past hidden versions.
    next_offset: int | None = None


@dataclass
class Access:
    """Who asks, the policy that decides, and the request's audit recorder."""

    principal: Principal
    policy: Policy
    audit: AuditRecorder
    trail: AuditTrail


class ResourceService:
    """The FHIR REST interactions of every registered type, within one unit of work.

    Every interaction passes the policy seam: `start` before anything is read, `narrow` on
    searches, `can_see` on every item that leaves, `check_write` on every write; and notes
    what it touched for the audit trail. A hidden item is reported exactly like a missing one.
    """

    def __init__(
        self, repo: Repository, registry: Registry, parser: SearchParser, access: Access
    ) -> None:
        self.repo = repo
        self.registry = registry
        self.parser = parser
        self.access = access
        self.principal = access.principal
        self.policy = access.policy
        self.audit = access.audit
        author = f"{self.principal.name} ({self.principal.subject})"
        self.identity = Vigilance(repo, author)
        repo.listeners.append(self.identity.on_write)
        self.facts = RequestFacts(repo, self.identity, self.audit.authorize)
        repo.listeners.append(self.facts.on_write)
        self.documents = Documents(self)
        repo.listeners.append(self.documents.on_write)
        self.deletions = Deletions(self, self.policy.rules.deletion_approval)
        repo.listeners.append(self.deletions.on_write)

    def finish(self) -> None:
        """End of the unit of work: apply what its document writes imply (MHD replacements,
        imaging manifests) and decide its deletion requests, inside the same transaction."""
        self.documents.finish()
        self.deletions.finish()  # after the documents: a request may name one written here

    def settled(self, stored: Stored) -> Stored:
        """A written resource as the unit of work leaves it: what its end writes (a deletion
        request carried out, say) is in the answer to the write."""
        self.finish()
        current = self.repo.current(stored.type, stored.id)
        if current is None or current.deleted or current.version <= stored.version:
            return stored
        return current

    def _start(self, interaction: str, type_name: str) -> None:
        if type_name != "*":  # "*": a system-level interaction (history-system), no one type
            definition = self.registry.get(type_name)
            base = "history-instance" if interaction == "vread" else interaction
            if base not in definition.interactions and interaction != "vread":
                reason = definition.refused.get(interaction)
                raise MethodNotAllowed(reason or f"{type_name} does not support {interaction}")
        self.policy.start(self.principal, interaction, type_name)

    def visible(self, stored: Stored) -> bool:
        """can_see for a stored version; a tombstone is judged by its last content."""

        def content() -> dict[str, Any]:
            if stored.content is not None:
                return stored.resource
            previous = self.repo.version(stored.type, stored.id, stored.version - 1)
            return previous.resource if previous and previous.content else {}

        return self.policy.can_see(self.principal, stored.type, stored.id, content, self.facts)

    def shown(self, stored: Stored) -> Stored:
        """A current Patient as it leaves: with its person's other records and identity flags
        (computed, so a link or unlink shows at once; the stored version is untouched)."""
        if stored.type == "Patient" and stored.content is not None and not stored.deleted:
            shown = copy.deepcopy(stored.resource)
            if self.identity.decorate(stored.id, shown):
                stored = dataclasses.replace(stored, content=jsonio.dumps(shown))
                stored.__dict__["resource"] = shown
        return stored

    def _patients(self, stored: Stored) -> set[str]:
        if stored.content is None:
            return set()
        return self.policy.patients_of(stored.type, stored.id, stored.resource)

    def _patient_lookup(self, patient_id: str) -> dict[str, Any] | None:
        stored = self.repo.current("Patient", patient_id)
        return stored.resource if stored and not stored.deleted else None

    def _check_write(
        self,
        type_name: str,
        resource_id: str | None,
        resource: dict[str, Any],
        *,
        incoming: bool = True,
    ) -> None:
        """The policy's write check; `incoming=False` for the stored content being replaced
        or deleted (organisation boundaries only: a patient's choice never blocks removal)."""
        self.policy.check_write(
            self.principal,
            type_name,
            resource_id,
            resource,
            self._patient_lookup,
            self.facts,
            incoming=incoming,
        )

    # -- reads --------------------------------------------------------------------------------

    def read(self, type_name: str, resource_id: str) -> Stored:
        """FHIR read: the current version; 404 if unknown or hidden, 410 if deleted."""
        self._start("read", type_name)
        touch = self.audit.touch("read", type_name, items=[f"{type_name}/{resource_id}"])
        return self.shown(self._current_visible(type_name, resource_id, touch.patients))

    def _current_visible(self, type_name: str, resource_id: str, patients: set[str]) -> Stored:
        stored = self.repo.current(type_name, resource_id)
        if stored is None or not self.visible(stored):
            raise NotFound(f"{type_name}/{resource_id} is not known")
        if stored.deleted:
            raise Gone(f"{type_name}/{resource_id} has been deleted")
        patients |= self._patients(stored)
        return stored

    def vread(self, type_name: str, resource_id: str, version: str) -> Stored:
        """FHIR vread: one version; 410 for the version that records a deletion."""
        self._start("vread", type_name)
        ref = f"{type_name}/{resource_id}/_history/{version}"
        touch = self.audit.touch("vread", type_name, items=[ref])
        current = self.repo.current(type_name, resource_id)
        if current is None or not self.visible(current) or not version.isdigit():
            raise NotFound(f"{type_name}/{resource_id} has no version {version}")
        stored = self.repo.version(type_name, resource_id, int(version))
        if stored is None or not self.visible(stored):
            raise NotFound(f"{type_name}/{resource_id} has no version {version}")
        if stored.deleted:
            raise Gone(f"Version {version} of {type_name}/{resource_id} is a deletion")
        touch.patients |= self._patients(stored)
        return stored

    # -- writes -------------------------------------------------------------------------------

    def _validated(
        self, type_name: str, body: Any, resource_id: str | None = None
    ) -> dict[str, Any]:
        self.registry.get(type_name)
        resource = models.validate(body, type_name)
        if type_name == "Patient":
            self.identity.strip_computed(resource_id or resource.get("id"), resource)
        if resource_id is not None and resource.get("id") != resource_id:
            if "id" not in resource:
                raise Invalid(
                    "The resource in an update must carry its id",
                    issues=[Issue("required", "Missing id", expression=[f"{type_name}.id"])],
                )
            raise Invalid(
                f"The id in the body ({resource.get('id')}) does not match the URL ({resource_id})",
                issues=[Issue("invalid", "id mismatch", expression=[f"{type_name}.id"])],
            )
        return resource

    def create(
        self,
        type_name: str,
        body: Any,
        if_none_exist: list[tuple[str, str]] | None = None,
        assigned_id: str | None = None,
    ) -> Written:
        """FHIR create (the server assigns the id), or conditional create with If-None-Exist.

        `assigned_id` is the id a transaction reserved for this entry's fullUrl.
        """
        self._start("create", type_name)
        touch = self.audit.touch("create", type_name)
        resource = self._validated(type_name, body)
        if if_none_exist:
            found = self.conditional_matches(type_name, if_none_exist)
            if len(found) == 1:
                touch.items.append(f"{type_name}/{found[0].id}")
                return Written(200, found[0])
        resource.pop("id", None)
        self._check_write(type_name, None, resource)
        if type_name == "AuditEvent":  # ITI-20: stored as received, chained, never edited
            stored = self.access.trail.append(self.repo, [resource])[0]
        else:
            stored = self.repo.create(resource, assigned_id)
        touch.add(f"{type_name}/{stored.id}/_history/{stored.version}", self._patients(stored))
        return Written(201, stored)

    def update(
        self, type_name: str, resource_id: str, body: Any, if_match: int | None = None
    ) -> Written:
        """FHIR update; creates the resource with the client's id when it does not exist."""
        self._start("update", type_name)
        touch = self.audit.touch("update", type_name, items=[f"{type_name}/{resource_id}"])
        check_id(resource_id)
        resource = self._validated(type_name, body, resource_id)
        self._check_write(type_name, resource_id, resource)
        current = self.repo.current(type_name, resource_id)
        if current is not None and not self.visible(current):
            raise Forbidden(f"{type_name}/{resource_id} cannot be written by this caller")
        if current is None:
            if if_match is not None:
                raise PreconditionFailed(f"{type_name}/{resource_id} does not exist (If-Match)")
            return self._wrote(touch, Written(201, self.repo.create(resource, resource_id, "PUT")))
        self._check_version(current, if_match)
        if current.content is not None:
            self._check_write(type_name, resource_id, current.resource, incoming=False)
        if _unchanged(current, resource):
            return self._wrote(touch, Written(200, current))
        _check_supersedes(current, resource)
        status = 201 if current.deleted else 200
        return self._wrote(touch, Written(status, self.repo.update(current, resource)))

    def _wrote(self, touch: Any, written: Written) -> Written:
        stored = written.stored
        touch.items.clear()
        touch.add(f"{stored.type}/{stored.id}/_history/{stored.version}", self._patients(stored))
        return written

    def conditional_update(
        self, type_name: str, criteria: list[tuple[str, str]], body: Any, if_match: int | None
    ) -> Written:
        """FHIR conditional update: PUT [type]?criteria."""
        self._start("update", type_name)
        touch = self.audit.touch("update", type_name)
        resource = self._validated(type_name, body)
        self._check_write(type_name, resource.get("id"), resource)
        found = self.conditional_matches(type_name, criteria)
        if not found:
            if "id" in resource:
                check_id(resource["id"])
                if self.repo.current(type_name, resource["id"]) is not None:
                    raise PreconditionFailed(
                        f"No {type_name} matches the criteria but the id in the body is taken"
                    )
                return self._wrote(
                    touch, Written(201, self.repo.create(resource, resource["id"], "PUT"))
                )
            return self._wrote(touch, Written(201, self.repo.create(resource, method="PUT")))
        current = found[0]
        if resource.get("id", current.id) != current.id:
            raise Invalid(
                "The id in the body does not match the resource found by the criteria",
                issues=[Issue("invalid", "id mismatch", expression=[f"{type_name}.id"])],
            )
        self._check_version(current, if_match)
        current = self.repo.current(type_name, current.id) or current
        self._check_write(type_name, current.id, current.resource, incoming=False)
        if _unchanged(current, resource):
            return self._wrote(touch, Written(200, current))
        _check_supersedes(current, resource)
        return self._wrote(touch, Written(200, self.repo.update(current, resource)))

    def patch(
        self, type_name: str, resource_id: str, operations: Any, if_match: int | None = None
    ) -> Written:
        """FHIR patch with a JSON Patch (RFC 6902) document."""
        self._start("patch", type_name)
        touch = self.audit.touch("patch", type_name, items=[f"{type_name}/{resource_id}"])
        current = self._current_visible(type_name, resource_id, touch.patients)
        self._check_version(current, if_match)
        return self._wrote(touch, Written(200, self._apply_patch(current, operations)))

    def conditional_patch(
        self, type_name: str, criteria: list[tuple[str, str]], operations: Any, if_match: int | None
    ) -> Written:
        """FHIR conditional patch: PATCH [type]?criteria."""
        self._start("patch", type_name)
        touch = self.audit.touch("patch", type_name)
        found = self.conditional_matches(type_name, criteria)
        if not found:
            raise NotFound(f"No {type_name} matches the criteria")
        self._check_version(found[0], if_match)
        current = self._current_visible(type_name, found[0].id, touch.patients)
        return self._wrote(touch, Written(200, self._apply_patch(current, operations)))

    def _apply_patch(self, current: Stored, operations: Any) -> Stored:
        if not isinstance(operations, list):
            raise Invalid("A JSON Patch document must be an array of operations")
        try:
            patched = jsonpatch.apply_patch(copy.deepcopy(current.resource), operations)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
            raise Unprocessable(f"The patch cannot be applied: {exc}") from None
        if not isinstance(patched, dict):
            raise Unprocessable("The patch must leave a resource (a JSON object)")
        if patched.get("id") != current.id or patched.get("resourceType") != current.type:
            raise Unprocessable("A patch may not change the resource's id or type")
        resource = self._validated(current.type, patched, current.id)
        self._check_write(current.type, current.id, current.resource, incoming=False)
        self._check_write(current.type, current.id, resource)
        _check_supersedes(current, resource)
        return self.repo.update(current, resource)

    def delete(
        self, type_name: str, resource_id: str, if_match: int | None = None
    ) -> Stored | None:
        """FHIR delete: a tombstone; deleting a deleted resource is a no-op (None)."""
        self._start("delete", type_name)
        touch = self.audit.touch("delete", type_name, items=[f"{type_name}/{resource_id}"])
        current = self.repo.current(type_name, resource_id)
        if current is None or not self.visible(current):
            raise NotFound(f"{type_name}/{resource_id} is not known")
        if current.deleted:
            return None
        self._check_version(current, if_match)
        touch.patients |= self._patients(current)
        self._check_write(type_name, resource_id, current.resource, incoming=False)
        return self.repo.delete(current)

    def conditional_delete(self, type_name: str, criteria: list[tuple[str, str]]) -> Stored | None:
        """FHIR conditional delete (single): none matches -> no-op; several -> 412."""
        self._start("delete", type_name)
        touch = self.audit.touch("delete", type_name)
        found = self.conditional_matches(type_name, criteria)
        if not found:
            return None
        current = self.repo.current(type_name, found[0].id)
        assert current is not None
        touch.add(f"{type_name}/{current.id}", self._patients(current))
        self._check_write(type_name, current.id, current.resource, incoming=False)
        return self.repo.delete(current)

    def conditional_matches(self, type_name: str, criteria: list[tuple[str, str]]) -> list[Stored]:
        """The one match (or none) of conditional-interaction criteria, as this caller sees
        them (narrowed and filtered by the policy); several matches are a 412."""
        if not criteria:
            raise Invalid("A conditional interaction needs search criteria")
        query = self.parser.parse(type_name, criteria)
        if not query.criteria:
            raise Invalid("A conditional interaction needs at least one search criterion")
        self.policy.narrow(self.principal, query)
        found = [s for s in self.repo.count_matches(query, limit=2) if self.visible(s)]
        if len(found) > 1:
            raise PreconditionFailed(
                f"The criteria match more than one {type_name}; make them more selective"
            )
        return found

    @staticmethod
    def _check_version(current: Stored, if_match: int | None) -> None:
        if if_match is not None and (current.deleted or current.version != if_match):
            raise PreconditionFailed(
                f"Version conflict: {current.type}/{current.id} is at version "
                f"{current.version}, not {if_match}"
            )

    # -- search and history -------------------------------------------------------------------

    def search(
        self,
        type_name: str,
        pairs: list[tuple[str, str]],
        *,
        lenient: bool = False,
        horizon: datetime | None = None,
    ) -> SearchResult:
        """FHIR search of one type, with _include/_revinclude resolved.

        Items the caller may not see never leave, nor count in the total, nor let a chained or
        `_has` criterion through (`app.services.links`). A search by `_lastUpdated` is a change
        feed: its result carries the safe horizon (`horizon`: the first page's, which later
        pages keep; see `history`).
        """
        self._start("search-type", type_name)
        touch = self.audit.touch("search-type", type_name, query=f"{type_name}?{urlencode(pairs)}")
        query = self.parser.parse(type_name, pairs, lenient=lenient)
        self.policy.narrow(self.principal, query)
        filtered = self.policy.filters(self.principal, self.facts)
        decided = filtered or self.principal.role == "patient"
        self._expand_persons(query, through_visible=decided)
        if decided:
            resolve_links(self, query)
        if type_name == "AuditEvent":  # records are indexed after the fact: catch up first
            self.access.trail.catch_up(self.repo)
        # A feed by `_lastUpdated` takes the horizon before the snapshot: every version stamped
        # before it is then inside (two statements on PostgreSQL: only for feeds).
        if horizon is None and any(c.param.code == "_lastUpdated" for c in query.criteria):
            horizon = self.repo.horizon()
        if query.snapshot is None:
            query.snapshot = self.repo.max_pk()
        found, total = self.repo.search(query)
        self.facts.remember(found)
        if type_name == "Patient":
            self.identity.prefetch(s.id for s in found)
        matches = [s for s in found if self.visible(s)]
        next_offset = None
        if filtered and (query.summary == "count" or query.count == 0):
            total = self._count_visible(query) if total else total
        elif filtered:
            matches, next_offset = self._fill_page(query, found, matches)
            # Whether a total is given depends on what the caller sees, never on what it does
            # not: a first page that is not full holds every visible match (the page was
            # filled up to the last row), so its length is the total; otherwise the total is
            # counted when asked for (`_total=accurate`), else left out.
            if total and not query.offset and len(matches) < query.count and next_offset is None:
                total = len(matches)
            elif total and any(
                k == "_totalMethod" or (k, v) == ("_total", "accurate") for k, v in query.used
            ):
                total = self._count_visible(query)
            else:
                total = None if total else total
        elif len(matches) != len(found):
            total = None
        included = [
            s
            for s in self._included(query, matches)
            if self.policy.may_read(self.principal, s.type) and self.visible(s)
        ]
        for stored in (*matches, *included):
            touch.add(
                f"{stored.type}/{stored.id}/_history/{stored.version}", self._patients(stored)
            )
        matches = [self.shown(s) for s in matches]
        included = [self.shown(s) for s in included]
        return SearchResult(query, matches, total, included, next_offset, horizon)

    def _count_visible(self, query: SearchQuery) -> int | None:
        """The total for a caller whose items are decided one by one (`_summary=count`,
        `_total=accurate`): the matches it may see, on every page, counted up to a bound (beyond
        it, no total rather than a wrong one)."""
        every = dataclasses.replace(query, summary=None, count=_COUNT_BOUND, offset=0, total="none")
        rows, _ = self.repo.search(every)
        if len(rows) == _COUNT_BOUND:
            return None
        return sum(1 for row in rows if self.visible(row))

    def _fill_page(
        self, query: SearchQuery, found: list[Stored], matches: list[Stored]
    ) -> tuple[list[Stored], int | None]:
        """Where items were hidden from a full page, fill it from the rows that follow, so
        that neither a short page nor a next link tells that something was skipped; the next
        page starts after the last row read (a few rounds at most, then the page stays
        short)."""
        if len(found) < query.count or len(matches) == query.count or query.count == 0:
            return matches, None

        def following(position: int) -> list[Stored]:
            return self.repo.search(dataclasses.replace(query, offset=position, total="none"))[0]

        return self._filled(matches, query.count, query.offset + len(found), following)

    def _filled(
        self,
        shown: list[Stored],
        count: int,
        position: int,
        following: Callable[[int], list[Stored]],
    ) -> tuple[list[Stored], int | None]:
        """Add the visible rows that follow `position` (read a page at a time by `following`)
        until `count` are shown: the page, and where the next one starts (None: at the end)."""
        for _ in range(_FILL_ROUNDS):
            rows = following(position)
            for row in rows:
                position += 1
                if self.visible(row):
                    shown.append(row)
                    if len(shown) == count:
                        return shown, position
            if len(rows) < count:
                return shown, None
        return shown, position

    def _expand_persons(self, query: SearchQuery, *, through_visible: bool = False) -> None:
        """The priors of a person are the data of all the person's linked records (PIXm):
        `patient`/`subject` criteria naming a Patient (`Patient/id`, or a chained
        `patient.identifier`) are widened to every record of that person. `through_visible`:
        a chain goes only through Patients the caller may see (`app.services.links`)."""
        if query.type == "Patient":
            return
        for i, c in enumerate(query.criteria):
            if c.param.code not in ("patient", "subject") or c.has is not None or c.modifier:
                continue
            ids: set[str] = set()
            if c.chain is not None:
                if c.target_type != "Patient" or c.chain.param.code != "identifier":
                    continue
                if c.chain.modifier or c.chain.chain is not None:
                    continue
                for value in c.chain.values:
                    system, code = split_token(value.raw)
                    found = self.repo.by_identifier("Patient", system or None, code)
                    ids |= {s.id for s in found if not through_visible or self.visible(s)}
            else:
                for value in c.values:
                    raw = value.raw
                    if raw.startswith("Patient/") and raw.count("/") == 1:
                        ids.add(raw.split("/")[1])
                    elif "/" not in raw and ":" not in raw and c.target_type in (None, "Patient"):
                        ids.add(raw)
            if not ids:
                continue
            members = self.identity.members(ids)
            if c.chain is None and members == ids:
                continue
            refs = ",".join(f"Patient/{m}" for m in sorted(members))
            query.criteria[i] = self.parser.parse(query.type, [(c.param.code, refs)]).criteria[0]

    def _included(self, query: SearchQuery, matches: list[Stored]) -> list[Stored]:
        limit = self.parser.max_include
        seen = {(m.type, m.id) for m in matches}
        out: list[Stored] = []
        frontier = matches
        includes, revincludes = query.includes, query.revincludes
        for depth in range(4):  # :iterate follows new results up to a small fixed depth
            if depth:
                includes = [i for i in includes if i.iterate]
                revincludes = [i for i in revincludes if i.iterate]
            if not frontier or not (includes or revincludes):
                break
            found = self.repo.includes(frontier, includes, limit) + self.repo.revincludes(
                frontier, revincludes, limit
            )
            frontier = []
            for stored in found:
                if (stored.type, stored.id) not in seen and len(out) < limit:
                    seen.add((stored.type, stored.id))
                    out.append(stored)
                    frontier.append(stored)
        return out

    def history(
        self,
        type_name: str | None,
        resource_id: str | None,
        pairs: list[tuple[str, str]],
        *,
        horizon: datetime | None = None,
    ) -> HistoryResult:
        """FHIR history (instance, type or system), newest first, paged on a snapshot.

        System history lists the clinical and directory data; AuditEvents have their own
        (ITI-81 search and AuditEvent/_history).

        A change feed (FHIR R4 http.html#history `_since`): the first page takes the safe
        horizon H (Repository.horizon) before its snapshot, so every version stamped before H
        is within the snapshot; later pages pass the first page's H in `horizon` and report
        it too. A client that pages to the end, then asks again with `_since=H`, misses
        nothing (it may see a version twice: de-duplicate by id and versionId).
        """
        interaction = (
            "history-instance" if resource_id else "history-type" if type_name else "history-system"
        )
        self._start(interaction, type_name or "*")
        touch = self.audit.touch(interaction, type_name, query=urlencode(pairs))
        if resource_id and type_name:
            current = self.repo.current(type_name, resource_id)
            if current is None or not self.visible(current):
                raise NotFound(f"{type_name}/{resource_id} is not known")
            touch.items.append(f"{type_name}/{resource_id}")
        count, offset, snapshot, since = self.parser.default_count, 0, None, None
        for key, value in pairs:
            if key == "_count":
                count = min(parse_int(key, value), self.parser.max_count)
            elif key == "_offset":
                offset = parse_int(key, value)
            elif key == "_snapshot":
                snapshot = parse_int(key, value)
            elif key == "_since":
                since = parse_search_date(value, "_since")[0]
            elif key in ("_format", "_pretty"):
                continue
            else:
                raise Invalid(f"History does not support the parameter '{key}'")
        horizon = horizon or self.repo.horizon()
        entries, total, snap = self.repo.history(
            type_name=type_name,
            resource_id=resource_id,
            since=since,
            at_most_seq=snapshot,
            count=count,
            offset=offset,
        )
        # In an instance's history, a version about someone else (a document moved to the
        # right patient) stays hidden; the count of versions is no secret (the current
        # versionId tells it).
        visible = [e for e in entries if self.visible(e)]
        next_offset: int | None = None
        shown_total: int | None = total
        if not resource_id and self.policy.filters(self.principal, self.facts):
            # As a search's pages: filled past hidden versions, a total only when the first
            # page holds every visible version (hidden = missing).
            visible, next_offset = self._fill_history(
                type_name, since, snap, count, offset, entries, visible
            )
            complete = not offset and len(visible) < count and next_offset is None
            shown_total = len(visible) if complete else None
        for entry in visible:
            touch.add(f"{entry.type}/{entry.id}/_history/{entry.version}", self._patients(entry))
        return HistoryResult(visible, shown_total, snap, count, offset, horizon, next_offset)

    def _fill_history(
        self,
        type_name: str | None,
        since: datetime | None,
        snapshot: int,
        count: int,
        offset: int,
        entries: list[Stored],
        visible: list[Stored],
    ) -> tuple[list[Stored], int | None]:
        """Fill a history page whose versions were partly hidden from the versions that
        follow (as `_fill_page`); the next page starts after the last one read."""
        if len(entries) < count or len(visible) == count or count == 0:
            return visible, None

        def following(position: int) -> list[Stored]:
            rows, _, _ = self.repo.history(
                type_name=type_name, since=since, at_most_seq=snapshot, count=count, offset=position
            )
            return rows

        return self._filled(visible, count, offset + len(entries), following)


def _without_version(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {
        k: v
        for k, v in (resource.get("meta") or {}).items()
        if k not in ("versionId", "lastUpdated")
    }
    out = {k: v for k, v in resource.items() if k not in ("meta", "id")}
    if meta:
        out["meta"] = meta
    return out


def _exact(value: Any) -> Any:
    """A comparable form in which 1.50 and 1.5 differ (FHIR keeps a decimal's precision)."""
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    return value


def _check_supersedes(current: Stored, resource: dict[str, Any]) -> None:
    """An update must not take a decision back to an older one (a registry's late replay):
    409, nothing written. A deleted resource has no decision left to compare with."""
    if not current.deleted:
        check_not_stale(current.type, current.resource, resource)


def _unchanged(current: Stored, resource: dict[str, Any]) -> bool:
    """True when an update would store the same content: no new version is written (HAPI-style
    no-op), which makes replaying the same update or Bundle idempotent."""
    if current.deleted:
        return False
    return _exact(_without_version(current.resource)) == _exact(_without_version(resource))
