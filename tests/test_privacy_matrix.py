"""The privacy matrix (issue 6): {patient's choice x caller} x {every read path}.

Each column is one situation: a patient's choice (Consent) and a caller. Each row is a way of
reaching data. A cell states the set of scene items the caller must get, exactly, and checks
that nothing else leaks: no hidden item among matches, includes, history entries, batch
answers or operation results; no total that counts or betrays hidden items; errors for a
hidden item equal, byte for byte but the id, those for an item that does not exist; and the
request's BALP AuditEvent records what it did.

The scene (`matrix_scene`) is the care-relationship one (tests/test_care_relationship.py):
Agathe LENOIR is `a1` at CH Romorantin (site 423), which registered a study `S` and its report
(ITI-65: the SubmissionSet List `L`, the DocumentReference `D`, its bytes `B`); Tours (site 401)
has its own patient `b1` with a study `TS`, and knows Agathe too (`t7`, linked to `a1` by the
same validated INS). Added here: a second study of Agathe at Romorantin, `S2` (with a series,
so that `$kos` has something to write), and a Tours report `TD` about `b1` that points at
Agathe's study `S` (`context.related`), which lets chains and includes start from a visible
item and reach a hidden one.

Columns (the caller's token `sub` is `matrix-<column>`, for the audit checks):

| column | the patient's choice | caller | sees |
|---|---|---|---|
| consented | none recorded | Tours radiologist (TREAT) | everything |
| withdrawn | an opposition, then withdrawn | Tours radiologist | everything |
| opposed-all | opposition, no emergency permit | Tours radiologist | all but Agathe's exams |
| opposed-one-exam | exam opposition of `S` (by reference) | Tours radiologist | all but S, D, B |
| opposed-incl-emergency | opposition with emergency permit | Tours radiologist (TREAT) | idem |
| no-care | none | Blois clinician (Blois knows no one) | nothing, not even a Patient |
| own-site-staff | opposition, no permit | Romorantin radiologist | all of Agathe's, not b1's |
| own-site-system | opposition, no permit | Romorantin site-system | everything |
| patient | opposition, no permit | Agathe herself (`patient` token) | her records, her exams |

The emergency use of an opposition with the permit (ETREAT / BTG) is left to
`emergency_use_column`, to be completed with the break-glass rule; the prescriber and
break-glass columns are built elsewhere.

Rows, in two tests per column (one scene per test; the checks of a test are collected and
reported together, so that one wrong answer does not hide the next ones):

- `test_reads_operations_and_writes`: read, vread (of the current version), instance
  history, ITI-68 (a Binary's bytes by its URL), `$kos`, `$priors` (by id and by identifier),
  a transaction's GET entry, a batch's GET entries (reads and a search); PIXm `$ihe-pix`,
  PDQm `$match`; conditional create (`If-None-Exist` and the query-string form) and
  conditional update (`PUT ImagingStudy?identifier=`) on the UID of a study the writer may not
  see; the AuditEvents of a read and of a search. Every refusal is compared with the answer
  about a missing item.
- `test_searches`: plain searches, chains (`patient.identifier`, `subject:Patient.family`,
  `related:ImagingStudy.identifier`), reverse chains (`_has`), `_include` / `_revinclude`,
  PDQm (`Patient?family=`, `identifier=`), ITI-66, ITI-67, `POST _search`, `_summary=count`,
  `_total=accurate`, paging (`_count=1` and the `next` links), type and system history.

The conditional writes are made by Tours' site system in the Tours columns (a radiologist
writes nothing) and by Romorantin's in own-site-system; in the other columns the caller makes
them and gets its role's refusal (403), which must not depend on the match either.

What is right, where the standard leaves a choice:

- A hidden item is a missing item: 404 with the same OperationOutcome (id aside), in a batch
  too; where the role may not read the type at all, 403 whether the item exists or not.
- Chains and `_has` are evaluated over what the caller may see: a visible resource must not
  match through a hidden one (that would tell the hidden one's content: its Study UID, its
  status...). `_include` / `_revinclude` bring only visible items reached from visible matches.
- Totals: `_summary=count` and `_total=accurate` count exactly what the caller may see. A page
  that holds all of a search's visible matches (no `next` link) states its total, so that the
  presence of a total never depends on hidden items (a total left out only when something was
  hidden tells that something was hidden: for a patient in care, that she opposed).
- Paging: the pages together list the visible matches once each, in order, never a hidden one.
- Type history lists the visible versions only (README: hidden items "drop out of ...
  history"); refusing it only when something hidden exists would tell that it exists.
- Conditional create and conditional update: a match the writer may not see is no match. The
  answer is the one the same request gets when nothing matches (the door filter's 422 for an
  opposed patient, or a create), never the hidden resource, never a 412 or any other answer
  that tells it exists; and the hidden resource is left unchanged.
- Audit: a read answered 404 for a hidden item leaves a BALP Read event with outcome 4 (minor
  failure) naming the caller; a search leaves Query events (outcome 0) naming exactly what was
  returned, never the hidden items.

Timing is not asserted (tests measure behaviour, not wall time); the byte-for-byte
comparisons check that hidden and missing items get the same answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.conftest import Token
from tests.identity.support import BLOIS, ROMORANTIN, TOURS, ipp
from tests.test_care_relationship import REPORT, _link_at_tours, _scene
from tests.test_consent_enforcement import (
    break_glass,
    exam_opposition,
    opposition,
    record,
    withdraw,
)

REQUEST_ID_URL = "https://fhir.rix.example/StructureDefinition/request-id"
SUBJECT = "https://fhir.rix.example/sid/subject"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
DICOM_UID = "urn:dicom:uid"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SUBMISSION_SET = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset"
STUDY_UID = "1.2.250.423.1"  # Agathe's study S (from the care-relationship scene)
STUDY2_UID = "1.2.250.423.2"
DIRECTORY = frozenset({"Organization", "Endpoint", "Practitioner", "PractitionerRole"})
IDNPS = "urn:oid:1.2.250.1.71.4.2.1"  # a professional's national number (`8` + RPPS)

# The scene's items: name -> resource type.
TYPES: dict[str, str] = {
    "a1": "Patient",
    "t7": "Patient",
    "b1": "Patient",
    "S": "ImagingStudy",
    "S2": "ImagingStudy",
    "TS": "ImagingStudy",
    "D": "DocumentReference",
    "TD": "DocumentReference",
    "L": "List",
    "B": "Binary",
}
AGATHE = frozenset({"a1", "t7", "S", "S2", "D", "L", "B"})
AGATHE_EXAMS = frozenset({"S", "S2", "D", "L", "B"})
EXAM_S = frozenset({"S", "D", "B"})  # the opposed exam, its report and the report's bytes
TOURS_OWN = frozenset({"b1", "TS", "TD"})
EVERYTHING = AGATHE | TOURS_OWN
IPP_A1 = f"{ipp(ROMORANTIN)}|a1"
IPP_T7 = f"{ipp(TOURS)}|t7"
UID_S = f"{DICOM_UID}|urn:oid:{STUDY_UID}"
# The other records of each person (PIXm).
PERSON = {"a1": {"a1", "t7"}, "t7": {"a1", "t7"}, "b1": {"b1"}}
STUDIES_OF = {"a1": ("S", "S2"), "t7": ("S", "S2"), "b1": ("TS",)}


# -- the scene ------------------------------------------------------------------------------------


def memo(token: Token) -> Token:
    """The same token for the same claims within a test (minting one costs a key load)."""
    minted: dict[str, dict[str, str]] = {}

    def make(role: str, **claims: Any) -> dict[str, str]:
        key = repr((role, sorted(claims.items())))
        if key not in minted:
            minted[key] = token(role, **claims)
        return dict(minted[key])

    return make


def _post(client: TestClient, headers: dict[str, str], resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def matrix_scene(client: TestClient, token: Token) -> dict[str, str]:
    """The scene of the module docstring; logical ids by name."""
    s = _scene(client, token)
    t7 = _link_at_tours(client, token)
    s2 = _post(
        client,
        token("site-system", org=ROMORANTIN),
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{STUDY2_UID}"}],
            "subject": {"reference": f"Patient/{s['a1']}"},
            "started": "2024-02-01T10:00:00+01:00",
            "series": [
                {
                    "uid": f"{STUDY2_UID}.1",
                    "modality": {"system": DCM, "code": "CT"},
                    "instance": [
                        {
                            "uid": f"{STUDY2_UID}.1.1",
                            "sopClass": {
                                "system": "urn:ietf:rfc:3986",
                                "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                            },
                        }
                    ],
                }
            ],
        },
    )
    td = _post(
        client,
        token("site-system", org=TOURS),
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": f"Patient/{s['b1']}"},
            "context": {"related": [{"reference": f"ImagingStudy/{s['study']}"}]},
            "content": [
                {"attachment": {"contentType": "application/pdf", "url": "https://x/td.pdf"}}
            ],
        },
    )
    return {
        "a1": s["a1"],
        "t7": t7,
        "b1": s["b1"],
        "S": s["study"],
        "S2": s2,
        "TS": s["tours_study"],
        "D": s["document"],
        "TD": td,
        "L": s["list"],
        "B": s["binary"],
    }


# -- the patient's choices ------------------------------------------------------------------------

# What happens between the scene and the requests: a Consent, a grant, a prescription...
Choice = Callable[[TestClient, Token, dict[str, str]], None]


def no_choice(client: TestClient, token: Token, ids: dict[str, str]) -> None:
    """No Consent recorded: the community's policy (implicit consent) applies."""


