"""Batch and transaction Bundles (FHIR R4 http.html#transaction).

A transaction is atomic: entries run in the spec's order (DELETE, POST, PUT/PATCH, GET) in one
database transaction; `urn:uuid:` full URLs and conditional references (`Patient?identifier=`)
are resolved first; any failing entry rolls everything back. A batch runs each entry on its own.
"""

from __future__ import annotations

import base64
import binascii
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from app.errors import FhirError, Invalid, Issue, PreconditionFailed
from app.fhir import models
from app.fhir.bundles import bundle, information, operation_outcome
from app.fhir.values import format_instant
from app.policy.principal import SYSTEM, Principal
from app.services import mhd, rendering
from app.services.resources import ResourceService
from app.storage.repository import Stored, new_id

if TYPE_CHECKING:
    from app.services.runtime import Runtime

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


@dataclass
class Entry:
    """One Bundle.entry request, parsed."""

    index: int
    method: str
    type: str
    id: str | None
    version: str | None
    criteria: list[tuple[str, str]]
    operation: str | None
    resource: Any
    full_url: str | None
    if_none_exist: list[tuple[str, str]] = field(default_factory=list)
    if_match: int | None = None
    assigned_id: str | None = None


def _parse_entry(i: int, raw: Any, base: str, known_types: list[str]) -> Entry:
    where = f"Bundle.entry[{i}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise Invalid(
            f"{where} has no request",
            issues=[
                Issue("required", f"{where}.request is required", expression=[f"{where}.request"])
            ],
        )
    request = raw["request"]
    method, url = request.get("method"), request.get("url")
    if method not in _ORDER or not isinstance(url, str) or not url:
        raise Invalid(
            f"{where}.request needs a method (GET, POST, PUT, PATCH, DELETE) and a url",
            issues=[Issue("required", "Bad request", expression=[f"{where}.request"])],
        )
    if url.startswith(base + "/"):
        url = url[len(base) + 1 :]
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    criteria = parse_qsl(parts.query, keep_blank_values=True)
    if not segments or segments[0] not in known_types:
        raise Invalid(
            f"{where}.request.url '{url}' does not name a supported resource type",
            issues=[Issue("not-supported", "Unsupported url", expression=[f"{where}.request.url"])],
        )
    type_name = segments[0]
    resource_id = version = operation = None
    if len(segments) >= 2:
        if segments[1] in ("_search", "_history"):
            operation = segments[1]
        else:
            resource_id = segments[1]
    if len(segments) == 4 and segments[2] == "_history":
        version = segments[3]
    elif len(segments) == 3 and segments[2] == "_history":
        operation = "_history"
    elif len(segments) > 2 and operation is None:
        raise Invalid(f"{where}.request.url '{url}' is not a supported interaction")
    if_match = None
    if request.get("ifMatch"):
        tag = str(request["ifMatch"]).removeprefix("W/").strip('"')
        if not tag.isdigit():
            raise PreconditionFailed(
                f"{where}.request.ifMatch '{request['ifMatch']}' is not W/\"n\""
            )
        if_match = int(tag)
    # The query part; some clients (and the R4 Bundle-xds example) send `Type?query`.
    condition = str(request.get("ifNoneExist") or "")
    if condition.startswith(f"{type_name}?"):
        condition = condition[len(type_name) :]
    if_none_exist = parse_qsl(condition.lstrip("?"))
    return Entry(
        i,
        method,
        type_name,
        resource_id,
        version,
        criteria,
        operation,
        raw.get("resource"),
        raw.get("fullUrl"),
        if_none_exist,
        if_match,
    )


