"""Patients' deletion requests: an exam withdrawn from the regional exchange at a patient's
request, for good (GDPR right to erasure; the MIRC/PANORAMA "demande de suppression").

A request is a FHIR R4 `Task` (task.html) with `code` = task-code#deletion-request, `intent`
`order`, `focus` the ImagingStudy (or a DocumentReference) and `for` the Patient; `reasonCode`
and `note` are optional. It moves through the FHIR Task state machine:

- created `requested` by a `site-system` (for its own patients' exams), the `dpo`, the `registry`
  or an `admin`, about an exam the requester can see;
- `RIX_DELETION_APPROVAL=auto`: carried out in the transaction that files it; `admin` (default):
  it waits until an `admin` or the `dpo` updates it to `accepted` (carried out in that
  transaction) or `rejected` (nothing happens; `statusReason` says why); while it waits, a role
  that may file it (a site for its own patients) may withdraw it (`cancelled`);
- carried out, it becomes `completed`, its `output`s the receipt. Closed requests never change.

Carrying it out, in one transaction (all or nothing):

1. the exam — the ImagingStudy and every DocumentReference about it (reports, KOS manifests,
   superseded versions: `context.related` naming the study by reference, by Study Instance UID
   or by accession number, for the same person) — gets an `entered-in-error` version, then a
   tombstone; so do the Binaries holding the documents' bytes;
2. every version of all of them is erased (`app.storage.erasure`): no read, vread, search,
   include, history entry, `$priors`, ITI-68 retrieval or `$kos` gives anything back;
3. an IHE IOCM Rejection Note is made for the study's instances (a KOS titled from DICOM PS3.16
   CID 7011: 113039 "Data Retention Policy Expired", or 113037 "Rejected for Patient Safety
   Reasons" when the Task's `reasonCode` says so), stored as a Binary (`application/dicom`)
   whose `securityContext` is the Task, for the producing site to send to its PACS;
4. the Task is `completed` with the receipt: the study's identifiers (Study Instance UID,
   accession number), the ids of what was removed, when, who approved, the rejection note.
   The receipt carries identifiers only, never the exam's content.

The carrying out is audited as BALP Delete events naming the patient (and Update / Create
events for the `entered-in-error` versions, the note and the Task). It writes through the
repository, not the REST interactions: the approver (the DPO) need not hold write rights on
clinical data, nor see an exam its patient has hidden from the region, to let it go.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from app.errors import Forbidden, Issue, Unprocessable
from app.fhir.bundles import RIX_CANONICAL
from app.fhir.search import escape
from app.fhir.values import format_instant, now_utc
from app.imaging.kos import (
    DATA_RETENTION_POLICY_EXPIRED,
    REJECTED_FOR_PATIENT_SAFETY,
    KosCode,
    KosError,
    KosManifest,
    KosSeries,
    kos_from_imaging_study,
    parse_kos,
    rejection_note,
)
from app.imaging.manifest import is_uid
from app.imaging.values import DCM_SYSTEM
from app.policy.principal import Principal
from app.policy.seam import local_reference
from app.services.documents import DICOM_UID_SYSTEM, attachment_bytes, is_manifest
from app.storage.erasure import erase
from app.storage.repository import Stored

if TYPE_CHECKING:
    from app.services.resources import ResourceService

TASK_CODE_SYSTEM = f"{RIX_CANONICAL}/CodeSystem/task-code"
DELETION_REQUEST = "deletion-request"
# Output types of a completed request (its receipt).
RECEIPT_SYSTEM = f"{RIX_CANONICAL}/CodeSystem/deletion-receipt"
Approval = Literal["auto", "admin"]
# Who may file a request, and who decides one (README "Roles").
REQUESTERS = frozenset({"site-system", "dpo", "registry", "admin"})
APPROVERS = frozenset({"admin", "dpo"})
EXAM_TYPES = frozenset({"ImagingStudy", "DocumentReference"})
# The CID 7011 titles a patient's deletion request may carry (its `reasonCode`, DCM system).
REQUEST_TITLES = {c.value: c for c in (DATA_RETENTION_POLICY_EXPIRED, REJECTED_FOR_PATIENT_SAFETY)}
_ACSN = "ACSN"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_PAGE = 500  # rows per page when collecting an exam's documents and versions


def is_deletion_request(task: dict[str, Any] | None) -> bool:
    """True for a Task carrying the deletion-request code."""
    concept = (task or {}).get("code")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return any(
        isinstance(c, dict)
        and c.get("system") == TASK_CODE_SYSTEM
        and c.get("code") == DELETION_REQUEST
        for c in codings or []
    )


@dataclass
class Exam:
    """What one request withdraws: the study (None for a document about no study), its
    documents, the Binaries holding their bytes, and the Patient records it is about."""

    study: Stored | None
    documents: list[Stored]
    binaries: list[Stored]
    patients: set[str]

    def items(self) -> list[Stored]:
        """Documents first, then the study: a report never outlives the study it points at."""
        return [*self.documents, *([self.study] if self.study else []), *self.binaries]


class Deletions:
    """Collects the Tasks a unit of work writes; `finish` decides the deletion requests among
    them (see the module docstring)."""

    def __init__(self, service: ResourceService, approval: Approval) -> None:
        self.svc = service
        self.approval = approval  # RIX_DELETION_APPROVAL
        self.written: list[Stored] = []
        self._own: set[tuple[str, int]] = set()  # (Task id, version) RIX itself wrote

    def on_write(self, stored: Stored) -> None:
        """Repository listener: remember the Tasks written by the caller."""
        if stored.type == "Task" and (stored.id, stored.version) not in self._own:
            self.written.append(stored)

    def finish(self) -> None:
        """Decide every deletion request this unit wrote (its latest version only)."""
        while self.written:
            stored = self.written.pop(0)
            current = self.svc.repo.current("Task", stored.id)
            if current is None or current.version != stored.version or current.deleted:
                continue  # rewritten later in this unit (that version is decided), or deleted
            previous = self._previous(current)
            if is_deletion_request(current.resource) or is_deletion_request(previous):
                self._decide(current, previous)

    def _previous(self, current: Stored) -> dict[str, Any] | None:
        if current.version == 1:
            return None
        before = self.svc.repo.version("Task", current.id, current.version - 1)
        return before.resource if before is not None and before.content is not None else None

    # -- the state machine -----------------------------------------------------------------------

    def _decide(self, current: Stored, previous: dict[str, Any] | None) -> None:
        task = current.resource
        was = previous if is_deletion_request(previous) else None
        if was is None:  # a new request: created, or another Task turned into one
            self._check_role(REQUESTERS, "request the deletion of an exam")
            _check_request(task, status="requested")
            exam = self._exam(task, as_requester=True)
            self._check_no_open_request(current.id, task)
            if self.approval == "auto":
                self._carry_out(current, exam, approver=None)
            return
        if not is_deletion_request(task):
            raise _closed("A deletion request stays one: its code cannot change")
        if was.get("status") != "requested":
            raise _closed(
                f"Task/{current.id} is {was.get('status')}: a closed request never changes"
            )
        for element in ("focus", "for", "code"):
            if task.get(element) != was.get(element):
                raise _closed(
                    f"The {element} of a deletion request cannot change; cancel it and file a "
                    "new one",
                    expression=f"Task.{element}",
                )
        status = task.get("status")
        if status == "requested":  # notes, a reason: checked like a new request's
            self._check_role(REQUESTERS, "change a deletion request")
            _check_request(task, status="requested")
        elif status == "accepted":
            self._check_role(APPROVERS, "accept a deletion request")
            _check_request(task, status="accepted")
            self._carry_out(current, self._exam(task, as_requester=False), self.svc.principal)
        elif status == "rejected":
            self._check_role(APPROVERS, "reject a deletion request")
            if not _has_reason(task.get("statusReason")):
                raise _refusal(
                    "required",
                    "A rejected deletion request says why: statusReason is required",
                    "Task.statusReason",
                )
        elif status == "cancelled":
            self._check_role(REQUESTERS, "withdraw a deletion request")
        else:
            raise _closed(
                f"A deletion request goes from requested to accepted or rejected (admin, DPO) or "
                f"cancelled (a requester); RIX alone completes it, not a status of {status!r}",
                expression="Task.status",
            )

    def _check_role(self, roles: frozenset[str], what: str) -> None:
        if self.svc.principal.role not in roles:
            raise Forbidden(f"Role '{self.svc.principal.role}' may not {what}")

    def _check_no_open_request(self, task_id: str, task: dict[str, Any]) -> None:
        """One open request per exam: a second would only wait for a decision already due."""
        focus = (task.get("focus") or {}).get("reference")
        pairs = [
            ("focus", str(focus)),
            ("code", f"{TASK_CODE_SYSTEM}|{DELETION_REQUEST}"),
            ("status", "requested"),
        ]
        for other in self._all("Task", pairs):
            if other.id != task_id:
                raise _refusal(
                    "duplicate",
                    f"{focus} already has an open deletion request (Task/{other.id})",
                    "Task.focus",
                )

    # -- what a request names -----------------------------------------------------------------

    def _exam(self, task: dict[str, Any], *, as_requester: bool) -> Exam:
        """The exam the request names, checked: a live exam item (that the requester sees, and
        a site system's own when it files), about the Patient the request is for."""
        focus_type, focus_id = _target(task, "focus")
        patient_id = _target(task, "for")[1]
        focus = self.svc.repo.current(focus_type, focus_id)
        if focus is None or (as_requester and not self.svc.visible(focus)):
            # Hidden and missing answer alike (README "Roles"): nothing tells that it exists.
            raise _refusal("not-found", f"{focus_type}/{focus_id} is not known", "Task.focus")
        if focus.deleted:
            raise _refusal(
                "deleted",
                f"{focus_type}/{focus_id} has already been deleted: there is nothing to remove",
                "Task.focus",
            )
        records = self.svc.facts.records_of_person(patient_id)
        about = self.svc.policy.patients_of(focus_type, focus_id, focus.resource)
        if not about & records:
            raise _refusal(
                "business-rule",
                f"{focus_type}/{focus_id} is not about Patient/{patient_id} (the Task's `for`)",
                "Task.for",
            )
        if as_requester:
            # The organisation boundary of a delete: a site removes its own patients' exams.
            self.svc.policy.check_write(
                self.svc.principal,
                focus_type,
                focus_id,
                focus.resource,
                lambda pid: self.svc.facts.lookup("Patient", pid),
                self.svc.facts,
                incoming=False,
            )
        study = focus if focus_type == "ImagingStudy" else self._study_of(focus)
        documents = self._documents(study, records | about) if study else {}
        if focus_type == "DocumentReference":
            documents.setdefault(focus.id, focus)
        ordered = sorted(documents.values(), key=lambda s: s.pk)
        patients = set(about)
        for document in ordered:
            patients |= self.svc.policy.patients_of(document.type, document.id, document.resource)
        return Exam(study, ordered, self._binaries(ordered), patients & (records | about))

    def _study_of(self, document: Stored) -> Stored | None:
        """The live ImagingStudy a document points at (`context.related`), if any."""
        for related in _related(document.resource):
            target = local_reference(related.get("reference"))
            if target is not None and target[0] == "ImagingStudy":
                study = self.svc.repo.current(*target)
                if study is not None and not study.deleted:
                    return study
        for related in _related(document.resource):
            identifier = related.get("identifier") or {}
            if identifier.get("system") == DICOM_UID_SYSTEM and identifier.get("value"):
                uid = escape(str(identifier["value"]))
                for study in self._all(
                    "ImagingStudy", [("identifier", f"{DICOM_UID_SYSTEM}|{uid}")]
                ):
                    return study
        return None

    def _documents(self, study: Stored, records: set[str]) -> dict[str, Stored]:
        """Every DocumentReference about the study, whatever its status: naming it by reference,
        by Study Instance UID or by accession number (an accession only within the same issuer
        when both give one: accession numbers are unique per site, not in the region), and
        about one of the person's records — a document of someone else naming this study is
        not this patient's to remove."""
        uids = {
            str(i["value"])
            for i in study.resource.get("identifier", []) or []
            if isinstance(i, dict) and i.get("system") == DICOM_UID_SYSTEM and i.get("value")
        }
        forms = sorted(
            uids
            | {u.removeprefix("urn:oid:") for u in uids}
            | {f"urn:oid:{u}" for u in uids if not u.startswith("urn:oid:")}
        )
        accessions = [i for i in study.resource.get("identifier", []) or [] if _is_accession(i)]
        searches: list[tuple[list[tuple[str, str]], dict[str, Any] | None]] = [
            ([("related", f"ImagingStudy/{study.id}")], None)
        ]
        if forms:
            values = ",".join(f"{DICOM_UID_SYSTEM}|{escape(f)}" for f in forms)
            searches.append(([("study-instance-uid", values)], None))
        for accession in accessions:
            searches.append(([("accession-number", escape(str(accession["value"])))], accession))
        found: dict[str, Stored] = {}
        for pairs, accession in searches:
            for document in self._all("DocumentReference", pairs):
                about = self.svc.policy.patients_of(document.type, document.id, document.resource)
                if about and not about & records:
                    continue
                if accession is not None and (
                    not about or not _same_accession(accession, document.resource)
                ):
                    continue
                found[document.id] = document
        return found

    def _binaries(self, documents: list[Stored]) -> list[Stored]:
        """The Binaries holding the documents' bytes, named by any version of them (a document
        updated with new content leaves its earlier bytes behind); a Binary another live
        document reads its bytes from (its `securityContext`) stays."""
        ours = {f"DocumentReference/{d.id}" for d in documents}
        base = self.svc.repo.compiler.base_url
        found: dict[str, Stored] = {}
        for document in documents:
            for version in self._versions(document):
                for content in version.resource.get("content", []) or []:
                    attachment = content.get("attachment") if isinstance(content, dict) else None
                    url = attachment.get("url") if isinstance(attachment, dict) else None
                    if isinstance(url, str) and base and url.startswith(f"{base}/"):
                        url = url[len(base) + 1 :]
                    target = local_reference(url)
                    if target is None or target[0] != "Binary" or target[1] in found:
                        continue
                    binary = self.svc.repo.current(*target)
                    if binary is not None and self._binary_is_ours(binary, ours):
                        found[binary.id] = binary
        return sorted(found.values(), key=lambda s: s.pk)

    def _binary_is_ours(self, binary: Stored, ours: set[str]) -> bool:
        content = self._last_content(binary)
        context = ((content or {}).get("securityContext") or {}).get("reference")
        if context is None or context in ours:
            return True
        target = local_reference(context)
        other = (
            self.svc.repo.current(*target) if target and target[0] in self.svc.registry else None
        )
        return other is None or other.deleted

    def _last_content(self, stored: Stored) -> dict[str, Any] | None:
        if stored.content is not None:
            return stored.resource
        for version in self._versions(stored):
            return version.resource
        return None

    def _versions(self, stored: Stored) -> Iterator[Stored]:
        """The versions of a resource that still hold content, newest first."""
        offset = 0
        while True:
            entries, total, _ = self.svc.repo.history(
                type_name=stored.type, resource_id=stored.id, count=_PAGE, offset=offset
            )
            yield from (e for e in entries if e.content is not None)
            offset += len(entries)
            if not entries or offset >= total:
                return

    def _all(self, type_name: str, pairs: list[tuple[str, str]]) -> Iterator[Stored]:
        """Every live match of a search, page after page (no policy: the request was checked)."""
        query = self.svc.parser.parse(type_name, pairs)
        query = dataclasses.replace(query, count=_PAGE, total="none")
        while True:
            rows, _ = self.svc.repo.search(query)
            yield from rows
            if len(rows) < _PAGE:
                return
            query = dataclasses.replace(query, offset=query.offset + _PAGE)

    # -- carrying it out -----------------------------------------------------------------------

    def _carry_out(self, task: Stored, exam: Exam, approver: Principal | None) -> None:
        """Withdraw, erase, leave the IOCM note and complete the Task (module docstring)."""
        repo = self.svc.repo
        now = now_utc()
        title = _title(task.resource)
        note = self._rejection_note(exam, title)  # before erasure: it reads the manifests
        removed: list[str] = []
        for item in exam.items():
            current = repo.current(item.type, item.id)
            if current is None:
                continue
            ref = f"{item.type}/{item.id}"
            if not current.deleted:
                if item.type != "Binary" and current.resource.get("status") != "entered-in-error":
                    withdrawn = {**current.resource, "status": "entered-in-error"}
                    current = repo.update(current, withdrawn)
                    self._audit("update", current, exam.patients)
                current = repo.delete(current)
                self._audit("delete", current, exam.patients)
            removed.append(ref)
        repo.flush()  # the queued history rows first: erased with the rest
        erased = erase(repo.session, [(i.type, i.id) for i in exam.items()])
        note_ref = None
        if note is not None:
            binary = repo.create(
                {
                    "resourceType": "Binary",
                    "contentType": "application/dicom",
                    "securityContext": {"reference": f"Task/{task.id}"},
                    "data": base64.b64encode(note).decode("ascii"),
                }
            )
            self._audit("create", binary, exam.patients)
            note_ref = f"Binary/{binary.id}"
        completed = {
            **task.resource,
            "status": "completed",
            "lastModified": format_instant(now),
            "executionPeriod": {
                **(task.resource.get("executionPeriod") or {}),
                "end": format_instant(now),
            },
            "output": _receipt(exam, removed, now, approver, title, note_ref, erased.versions),
        }
        self._own.add((task.id, task.version + 1))
        done = repo.update(repo.current("Task", task.id) or task, completed)
        self._audit("update", done, exam.patients)

    def _audit(self, interaction: str, stored: Stored, patients: set[str]) -> None:
        """BALP: each write of the carrying out, naming the patient(s) of the exam."""
        touch = self.svc.audit.touch(interaction, stored.type)
        touch.add(f"{stored.type}/{stored.id}/_history/{stored.version}", set(patients))

    def _rejection_note(self, exam: Exam, title: KosCode) -> bytes | None:
        """The IOCM Rejection Note of the exam's study: its identification from the stored KOS
        manifest when there is one (the site's own Patient ID and issuer, as its PACS knows
        them), else from the ImagingStudy and its Patient; the instances of every manifest and
        of the study. None without a study, or when no instance is known (nothing for a PACS to
        reject)."""
        if exam.study is None:
            return None
        manifests = self._stored_manifests(exam)
        base = manifests[0] if manifests else self._from_study(exam.study)
        if base is None:
            return None
        series: dict[str, KosSeries] = {}
        for source in [*manifests, *([m] if (m := self._from_study(exam.study)) else [])]:
            if source.study_uid != base.study_uid:
                continue
            for item in source.series:
                known = series.get(item.uid)
                if known is None:
                    series[item.uid] = item
                    continue
                have = {i.sop_instance_uid for i in known.instances}
                extra = tuple(i for i in item.instances if i.sop_instance_uid not in have)
                series[item.uid] = dataclasses.replace(known, instances=known.instances + extra)
        merged = dataclasses.replace(base, series=tuple(series.values()))
        try:
            return rejection_note(merged, title)
        except KosError:
            return None  # no instance: nothing any PACS could withdraw

    def _stored_manifests(self, exam: Exam) -> list[KosManifest]:
        """The exam's KOS manifests, readable ones only, the current ones first."""
        ordered = sorted(
            (d for d in exam.documents if is_manifest(d.resource)),
            key=lambda d: (d.resource.get("status") != "current", -d.pk),
        )
        out = []
        for document in ordered:
            for content in document.resource.get("content", []) or []:
                attachment = content.get("attachment") if isinstance(content, dict) else None
                if not isinstance(attachment, dict):
                    continue
                data = attachment_bytes(self.svc, attachment)
                if data is None:
                    continue
                try:
                    out.append(parse_kos(data))
                except KosError:
                    continue  # a MADO FHIR manifest, or bytes that are no KOS
        return out

    def _from_study(self, study: Stored) -> KosManifest | None:
        """The study read as a manifest (its series and instances, its Patient's identifier)
        by way of the `$kos` writer; None when it lists no valid instance."""
        resource = _valid_instances(study.resource)
        subject = local_reference((resource.get("subject") or {}).get("reference"))
        patient = None
        if subject is not None and subject[0] == "Patient":
            patient = self.svc.facts.lookup("Patient", subject[1])
        try:
            return parse_kos(kos_from_imaging_study(resource, patient=patient))
        except KosError:
            return None


# -- helpers ------------------------------------------------------------------------------------


def _refusal(code: str, text: str, expression: str) -> Unprocessable:
    """A 422 whose one issue (FHIR issue-type `code`) says it all and points at the element."""
    return Unprocessable(text, issues=[Issue(code, text, expression=[expression])])


def _closed(text: str, *, expression: str = "Task") -> Unprocessable:
    return _refusal("business-rule", text, expression)


def _check_request(task: dict[str, Any], *, status: str) -> None:
    """What a deletion request must say (FHIR Task): intent order, the expected status, an exam
    item as focus, a Patient as `for`, and a reason DICOM can carry."""
    problems: list[Issue] = []
    if task.get("intent") != "order":
        problems.append(
            Issue("value", "A deletion request's intent is 'order'", expression=["Task.intent"])
        )
    if task.get("status") != status:
        problems.append(
            Issue(
                "value",
                f"A deletion request here has status '{status}'",
                expression=["Task.status"],
            )
        )
    focus = local_reference((task.get("focus") or {}).get("reference"))
    if focus is None or focus[0] not in EXAM_TYPES:
        problems.append(
            Issue(
                "value",
                "The focus of a deletion request is the exam: ImagingStudy/<id> or "
                "DocumentReference/<id> of this server",
                expression=["Task.focus"],
            )
        )
    subject = local_reference((task.get("for") or {}).get("reference"))
    if subject is None or subject[0] != "Patient":
        problems.append(
            Issue(
                "value",
                "A deletion request is `for` a Patient (Patient/<id>)",
                expression=["Task.for"],
            )
        )
    for coding in _dcm_codings(task.get("reasonCode")):
        if coding.get("code") not in REQUEST_TITLES:
            problems.append(
                Issue(
                    "code-invalid",
                    f"DCM {coding.get('code')} is not a reason for a patient's deletion request: "
                    "113039 (Data Retention Policy Expired) or 113037 (Rejected for Patient "
                    "Safety Reasons)",
                    expression=["Task.reasonCode"],
                )
            )
    if problems:
        raise Unprocessable("; ".join(p.diagnostics for p in problems), issues=problems)


def _target(task: dict[str, Any], element: str) -> tuple[str, str]:
    target = local_reference((task.get(element) or {}).get("reference"))
    assert target is not None  # _check_request vouched for it
    return target


def _title(task: dict[str, Any]) -> KosCode:
    """The CID 7011 title of the rejection note: the Task's DCM reasonCode, else 113039."""
    for coding in _dcm_codings(task.get("reasonCode")):
        title = REQUEST_TITLES.get(str(coding.get("code")))
        if title is not None:
            return title
    return DATA_RETENTION_POLICY_EXPIRED


def _dcm_codings(concept: Any) -> list[dict[str, Any]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [c for c in codings or [] if isinstance(c, dict) and c.get("system") == DCM_SYSTEM]


def _has_reason(concept: Any) -> bool:
    if not isinstance(concept, dict):
        return False
    if str(concept.get("text") or "").strip():
        return True
    return any(
        isinstance(c, dict) and (c.get("code") or c.get("display"))
        for c in concept.get("coding") or []
    )


def _related(document: dict[str, Any]) -> list[dict[str, Any]]:
    context = document.get("context")
    related = context.get("related") if isinstance(context, dict) else None
    return [r for r in related or [] if isinstance(r, dict)]


def _is_accession(identifier: Any) -> bool:
    if not isinstance(identifier, dict) or not identifier.get("value"):
        return False
    concept = identifier.get("type")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return any(isinstance(c, dict) and c.get("code") == _ACSN for c in codings or [])


def _same_accession(accession: dict[str, Any], document: dict[str, Any]) -> bool:
    """True when the document's `context.related` names this accession number (an issuer
    missing on either side matches any, as patients' exam oppositions read it)."""
    for related in _related(document):
        identifier = related.get("identifier")
        if not isinstance(identifier, dict) or not _is_accession(identifier):
            continue
        if identifier["value"] != accession["value"]:
            continue
        theirs, ours = identifier.get("system"), accession.get("system")
        if not theirs or not ours or theirs == ours:
            return True
    return False


def _valid_instances(study: dict[str, Any]) -> dict[str, Any]:
    """The study with only the series and instances DICOM can reference (well-formed UIDs and
    SOP classes): a malformed entry must not keep the rest from being rejected."""
    series = []
    for item in study.get("series", []) or []:
        if not isinstance(item, dict) or not is_uid(str(item.get("uid") or "")):
            continue
        instances = [
            i
            for i in item.get("instance", []) or []
            if isinstance(i, dict)
            and is_uid(str(i.get("uid") or ""))
            and is_uid(str((i.get("sopClass") or {}).get("code") or "").removeprefix("urn:oid:"))
        ]
        if instances:
            series.append({**item, "instance": instances})
    return {**study, "series": series}


def _receipt(
    exam: Exam,
    removed: list[str],
    now: datetime,
    approver: Principal | None,
    title: KosCode,
    note: str | None,
    versions: int,
) -> list[dict[str, Any]]:
    """Task.output: what was removed (identifiers and ids, never content), when, who approved,
    and the rejection note."""

    def out(code: str, **value: Any) -> dict[str, Any]:
        return {"type": {"coding": [{"system": RECEIPT_SYSTEM, "code": code}]}, **value}

    outputs: list[dict[str, Any]] = []
    if exam.study is not None:
        for identifier in exam.study.resource.get("identifier", []) or []:
            if not isinstance(identifier, dict) or not identifier.get("value"):
                continue
            if identifier.get("system") == DICOM_UID_SYSTEM:
                kept = {"system": DICOM_UID_SYSTEM, "value": identifier["value"]}
                outputs.append(out("study-instance-uid", valueIdentifier=kept))
            elif _is_accession(identifier):
                kept = {
                    "type": {"coding": [{"system": _V2_0203, "code": _ACSN}]},
                    **({"system": identifier["system"]} if identifier.get("system") else {}),
                    "value": identifier["value"],
                }
                outputs.append(out("accession-number", valueIdentifier=kept))
    for ref in removed:
        outputs.append(out("removed", valueReference={"reference": ref}))
    outputs.append(out("erased-versions", valueInteger=versions))
    outputs.append(out("removed-at", valueInstant=format_instant(now)))
    if approver is None:
        outputs.append(
            out("approved-by", valueString="RIX: automatic approval (RIX_DELETION_APPROVAL=auto)")
        )
    else:
        who = f"{approver.name} ({approver.subject}, {approver.role})"
        outputs.append(out("approved-by", valueString=who))
    if note is not None:
        outputs.append(out("rejection-note", valueReference={"reference": note}))
        coding = {"system": DCM_SYSTEM, "code": title.value, "display": title.meaning}
        outputs.append(out("rejection-reason", valueCoding=coding))
    return outputs