def opposed_all(client: TestClient, token: Token, ids: dict[str, str]) -> None:
    record(client, token, opposition(ids["a1"], emergency=False))


def opposed_incl_emergency(client: TestClient, token: Token, ids: dict[str, str]) -> None:
    record(client, token, opposition(ids["a1"], emergency=True))


def opposed_one_exam(client: TestClient, token: Token, ids: dict[str, str]) -> None:
    record(client, token, exam_opposition(ids["a1"], {"reference": f"ImagingStudy/{ids['S']}"}))


def withdrawn(client: TestClient, token: Token, ids: dict[str, str]) -> None:
    """An opposition, then its withdrawal (a new version, inactive, later dateTime)."""
    consent = opposition(ids["a1"], emergency=False)
    withdraw(client, token, consent, record(client, token, consent))


@dataclass(frozen=True)
class Caller:
    role: str
    org: str | None = None
    purpose: str = "TREAT"
    patient: str | None = None  # for `patient` tokens: the scene name of their record
    npi: str | None = None  # the RPPS number in the token

    def headers(self, token: Token, ids: dict[str, str], sub: str) -> dict[str, str]:
        claims: dict[str, Any] = {"sub": sub, "name": f"Matrix {sub}", "purpose": self.purpose}
        if self.org:
            claims["org"] = self.org
        if self.npi:
            claims["npi"] = self.npi
        if self.patient:
            claims["patient"] = ids[self.patient]
        return token(self.role, **claims)