class BundleProcessor:
    """Runs the entries of one batch or transaction Bundle."""

    def __init__(
        self,
        rt: Runtime,
        base: str,
        return_pref: str,
        principal: Principal = SYSTEM,
        request_id: str | None = None,
    ) -> None:
        self.principal = principal
        self.request_id = request_id
        self.rt = rt
        self.base = base
        self.return_pref = return_pref

    def process(self, body: Any) -> dict[str, Any]:
        """The batch-response or transaction-response for `body`."""
        models.validate(_envelope(body), "Bundle")
        kind = body.get("type")
        if kind not in ("batch", "transaction"):
            raise Invalid(
                f"POST [base] takes a batch or transaction Bundle, not '{kind}'",
                issues=[Issue("value", "Bad Bundle.type", expression=["Bundle.type"])],
            )
        raw_entries = body.get("entry") or []
        known = self.rt.registry.names()
        for i, raw in enumerate(raw_entries):  # bdl-3: an entry without request voids the Bundle
            if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
                _parse_entry(i, raw, self.base, known)  # raises the located 400
        if kind == "transaction":
            if mhd.is_provide_bundle(body):  # IHE MHD ITI-65
                mhd.check_provide_bundle(body)
            entries = [_parse_entry(i, e, self.base, known) for i, e in enumerate(raw_entries)]
            with self._unit(write=True) as svc:
                results = self._transaction(svc, entries)
            return bundle("transaction-response", [results[e.index] for e in entries])
        out = []
        for i, raw in enumerate(raw_entries):
            try:
                entry = _parse_entry(i, raw, self.base, known)
                with self._unit(write=entry.method != "GET") as svc:
                    out.append(self._run(svc, entry))
            except FhirError as exc:
                out.append(
                    {
                        "response": {
                            "status": f"{exc.status}",
                            "outcome": operation_outcome(exc.issues),
                        }
                    }
                )
        return bundle("batch-response", out)

    def _unit(self, *, write: bool) -> AbstractContextManager[ResourceService]:
        return self.rt.resources(
            self.base, write=write, principal=self.principal, request_id=self.request_id
        )

    # -- transaction --------------------------------------------------------------------------

    def _transaction(self, svc: ResourceService, entries: list[Entry]) -> dict[int, dict[str, Any]]:
        mapping = self._assign_ids(svc, entries)
        for entry in entries:
            if entry.resource is not None:
                try:
                    entry.resource = self._rewrite(svc, entry.resource, mapping, _base_of(entry))
                except FhirError as exc:
                    raise _at(exc, entry) from None
        results: dict[int, dict[str, Any]] = {}
        for entry in sorted(entries, key=lambda e: (_ORDER[e.method], e.index)):
            try:
                results[entry.index] = self._run(svc, entry)
            except FhirError as exc:
                raise _at(exc, entry) from None
        return results

    def _assign_ids(self, svc: ResourceService, entries: list[Entry]) -> dict[str, str]:
        """fullUrl -> `Type/id` for every entry that creates or names a resource."""
        mapping: dict[str, str] = {}
        for entry in entries:
            if not entry.full_url:
                continue
            if entry.full_url in mapping:
                raise _at(Invalid(f"Duplicate fullUrl '{entry.full_url}'"), entry)
            target: str | None = None
            if entry.method == "POST":
                try:
                    existing = (
                        svc.conditional_matches(entry.type, entry.if_none_exist)
                        if entry.if_none_exist
                        else []
                    )
                except FhirError as exc:
                    raise _at(exc, entry) from None
                entry.assigned_id = existing[0].id if existing else new_id()
                target = f"{entry.type}/{entry.assigned_id}"
            elif entry.method == "PUT" and entry.id:
                target = f"{entry.type}/{entry.id}"
            elif entry.method == "PUT" and entry.criteria:
                try:
                    found = svc.conditional_matches(entry.type, entry.criteria)
                except FhirError as exc:
                    raise _at(exc, entry) from None
                if len(found) == 1:
                    target = f"{entry.type}/{found[0].id}"
                elif not found:
                    entry.assigned_id = new_id()
                    target = f"{entry.type}/{entry.assigned_id}"
            if target:
                mapping[entry.full_url] = target
        # `Patient/a2` in an entry whose fullUrl is a urn means the entry whose absolute fullUrl
        # ends in /Patient/a2 (when exactly one does): how transaction senders write it.
        tails: dict[str, list[str]] = {}
        for url, target in mapping.items():
            if url.startswith(("http://", "https://")):
                tail = "/".join(url.rstrip("/").split("/")[-2:])
                tails.setdefault(tail, []).append(target)
        for tail, targets in tails.items():
            if len(targets) == 1:
                mapping[f"//{tail}"] = targets[0]
        return mapping

    def _rewrite(
        self, svc: ResourceService, node: Any, mapping: dict[str, str], base: str | None = None
    ) -> Any:
        """Replace references to fullUrls and conditional references with `Type/id`; a
        relative reference is read against the base of the entry's absolute fullUrl."""
        if isinstance(node, list):
            return [self._rewrite(svc, item, mapping, base) for item in node]
        if not isinstance(node, dict):
            return mapping.get(node, node) if isinstance(node, str) else node
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value in mapping:
                    value = mapping[value]
                elif base and f"{base}/{value}" in mapping:
                    value = mapping[f"{base}/{value}"]
                elif f"//{value}" in mapping:  # the one absolute fullUrl ending Type/id
                    value = mapping[f"//{value}"]
                elif value.startswith(("urn:uuid:", "urn:oid:")):
                    raise Invalid(f"Reference '{value}' matches no fullUrl in this Bundle")
                elif "?" in value and not value.startswith(("http:", "https:", "urn:")):
                    value = self._resolve_conditional(svc, value)
                out[key] = value
            else:
                out[key] = self._rewrite(svc, value, mapping, base)
        return out

    def _resolve_conditional(self, svc: ResourceService, reference: str) -> str:
        type_name, _, query = reference.partition("?")
        found = svc.conditional_matches(type_name, parse_qsl(query))
        if len(found) != 1:
            raise PreconditionFailed(
                f"Conditional reference '{reference}' matches {len(found) or 'no'} resources; "
                "it must match exactly one"
            )
        return f"{type_name}/{found[0].id}"

    # -- one entry ----------------------------------------------------------------------------

    def _run(self, svc: ResourceService, entry: Entry) -> dict[str, Any]:
        if entry.method == "DELETE":
            if entry.id:
                svc.delete(entry.type, entry.id, entry.if_match)
            else:
                svc.conditional_delete(entry.type, entry.criteria)
            return {"response": {"status": "204 No Content"}}
        if entry.method == "POST":
            if entry.operation == "_search":
                return self._search(svc, entry)
            if entry.id or entry.operation:
                raise Invalid("POST entries must target a resource type (create)")
            written = svc.create(
                entry.type, entry.resource, entry.if_none_exist or None, entry.assigned_id
            )
            return self._written(written.stored, written.status)
        if entry.method == "PUT":
            if entry.id:
                written = svc.update(entry.type, entry.id, entry.resource, entry.if_match)
            else:
                if entry.assigned_id and isinstance(entry.resource, dict):
                    entry.resource = {**entry.resource, "id": entry.assigned_id}
                written = svc.conditional_update(
                    entry.type, entry.criteria, entry.resource, entry.if_match
                )
            return self._written(written.stored, written.status)
        if entry.method == "PATCH":
            ops = _patch_document(entry)
            if entry.id:
                stored = svc.patch(entry.type, entry.id, ops, entry.if_match).stored
            else:
                stored = svc.conditional_patch(
                    entry.type, entry.criteria, ops, entry.if_match
                ).stored
            return self._written(stored, 200)
        # GET / HEAD
        if entry.id and entry.version:
            return self._read(svc.vread(entry.type, entry.id, entry.version))
        if entry.id and entry.operation == "_history":
            pairs = entry.criteria
            url = f"{self.base}/{entry.type}/{entry.id}/_history"
            result = svc.history(entry.type, entry.id, pairs)
            return _ok(rendering.history(self.base, url, pairs, result))
        if entry.id:
            return self._read(svc.read(entry.type, entry.id))
        if entry.operation == "_history":
            url = f"{self.base}/{entry.type}/_history"
            result = svc.history(entry.type, None, entry.criteria)
            return _ok(rendering.history(self.base, url, entry.criteria, result))
        return self._search(svc, entry)

    def _search(self, svc: ResourceService, entry: Entry) -> dict[str, Any]:
        result = svc.search(entry.type, entry.criteria)
        return _ok(rendering.searchset(self.base, f"{self.base}/{entry.type}", result))

    def _read(self, stored: Stored) -> dict[str, Any]:
        return {
            "resource": stored.resource,
            "response": {
                "status": "200 OK",
                "etag": f'W/"{stored.version}"',
                "lastModified": format_instant(stored.last_updated),
            },
        }

    def _written(self, stored: Stored, status: int) -> dict[str, Any]:
        response: dict[str, Any] = {
            "status": _STATUS_TEXT.get(status, str(status)),
            "location": f"{stored.type}/{stored.id}/_history/{stored.version}",
            "etag": f'W/"{stored.version}"',
            "lastModified": format_instant(stored.last_updated),
        }
        out: dict[str, Any] = {"fullUrl": f"{self.base}/{stored.type}/{stored.id}"}
        if self.return_pref == "representation":
            out["resource"] = stored.resource
        elif self.return_pref == "OperationOutcome":
            response["outcome"] = information(f"{stored.type}/{stored.id} stored")
        out["response"] = response
        return out


