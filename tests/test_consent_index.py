"""`consent.Denies` (the indexed form enforcement uses) says of every item exactly what
`consent.covers` (the rule, one decision at a time) says of each decision: checked over every
combination of a few decisions and items naming exams in each way (reference, Study UID,
accession with and without issuer), documents pointing at studies by reference or identifier,
and the types an exam opposition does not cover."""

from __future__ import annotations

import itertools
from typing import Any

from app.policy import consent
from app.policy.consent import Decision, Denies, Exam

ACSN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
ISSUER = "https://fhir.rix.example/sid/accession/423"
OTHER_ISSUER = "https://fhir.rix.example/sid/accession/401"

STUDIES: dict[str, dict[str, Any]] = {
    "s1": {
        "resourceType": "ImagingStudy",
        "identifier": [
            {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"},
            {"type": ACSN, "system": ISSUER, "value": "A1"},
        ],
    },
    "s2": {
        "resourceType": "ImagingStudy",
        "identifier": [{"type": ACSN, "value": "A2"}],
    },
    "s3": {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": "urn:dicom:uid", "value": "9.9"}],
    },
}
DOCUMENTS: dict[str, dict[str, Any]] = {
    "d1": {"context": {"related": [{"reference": "ImagingStudy/s1"}]}},
    "d2": {"context": {"related": [{"reference": "ImagingStudy/s2"}]}},
    "d3": {
        "context": {"related": [{"identifier": {"type": ACSN, "system": ISSUER, "value": "A1"}}]}
    },
    "d4": {"context": {"related": [{"identifier": {"system": "urn:dicom:uid", "value": "1.2.3"}}]}},
    "d5": {},
}
EXAMS = [
    Exam(reference=("ImagingStudy", "s1")),
    Exam(reference=("ImagingStudy", "s2")),
    Exam(reference=("DocumentReference", "d5")),
    Exam(study_uid="1.2.3"),
    Exam(study_uid="9.9"),
    Exam(accession="A1", accession_system=ISSUER),
    Exam(accession="A1", accession_system=OTHER_ISSUER),
    Exam(accession="A2"),
    Exam(accession="A1"),
]


def _decisions() -> list[Decision]:
    out = [
        Decision("opp", True, "opposition", True, (), False),
        Decision("opp-withdrawn", False, "opposition", True, (), False),
        Decision("permit", True, "community-sharing", False, (), False),
    ]
    out += [
        Decision(f"exam-{i}", True, "exam-opposition", True, (exam,), bool(i % 2))
        for i, exam in enumerate(EXAMS)
    ]
    out.append(Decision("two-exams", True, "exam-opposition", True, tuple(EXAMS[3:5]), False))
    return out


def _items() -> list[tuple[str, str, dict[str, Any]]]:
    items = [("ImagingStudy", k, v) for k, v in STUDIES.items()]
    items += [("DocumentReference", k, v) for k, v in DOCUMENTS.items()]
    items += [("List", "l1", {}), ("ServiceRequest", "o1", {}), ("Patient", "p1", {})]
    return items


def _lookup(type_name: str, resource_id: str) -> dict[str, Any] | None:
    return STUDIES.get(resource_id) if type_name == "ImagingStudy" else None


def test_the_index_agrees_with_the_rule_on_every_combination() -> None:
    decisions = _decisions()
    for size in (1, 2, 3):
        for chosen in itertools.combinations(decisions, size):
            denies = Denies.of(list(chosen))
            for type_name, item_id, content in _items():
                expected = sorted(
                    d.consent_id
                    for d in chosen
                    if consent.covers(d, type_name, item_id, content, _lookup)
                )
                got = [d.consent_id for d in denies.covering(type_name, item_id, content, _lookup)]
                assert got == expected, (type_name, item_id, [d.consent_id for d in chosen])