@dataclass(frozen=True)
class Column:
    """One situation: the patient's choice, the caller, and what the caller must see."""

    name: str
    choice: Choice
    caller: Caller
    visible: frozenset[str]
    # The writer whose conditional writes are checked (None: the caller, refused by role).
    writer: Caller | None = None
    # Types the caller's role may not read at all (403, whether the item exists or not).
    unreadable: frozenset[str] = frozenset()
    # The choice changes scene items (not only Consents): their versions are read again after.
    rereads: bool = False

    @property
    def sub(self) -> str:
        return f"matrix-{self.name}"


TOURS_RADIOLOGIST = Caller("radiologist", TOURS)
TOURS_SYSTEM = Caller("site-system", TOURS)
TOURS_URGENT = Caller("radiologist", TOURS, purpose="ETREAT")
BLOIS_URGENT = Caller("clinician", BLOIS, purpose="BTG")
PRESCRIBER_RPPS = "10101010101"
PRESCRIBER = Caller("gp", BLOIS, npi=PRESCRIBER_RPPS)


def glass_broken(caller: Caller, column: str, *then: Choice) -> Choice:
    """The patient's choices `then`, and a break-glass grant on Agathe for the column's caller
    (the same token subject as the column's requests)."""

    def choose(client: TestClient, token: Token, ids: dict[str, str]) -> None:
        for choice in then:
            choice(client, token, ids)
        break_glass(client, caller.headers(token, ids, f"matrix-{column}"), ids["a1"])

    return choose


def glass_without_reason(client: TestClient, token: Token, ids: dict[str, str]) -> None:
    """The Blois clinician tries to break the glass without a reason: refused, no grant."""
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "valueReference": {"reference": f"Patient/{ids['a1']}"}}],
    }
    headers = BLOIS_URGENT.headers(token, ids, "matrix-break-glass-without-reason")
    response = client.post("/fhir/Patient/$break-glass", json=body, headers=headers)
    assert response.status_code == 400, response.text


def prescribed(client: TestClient, token: Token, ids: dict[str, str]) -> None:
    """Romorantin records who ordered S: the GP's RPPS (IDNPS form) as its referrer."""
    romorantin = token("site-system", org=ROMORANTIN)
    study = client.get(f"/fhir/ImagingStudy/{ids['S']}", headers=romorantin).json()
    study["referrer"] = {"identifier": {"system": IDNPS, "value": f"8{PRESCRIBER_RPPS}"}}
    response = client.put(f"/fhir/ImagingStudy/{ids['S']}", json=study, headers=romorantin)
    assert response.status_code == 200, response.text


COLUMNS = [
    Column("consented", no_choice, TOURS_RADIOLOGIST, EVERYTHING, TOURS_SYSTEM),
    Column("withdrawn", withdrawn, TOURS_RADIOLOGIST, EVERYTHING, TOURS_SYSTEM),
    Column("opposed-all", opposed_all, TOURS_RADIOLOGIST, EVERYTHING - AGATHE_EXAMS, TOURS_SYSTEM),
    Column(
        "opposed-one-exam", opposed_one_exam, TOURS_RADIOLOGIST, EVERYTHING - EXAM_S, TOURS_SYSTEM
    ),
    Column(
        "opposed-incl-emergency",
        opposed_incl_emergency,
        Caller("radiologist", TOURS, purpose="TREAT"),
        EVERYTHING - AGATHE_EXAMS,
        TOURS_SYSTEM,
    ),
    Column("no-care", no_choice, Caller("clinician", BLOIS), frozenset()),
    Column("own-site-staff", opposed_all, Caller("radiologist", ROMORANTIN), AGATHE),
    Column(
        "own-site-system",
        opposed_all,
        Caller("site-system", ROMORANTIN),
        EVERYTHING,
        Caller("site-system", ROMORANTIN),
    ),
    Column(
        "patient",
        opposed_all,
        Caller("patient", patient="a1"),
        AGATHE,
        unreadable=frozenset({"Binary"}),
    ),
    Column(
        "emergency-use",
        glass_broken(TOURS_URGENT, "emergency-use", opposed_incl_emergency),
        TOURS_URGENT,
        EVERYTHING,
        TOURS_SYSTEM,
    ),
    Column(
        "emergency-refused",
        glass_broken(TOURS_URGENT, "emergency-refused", opposed_all),
        TOURS_URGENT,
        EVERYTHING - AGATHE_EXAMS,
        TOURS_SYSTEM,
    ),
    Column("break-glass", glass_broken(BLOIS_URGENT, "break-glass"), BLOIS_URGENT, AGATHE),
    Column("break-glass-without-reason", glass_without_reason, BLOIS_URGENT, frozenset()),
    Column("prescriber", prescribed, PRESCRIBER, EXAM_S, rereads=True),
]


# -- checking -------------------------------------------------------------------------------------