def _base_of(entry: Entry) -> str | None:
    """The service base of an absolute RESTful fullUrl (`http://x/fhir/Patient/1` -> `http://x/fhir`)."""
    url = entry.full_url or ""
    if not url.startswith(("http://", "https://")):
        return None
    parts = url.rstrip("/").split("/")
    return "/".join(parts[:-2]) if len(parts) > 4 and parts[-2][:1].isupper() else None


def _ok(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "response": {"status": "200 OK"}}


def _envelope(body: Any) -> Any:
    """The Bundle without its entries' resources: each is validated when its entry runs, so an
    invalid resource fails only its own entry in a batch (and is located in a transaction)."""
    entries = body.get("entry") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return body
    return {
        **body,
        "entry": [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in entries
        ],
    }


def _patch_document(entry: Entry) -> Any:
    """A PATCH entry carries its JSON Patch as a Binary (FHIR R4 http.html#patch)."""
    resource = entry.resource
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise Invalid("A PATCH entry must carry a Binary holding an application/json-patch+json")
    if resource.get("contentType") != "application/json-patch+json":
        raise Invalid("A PATCH entry's Binary must have contentType application/json-patch+json")
    try:
        return json.loads(base64.b64decode(resource.get("data") or "", validate=True))
    except (binascii.Error, ValueError):
        raise Invalid("The PATCH entry's Binary.data is not base64-encoded JSON") from None


def _at(exc: FhirError, entry: Entry) -> FhirError:
    """The error, located at its Bundle entry."""
    prefix = f"Bundle.entry[{entry.index}] ({entry.method} {entry.type})"
    exc.diagnostics = f"{prefix}: {exc.diagnostics}"
    for issue in exc.issues:
        if not issue.diagnostics.startswith("Bundle.entry["):
            issue.diagnostics = f"{prefix}: {issue.diagnostics}"
        issue.expression = [
            e
            if e.startswith("Bundle")
            else f"Bundle.entry[{entry.index}].resource.{e.split('.', 1)[-1]}"
            if "." in e
            else f"Bundle.entry[{entry.index}].resource"
            for e in issue.expression
        ]
    return exc


def process_bundle(
    rt: Runtime,
    base: str,
    body: Any,
    *,
    return_pref: str,
    principal: Principal = SYSTEM,
    request_id: str | None = None,
) -> dict[str, Any]:
    """POST [base]: run a batch or transaction Bundle."""
    return BundleProcessor(rt, base, return_pref, principal, request_id).process(body)