@dataclass
class World:
    """One test's scene, seen by one column's caller; wrong answers are collected."""

    client: TestClient
    token: Token
    column: Column
    ids: dict[str, str]
    headers: dict[str, str]
    versions: dict[str, str]
    failures: list[str] = field(default_factory=list)
    missing: str = field(default_factory=lambda: str(uuid.uuid4()))

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)

    def equal(self, got: Any, want: Any, what: str) -> None:
        self.check(got == want, f"{what}: got {got!r}, want {want!r}")

    def verdict(self) -> None:
        report = "".join(f"\n  [{self.column.name}] {f}" for f in self.failures)
        assert not self.failures, f"{len(self.failures)} wrong answer(s):{report}"

    # names and references

    def ref(self, name: str) -> str:
        return f"{TYPES[name]}/{self.ids[name]}"

    def name_of(self, type_name: str, resource_id: str) -> str:
        for name, id_ in self.ids.items():
            if id_ == resource_id and TYPES[name] == type_name:
                return name
        return f"{type_name}/{resource_id}"  # not a scene item: named by its reference

    def sees(self, name: str) -> bool:
        return name in self.column.visible

    def readable(self, type_name: str) -> bool:
        return type_name not in self.column.unreadable

    def expected_read(self, name: str) -> int:
        if not self.readable(TYPES[name]):
            return 403
        return 200 if self.sees(name) else 404

    def get(self, url: str, headers: dict[str, str] | None = None, **kw: Any) -> Response:
        return self.client.get(url, headers=headers or self.headers, **kw)

    def same_as_missing(
        self,
        hidden: Response,
        missing: Response,
        hidden_id: str,
        what: str,
        missing_id: str | None = None,
    ) -> None:
        """The answer about a hidden item is the answer about a missing one, byte for byte but
        the id (and the request id every answer carries)."""
        self.equal(hidden.status_code, missing.status_code, f"{what}: status vs a missing item")
        got = _without_request_id(hidden.text).replace(hidden_id, missing_id or self.missing)
        want = _without_request_id(missing.text)
        self.check(got == want, f"{what}: body differs from a missing item's\n  {got}\n  {want}")
        skip = {"x-request-id", "date"}
        self.equal(
            sorted(k for k in hidden.headers if k not in skip),
            sorted(k for k in missing.headers if k not in skip),
            f"{what}: headers vs a missing item",
        )

    # searchsets

    def found(self, body: dict[str, Any], mode: str) -> set[str]:
        return {
            self.name_of(e["resource"]["resourceType"], e["resource"]["id"])
            for e in body.get("entry", [])
            if e.get("search", {}).get("mode", "match") == mode
            and e["resource"]["resourceType"] not in DIRECTORY
        }


def _without_request_id(text: str) -> str:
    """An answer's text without the request-id extension (different for every request)."""
    if '"extension":[{"url":"' + REQUEST_ID_URL not in text:
        return text
    head, _, rest = text.partition('"extension":[{"url":"' + REQUEST_ID_URL)
    _, _, tail = rest.partition("}],")
    return head + tail


def _links(body: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in body.get("link", [])}


def _world(client: TestClient, token: Token, column: Column) -> World:
    token = memo(token)
    ids = matrix_scene(client, token)
    versions = _versions(client, ids)
    column.choice(client, token, ids)
    if column.rereads:
        versions = _versions(client, ids)
    headers = column.caller.headers(token, ids, column.sub)
    return World(client, token, column, ids, headers, versions)


def _versions(client: TestClient, ids: dict[str, str]) -> dict[str, str]:
    """The current version of every item (read by the administrator, before any choice)."""
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"{TYPES[n]}/{ids[n]}"}} for n in TYPES],
    }
    response = client.post("/fhir", json=batch)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    return {n: e["resource"]["meta"]["versionId"] for n, e in zip(TYPES, entries, strict=True)}


# -- reads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", COLUMNS, ids=lambda c: c.name)
def test_reads_operations_and_writes(client: TestClient, token: Token, column: Column) -> None:
    """read, vread, instance history, ITI-68, $kos, $priors, a batch's GET entries, PIXm,
    conditional create and update over a hidden match, and the audit trail."""
    w = _world(client, token, column)
    _check_reads(w)
    _check_pix(w)
    _check_match(w)
    _check_audit(w)
    _check_conditional_writes(w)
    w.verdict()


def _check_reads(w: World) -> None:
    missing = {
        t: {
            "read": w.get(f"/fhir/{t}/{w.missing}"),
            "history": w.get(f"/fhir/{t}/{w.missing}/_history"),
        }
        for t in sorted(set(TYPES.values()))
    }
    for name, type_name in TYPES.items():
        id_, want, version = w.ids[name], w.expected_read(name), w.versions[name]
        if f"vread {version}" not in missing[type_name]:
            absent = w.get(f"/fhir/{type_name}/{w.missing}/_history/{version}")
            missing[type_name][f"vread {version}"] = absent
        missing[type_name]["vread"] = missing[type_name][f"vread {version}"]
        for kind, url in (
            ("read", f"/fhir/{type_name}/{id_}"),
            ("vread", f"/fhir/{type_name}/{id_}/_history/{version}"),
            ("history", f"/fhir/{type_name}/{id_}/_history"),
        ):
            response = w.get(url)
            w.equal(response.status_code, want, f"{kind} {name}")
            if want != 200:
                w.same_as_missing(response, missing[type_name][kind], id_, f"{kind} {name}")
            elif kind == "history":
                versions = {e["resource"]["id"] for e in response.json().get("entry", [])}
                w.equal(versions, {id_}, f"history {name}: its versions")
            else:
                w.equal(response.json().get("id"), id_, f"{kind} {name}: the resource")

    # ITI-68: the document's bytes at the attachment's URL.
    native = {**w.headers, "Accept": "text/plain"}
    document = w.get(f"/fhir/Binary/{w.ids['B']}", headers=native)
    w.equal(document.status_code, w.expected_read("B"), "ITI-68 B")
    if document.status_code == 200:
        w.equal(document.content, REPORT, "ITI-68 B: the report's bytes")
    else:
        w.check(REPORT not in document.content, "ITI-68 B: the refusal carries the bytes")
        absent = w.get(f"/fhir/Binary/{w.missing}", headers=native)
        w.same_as_missing(document, absent, w.ids["B"], "ITI-68 B")

    # XDS-I.b: the study as a KOS (S has no series: a visible S is a 400, not a 404).
    absent_kos = w.get(f"/fhir/ImagingStudy/{w.missing}/$kos")
    for name, shown in (("S", 400), ("S2", 200), ("TS", 400)):
        response = w.get(f"/fhir/ImagingStudy/{w.ids[name]}/$kos")
        want = shown if w.sees(name) else 404
        w.equal(response.status_code, want, f"$kos {name}")
        if want == 200:
            w.equal(response.headers["content-type"], "application/dicom", f"$kos {name}")
        elif want == 404:
            w.same_as_missing(response, absent_kos, w.ids[name], f"$kos {name}")

    # The priors list of each person, by each record.
    absent_priors = w.get(f"/fhir/Patient/{w.missing}/$priors")
    for name in ("a1", "t7", "b1"):
        response = w.get(f"/fhir/Patient/{w.ids[name]}/$priors")
        if not w.sees(name):
            w.same_as_missing(response, absent_priors, w.ids[name], f"$priors {name}")
            continue
        w.equal(response.status_code, 200, f"$priors {name}")
        if response.status_code != 200:
            continue
        body = response.json()
        studies = {s for s in STUDIES_OF[name] if w.sees(s)}
        w.equal(w.found(body, "match"), studies, f"$priors {name}: studies")
        reports = {r for r, study in (("D", "S"), ("TD", "S")) if w.sees(r) and study in studies}
        w.equal(w.found(body, "include"), reports, f"$priors {name}: reports")
        w.equal(body.get("total", len(studies)), len(studies), f"$priors {name}: total")

    # The priors list by identifier: an identifier of a hidden record is an unknown one.
    absent = w.get("/fhir/Patient/$priors", params={"identifier": f"{ipp(ROMORANTIN)}|zz"})
    response = w.get("/fhir/Patient/$priors", params={"identifier": IPP_A1})
    if w.sees("a1"):
        w.equal(response.status_code, 200, "$priors?identifier= a1")
        studies = {s for s in STUDIES_OF["a1"] if w.sees(s)}
        w.equal(w.found(response.json(), "match"), studies, "$priors?identifier= a1: studies")
    else:
        w.same_as_missing(response, absent, "a1", "$priors?identifier= a1", "zz")

    # A transaction's GET entry is a read: a hidden item fails it like a missing one.
    for name in ("S", "a1"):
        answers = [
            w.client.post(
                "/fhir",
                json={
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [{"request": {"method": "GET", "url": f"{TYPES[name]}/{id_}"}}],
                },
                headers=w.headers,
            )
            for id_ in (w.ids[name], w.missing)
        ]
        if w.sees(name):
            w.equal(answers[0].status_code, 200, f"transaction GET {name}")
        else:
            w.same_as_missing(*answers, w.ids[name], f"transaction GET {name}")

    # A batch's GET entries are reads (and a search entry a search).
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            *({"request": {"method": "GET", "url": w.ref(n)}} for n in TYPES),
            *({"request": {"method": "GET", "url": f"{t}/{w.missing}"}} for t in missing),
            {"request": {"method": "GET", "url": f"ImagingStudy?patient=Patient/{w.ids['t7']}"}},
        ],
    }
    response = w.client.post("/fhir", json=batch, headers=w.headers)
    w.equal(response.status_code, 200, "batch")
    if response.status_code == 200:
        entries = response.json()["entry"]
        absent = dict(zip(missing, entries[len(TYPES) : len(TYPES) + len(missing)], strict=True))
        for name, entry in zip(TYPES, entries, strict=False):
            status = int(entry["response"]["status"][:3])
            w.equal(status, w.expected_read(name), f"batch GET {name}")
            if status != 200:
                got = str(entry["response"]).replace(w.ids[name], w.missing)
                want = str(absent[TYPES[name]]["response"])
                w.equal(got, want, f"batch GET {name}: vs a missing item")
            else:
                w.equal(entry["resource"]["id"], w.ids[name], f"batch GET {name}")
        inner = entries[-1].get("resource", {})
        studies = {s for s in ("S", "S2") if w.sees(s)}
        w.equal(w.found(inner, "match"), studies, "batch search of t7's studies")
        w.equal(inner.get("total"), len(studies), "batch search of t7's studies: total")


# -- searches -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Search:
    """A search, what it matches when everything is visible, and through what.

    `matches`: name -> the items it matches through (any one visible suffices; empty: none).
    `includes`: name -> the matches that bring it along (any one visible suffices)."""

    label: str
    type: str
    params: tuple[tuple[str, str], ...]
    matches: dict[str, tuple[str, ...]]
    includes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    post: bool = False

    def pairs(self, ids: dict[str, str]) -> list[tuple[str, str]]:
        return [(k, v.format(**ids)) for k, v in self.params]


def _q(query: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        out.append((key, value))
    return tuple(out)


SEARCHES = [
    Search("studies of a1", "ImagingStudy", _q("patient=Patient/{a1}"), {"S": (), "S2": ()}),
    Search(
        "studies of t7 (person)", "ImagingStudy", _q("patient=Patient/{t7}"), {"S": (), "S2": ()}
    ),
    Search(
        "POST _search studies of t7",
        "ImagingStudy",
        _q("patient=Patient/{t7}"),
        {"S": (), "S2": ()},
        post=True,
    ),
    Search(
        "chain patient.identifier (Romorantin IPP)",
        "ImagingStudy",
        (("patient.identifier", IPP_A1),),
        {"S": ("a1",), "S2": ("a1",)},
    ),
    Search(
        "chain patient.identifier (Tours IPP)",
        "ImagingStudy",
        (("patient.identifier", IPP_T7),),
        {"S": ("t7",), "S2": ("t7",)},
    ),
    Search(
        "chain subject:Patient.family",
        "ImagingStudy",
        (("subject:Patient.family", "LENOIR"),),
        {"S": ("a1",), "S2": ("a1",)},
    ),
    Search("study by its UID", "ImagingStudy", (("identifier", UID_S),), {"S": ()}),
    Search(
        "all studies, their patients and reports",
        "ImagingStudy",
        _q("_include=ImagingStudy:patient&_revinclude=DocumentReference:related"),
        {"TS": (), "S": (), "S2": ()},
        {"b1": ("TS",), "a1": ("S", "S2"), "D": ("S",), "TD": ("S",)},
    ),
    Search(
        "ITI-67 by patient",
        "DocumentReference",
        _q("patient=Patient/{t7}&status=current"),
        {"D": ()},
    ),
    Search(
        "ITI-67 by patient.identifier",
        "DocumentReference",
        (("patient.identifier", IPP_T7),),
        {"D": ("t7",)},
    ),
    Search(
        "documents related to S (by reference)",
        "DocumentReference",
        _q("related=ImagingStudy/{S}"),
        {"D": (), "TD": ()},
    ),
    Search(
        "chain related:ImagingStudy.identifier",
        "DocumentReference",
        (("related:ImagingStudy.identifier", UID_S),),
        {"D": ("S",), "TD": ("S",)},
    ),
    Search(
        "all documents and their studies",
        "DocumentReference",
        _q("_include=DocumentReference:related"),
        {"D": (), "TD": ()},
        {"S": ("D", "TD")},
    ),
    Search(
        "ITI-66 submission sets and their documents",
        "List",
        (("patient.identifier", IPP_A1), ("code", SUBMISSION_SET), ("_include", "List:item")),
        {"L": ("a1",)},
        {"D": ("L",)},
    ),
    Search("the report's bytes", "Binary", _q("_id={B}"), {"B": ()}),
    Search("PDQm by family name", "Patient", _q("family=lenoir"), {"a1": (), "t7": ()}),
    Search("PDQm by IPP", "Patient", (("identifier", IPP_A1),), {"a1": ()}),
    Search(
        "a patient and her studies",
        "Patient",
        _q("_id={a1}&_revinclude=ImagingStudy:patient"),
        {"a1": ()},
        {"S": ("a1",), "S2": ("a1",)},
    ),
    Search(
        "_has an available study",
        "Patient",
        _q("_has:ImagingStudy:patient:status=available"),
        {"a1": ("S", "S2"), "b1": ("TS",)},
    ),
    Search(
        "_has the study S",
        "Patient",
        (("_has:ImagingStudy:patient:identifier", UID_S),),
        {"a1": ("S",)},
    ),
    Search(
        "_has a report from Tours' patient",
        "ImagingStudy",
        _q("_has:DocumentReference:related:patient=Patient/{b1}"),
        {"S": ("TD",)},
    ),
    Search(
        "_total=accurate",
        "ImagingStudy",
        _q("patient=Patient/{t7}&_total=accurate"),
        {"S": (), "S2": ()},
    ),
]


def _check_search(w: World, case: Search) -> None:
    pairs = case.pairs(w.ids)
    what = f"search {case.label} ({case.type}?{pairs})"
    if case.post:
        response = w.client.post(f"/fhir/{case.type}/_search", data=dict(pairs), headers=w.headers)
    else:
        response = w.get(f"/fhir/{case.type}", params=pairs)
    if not w.readable(case.type):
        w.equal(response.status_code, 403, what)
        return
    w.equal(response.status_code, 200, what)
    if response.status_code != 200:
        return
    body = response.json()
    matches = {m for m, through in case.matches.items() if w.sees(m) and _through(w, through)}
    if w.column.caller.patient and case.type == "Patient":
        # A patient's Patient searches are narrowed to the record their token names.
        matches &= {w.column.caller.patient}
    includes = {
        i
        for i, via in case.includes.items()
        if w.sees(i) and w.readable(TYPES[i]) and any(v in matches for v in via)
    } - matches
    w.equal(w.found(body, "match"), matches, f"{what}: matches")
    w.equal(w.found(body, "include"), includes, f"{what}: includes")
    _check_total(w, body, len(matches), what)


def _through(w: World, through: tuple[str, ...]) -> bool:
    """A match through other items counts only when one of them is visible too."""
    return not through or any(w.sees(t) for t in through)


def _check_total(w: World, body: dict[str, Any], visible: int, what: str) -> None:
    if "total" in body:
        w.equal(body["total"], visible, f"{what}: total")
    elif "next" not in _links(body):
        w.check(False, f"{what}: no total on a complete page (left out: hidden items matched)")


@pytest.mark.parametrize("column", COLUMNS, ids=lambda c: c.name)
def test_searches(client: TestClient, token: Token, column: Column) -> None:
    """Searches, chains, _has, includes, PDQm, ITI-66/67, counts, totals, paging, history."""
    w = _world(client, token, column)
    for case in SEARCHES:
        _check_search(w, case)

    # _summary=count counts what the caller may see.
    for person in ("t7", "b1"):
        count = w.get(
            "/fhir/ImagingStudy",
            params={"patient": f"Patient/{w.ids[person]}", "_summary": "count"},
        )
        visible = sum(1 for s in STUDIES_OF[person] if w.sees(s))
        w.equal(count.status_code, 200, f"_summary=count {person}")
        w.equal(count.json().get("total"), visible, f"_summary=count {person}: total")
        w.check(not count.json().get("entry"), f"_summary=count {person}: entries")

    # Paging: one study a page, following `next`.
    everything = ["TS", "S", "S2"]  # creation order, the default one
    seen: list[str] = []
    url: str | None = "/fhir/ImagingStudy"
    params: dict[str, str] | None = {"_count": "1"}
    for _ in range(10):
        if url is None:
            break
        page = w.get(url, params=params)
        w.equal(page.status_code, 200, "paging")
        if page.status_code != 200:
            break
        body = page.json()
        names = [w.name_of("ImagingStudy", e["resource"]["id"]) for e in body.get("entry", [])]
        w.check(len(names) <= 1, f"paging: a page of {names}")
        seen += names
        if "total" in body:
            w.equal(body["total"], sum(map(w.sees, everything)), "paging: total")
        url, params = _links(body).get("next"), None
    w.equal(seen, [s for s in everything if w.sees(s)], "paging: the pages together")

    # Type history: the visible versions; system history: administrators only.
    for type_name in ("ImagingStudy", "DocumentReference"):
        history = w.get(f"/fhir/{type_name}/_history")
        if w.column.caller.role == "patient":
            w.equal(history.status_code, 403, f"{type_name} type history (patients search)")
            continue
        w.equal(history.status_code, 200, f"{type_name} type history")
        if history.status_code == 200:
            body = history.json()
            names = {w.name_of(type_name, e["resource"]["id"]) for e in body.get("entry", [])}
            want = {n for n, t in TYPES.items() if t == type_name and w.sees(n)}
            w.equal(names, want, f"{type_name} type history: entries")
    system = w.get("/fhir/_history")
    w.equal(system.status_code, 403, "system history")
    w.check(not any(id_ in system.text for id_ in w.ids.values()), "system history names an item")
    w.verdict()


# -- operations, conditional writes, audit --------------------------------------------------------


def _check_pix(w: World) -> None:
    """PIXm ITI-83: a hidden record is an unknown identifier; the other records listed are the
    visible ones."""
    absent = w.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": f"{ipp(TOURS)}|zz"})
    for name, source in (("a1", IPP_A1), ("t7", IPP_T7), ("b1", f"{ipp(TOURS)}|b1")):
        response = w.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": source})
        what = f"$ihe-pix {name}"
        if w.column.caller.role == "patient":
            w.equal(response.status_code, 403, f"{what} (not a patient's operation)")
        elif not w.sees(name):
            w.same_as_missing(response, absent, name, what, "zz")
        else:
            w.equal(response.status_code, 200, what)
            if response.status_code == 200:
                targets = {
                    p["valueReference"]["reference"].split("/")[1]
                    for p in response.json().get("parameter", [])
                    if p["name"] == "targetId"
                }
                others = {w.ids[r] for r in PERSON[name] - {name} if w.sees(r)}
                w.equal(targets, others, f"{what}: targetId")


def _check_match(w: World) -> None:
    """PDQm ITI-119 `$match` with Agathe's demographics: her visible records only."""
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "resource",
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": "LENOIR", "given": ["Agathe"]}],
                    "birthDate": "1980-07-14",
                },
            }
        ],
    }
    response = w.client.post("/fhir/Patient/$match", json=body, headers=w.headers)
    if w.column.caller.role == "patient":
        w.equal(response.status_code, 403, "$match (not a patient's operation)")
        return
    w.equal(response.status_code, 200, "$match")
    if response.status_code == 200:
        found = response.json()
        visible = {r for r in ("a1", "t7") if w.sees(r)}
        w.equal(w.found(found, "match"), visible, "$match: candidates")
        w.equal(found.get("total"), len(visible), "$match: total")


def _new_study(subject: str, uid: str) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{uid}"}],
        "subject": {"reference": f"Patient/{subject}"},
    }


def _check_conditional_writes(w: World) -> None:
    """Conditional create and update naming Agathe's study S by its UID: for a writer who may
    not see S, the answer is the one for a UID nothing has, and S stays as it was."""
    writer = w.column.writer or w.column.caller
    headers = writer.headers(w.token, w.ids, f"{w.column.sub}-writer")
    site = writer.org
    subject = w.ids["a1" if site == ROMORANTIN else "t7"]
    romorantin = w.token("site-system", org=ROMORANTIN)
    before = w.client.get(f"/fhir/ImagingStudy/{w.ids['S']}", headers=romorantin).json()
    writer_sees = w.client.get(f"/fhir/ImagingStudy/{w.ids['S']}", headers=headers).status_code
    for form in ("If-None-Exist", "query string", "conditional update"):
        answers = []
        for uid in (STUDY_UID, f"2.25.{uuid.uuid4().int}"):
            criteria = f"identifier={DICOM_UID}|urn:oid:{uid}"
            body = _new_study(subject, uid)
            if form == "If-None-Exist":
                answers.append(
                    w.client.post(
                        "/fhir/ImagingStudy",
                        json=body,
                        headers={**headers, "If-None-Exist": criteria},
                    )
                )
            elif form == "query string":
                answers.append(
                    w.client.post(f"/fhir/ImagingStudy?{criteria}", json=body, headers=headers)
                )
            else:
                answers.append(
                    w.client.put(f"/fhir/ImagingStudy?{criteria}", json=body, headers=headers)
                )
        matched, fresh = answers
        for answer in answers:  # each form starts from the scene: what was created goes
            if answer.status_code == 201:
                created = answer.json()["id"]
                w.client.delete(f"/fhir/ImagingStudy/{created}", headers=headers)
        what = f"{form} by {writer.role}@{site} on S's UID"
        if writer.role != "site-system":
            w.equal(matched.status_code, 403, f"{what} (role)")
            w.same_as_missing(matched, fresh, "-", what)
        elif writer_sees == 200:
            if form != "conditional update":  # (an update would change the scene)
                w.equal(matched.status_code, 200, what)
                w.equal(matched.json().get("id"), w.ids["S"], f"{what}: the match")
        else:
            w.equal(matched.status_code, fresh.status_code, f"{what}: status vs no match")
            w.check(w.ids["S"] not in matched.text, f"{what}: the answer names S")
            if matched.status_code >= 400:
                w.equal(
                    _without_request_id(matched.text),
                    _without_request_id(fresh.text),
                    f"{what}: refusal vs no match",
                )
    after = w.client.get(f"/fhir/ImagingStudy/{w.ids['S']}", headers=romorantin).json()
    w.equal(after["meta"]["versionId"], before["meta"]["versionId"], "S after the writes")


def _audit(w: World, request_id: str) -> list[dict[str, Any]]:
    response = w.client.get(
        "/fhir/AuditEvent",
        params={"agent:identifier": f"{SUBJECT}|{w.column.sub}", "_count": "200"},
        headers=w.token("dpo"),
    )
    assert response.status_code == 200, response.text
    return [
        e["resource"]
        for e in response.json().get("entry", [])
        if any(
            x.get("what", {}).get("identifier", {}).get("value") == request_id
            for x in e["resource"].get("entity", [])
        )
    ]


def _subtype(event: dict[str, Any]) -> str | None:
    """The RESTful interaction an AuditEvent records (None for other events, such as the
    policy's own authorization records)."""
    codes = [c.get("code") for c in event.get("subtype", []) if c.get("system") == RESTFUL]
    return codes[0] if codes else None


def _returned(event: dict[str, Any]) -> set[str]:
    """The domain resources an AuditEvent says were touched (Type/id, without version)."""
    return {
        x["what"]["reference"].split("/_history")[0]
        for x in event.get("entity", [])
        if x.get("role", {}).get("code") == "4" and "reference" in x.get("what", {})
    }


def _check_audit(w: World) -> None:
    """The read of S and the search of t7's studies leave BALP events with the right outcome,
    naming the caller and exactly what was returned."""
    read_id, search_id = f"{w.column.sub}-read", f"{w.column.sub}-search"
    read = w.get(f"/fhir/ImagingStudy/{w.ids['S']}", headers={**w.headers, "X-Request-Id": read_id})
    search = w.get(
        "/fhir/ImagingStudy",
        params={"patient": f"Patient/{w.ids['t7']}"},
        headers={**w.headers, "X-Request-Id": search_id},
    )
    events = [e for e in _audit(w, read_id) if _subtype(e) == "read"]
    w.equal(len(events), 1, "audit of the read of S: Read events")
    for event in events:
        w.equal(event.get("action"), "R", "audit read: action")
        w.equal(
            event.get("outcome"), "0" if read.status_code == 200 else "4", "audit read: outcome"
        )
        if read.status_code != 200:
            w.check(
                event.get("outcomeDesc", "").startswith(str(read.status_code)),
                f"audit read: outcomeDesc {event.get('outcomeDesc')!r}",
            )
        user = next((a for a in event.get("agent", []) if a.get("requestor")), {})
        w.equal(
            user.get("who", {}).get("identifier", {}).get("value"), w.column.sub, "audit read: who"
        )
    events = [e for e in _audit(w, search_id) if _subtype(e) == "search-type"]
    w.check(bool(events), "audit of the search: no Query event")
    studies = {w.ref(s) for s in ("S", "S2") if w.sees(s)}
    w.equal(set().union(*map(_returned, events)), studies, "audit search: what was returned")
    for event in events:
        w.equal(event.get("action"), "E", "audit search: action")
        w.equal(event.get("outcome"), "0", "audit search: outcome")
    w.check(search.status_code == 200, "the audited search failed")
    w.check(
        any(x.get("query") for e in events for x in e.get("entity", [])),
        "audit search: the query is not recorded",
    )
