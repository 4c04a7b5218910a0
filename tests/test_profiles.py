"""The RIX Consent profiles in profiles/: every artefact parses as FHIR R4(B), the canonical
URLs and bindings resolve, and every example Consent satisfies the differential of its profile
(and of the profiles it derives from) as far as a small structural checker can tell: required
elements present, fixed and pattern values matched, forbidden elements absent, slices counted."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
NOT_FHIR = {"rix-access-token.schema.json"}
RIX = "https://fhir.rix.example"
SD = f"{RIX}/StructureDefinition"
CORE_CONSENT = "http://hl7.org/fhir/StructureDefinition/Consent"
KIND_SYSTEM = f"{RIX}/CodeSystem/consent-kind"
LOINC_CONSENT = {"system": "http://loinc.org", "code": "59284-0"}
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
KIND_OF_PROFILE = {
    f"{SD}/rix-consent-opposition": "opposition",
    f"{SD}/rix-consent-exam-opposition": "exam-opposition",
    f"{SD}/rix-consent-external-diffusion": "external-diffusion",
    f"{SD}/rix-consent-community-sharing": "community-sharing",
}

Json = dict[str, Any]


def _load() -> dict[str, Json]:
    return {
        path.name: json.loads(path.read_text("utf-8"))
        for path in sorted(PROFILES.glob("*.json"))
        if path.name not in NOT_FHIR
    }


ARTEFACTS = _load()
STRUCTURES = {r["url"]: r for r in ARTEFACTS.values() if r["resourceType"] == "StructureDefinition"}
EXAMPLES = {name: r for name, r in ARTEFACTS.items() if r["resourceType"] == "Consent"}


# ---------------------------------------------------------------- the small checker


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _nodes(resource: Json, segments: list[str]) -> list[Any]:
    """Every value reached from the resource along the path segments (lists flattened)."""
    nodes: list[Any] = [resource]
    for segment in segments:
        nodes = [
            item for node in nodes if isinstance(node, dict) for item in _as_list(node.get(segment))
        ]
    return nodes


def _contains(value: Any, pattern: Any) -> bool:
    """FHIR pattern matching: the value has at least what the pattern has."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and _contains(value[key], sub) for key, sub in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(
            any(_contains(item, sub) for item in value) for sub in pattern
        )
    return bool(value == pattern)


def _chain(url: str) -> list[Json]:
    """The RIX profile and the RIX profiles it derives from, base first."""
    chain: list[Json] = []
    while url in STRUCTURES:
        chain.insert(0, STRUCTURES[url])
        url = STRUCTURES[url]["baseDefinition"]
    assert url == CORE_CONSENT, f"the chain ends at {url}, not at the core Consent"
    return chain


def _merged(url: str) -> dict[str, Json]:
    """The differentials of the chain merged by element id, a derived profile's keys winning:
    a poor man's snapshot, enough to know the cardinality a slice inherits."""
    merged: dict[str, Json] = {}
    for structure in _chain(url):
        for element in structure["differential"]["element"]:
            merged.setdefault(element["id"], {}).update(element)
    return merged


def _value_set(url: str) -> set[tuple[str, str]]:
    """The (system, code) pairs of a RIX ValueSet, whole RIX code systems expanded."""
    (value_set,) = (r for r in ARTEFACTS.values() if r.get("url") == url)
    codes: set[tuple[str, str]] = set()
    for include in value_set["compose"]["include"]:
        concepts = include.get("concept")
        if concepts is None:
            (system,) = (r for r in ARTEFACTS.values() if r.get("url") == include["system"])
            concepts = system["concept"]
        codes |= {(include["system"], concept["code"]) for concept in concepts}
    return codes


def _in_value_set(item: Any, codes: set[tuple[str, str]]) -> bool:
    if isinstance(item, str):  # a code: its system is the value set's
        return item in {code for _, code in codes}
    codings = item.get("coding", [item]) if isinstance(item, dict) else []
    return any((c.get("system"), c.get("code")) in codes for c in codings)


def _constraints(element: Json) -> dict[str, Any]:
    return {k: v for k, v in element.items() if k.startswith(("fixed", "pattern"))}


def violations(resource: Json, profile_url: str) -> list[str]:
    """What the instance breaks in the differentials of the profile and of its RIX bases. Each
    differential element is checked with its own fixed/pattern values (so a base's pattern still
    counts) and the cardinality it has after inheritance."""
    merged = _merged(profile_url)
    found: list[str] = []
    for structure in _chain(profile_url):
        for own in structure["differential"]["element"]:
            element = {**merged[own["id"]], **own}
            constraints = _constraints(own) or _constraints(element)
            found += _check(resource, element, constraints, merged)
    return found


def _check(resource: Json, element: Json, constraints: Json, merged: dict[str, Json]) -> list[str]:
    found: list[str] = []
    eid, segments = element["id"], element["path"].split(".")[1:]
    if not segments or any(":" in part for part in eid.split(".")[:-1]):
        return found  # the root, or inside a slice: not checked
    *parent_path, name = segments
    low, high = element.get("min", 0), element.get("max", "*")
    for parent in _nodes(resource, parent_path):
        items = _as_list(parent.get(name)) if isinstance(parent, dict) else []
        if "sliceName" in element:
            ((_, pattern),) = constraints.items()
            items = [item for item in items if _contains(item, pattern)]
        if len(items) < low:
            found.append(f"{eid}: at least {low} expected, {len(items)} found")
        if high != "*" and len(items) > int(high):
            found.append(f"{eid}: at most {high} allowed, {len(items)} found")
        binding = element.get("binding", {})
        if binding.get("strength") == "required" and binding["valueSet"].startswith(RIX):
            codes = _value_set(binding["valueSet"])
            found += [
                f"{eid}: {item!r} is not in {binding['valueSet']}"
                for item in items
                if not _in_value_set(item, codes)
            ]
        if "sliceName" in element:
            continue
        for item in items:
            for key, expected in constraints.items():
                ok = item == expected if key.startswith("fixed") else _contains(item, expected)
                if not ok:
                    found.append(f"{eid}: {item!r} does not match {key} {expected!r}")
        if element.get("slicing", {}).get("rules") == "closed":
            slices = [
                next(iter(_constraints(e).values()))
                for e in merged.values()
                if e["path"] == element["path"] and "sliceName" in e
            ]
            for item in items:
                if not any(_contains(item, pattern) for pattern in slices):
                    found.append(f"{eid}: {item!r} matches no slice of a closed slicing")
    return found


def _profile_of(example: Json) -> str:
    profiles = example.get("meta", {}).get("profile", [])
    assert len(profiles) == 1, f"{example['id']}: exactly one meta.profile expected"
    return str(profiles[0])


# ---------------------------------------------------------------- artefacts


@pytest.mark.parametrize("name", sorted(ARTEFACTS))
def test_artefact_parses_as_its_resource_type(name: str) -> None:
    resource = ARTEFACTS[name]
    model = get_fhir_model_class(resource["resourceType"])
    parsed = model.model_validate(resource)
    assert parsed.id == resource["id"]
    assert name == f"{resource['resourceType']}-{resource['id']}.json"


def test_the_expected_artefacts_are_there() -> None:
    kinds = {r["resourceType"] for r in ARTEFACTS.values()}
    assert kinds == {"StructureDefinition", "CodeSystem", "ValueSet", "Consent"}
    assert set(STRUCTURES) == {f"{SD}/rix-consent", *KIND_OF_PROFILE}


@pytest.mark.parametrize("url", sorted(STRUCTURES))
def test_structure_definition_is_a_consent_constraint(url: str) -> None:
    structure = STRUCTURES[url]
    assert url == f"{SD}/{structure['id']}"
    assert structure["derivation"] == "constraint"
    assert structure["type"] == "Consent"
    assert structure["kind"] == "resource"
    assert structure["fhirVersion"] == "4.0.1"
    assert "snapshot" not in structure
    assert structure["differential"]["element"]
    expected_base = CORE_CONSENT if structure["id"] == "rix-consent" else f"{SD}/rix-consent"
    assert structure["baseDefinition"] == expected_base
    for element in structure["differential"]["element"]:
        assert element["path"] == ".".join(p.split(":")[0] for p in element["id"].split("."))
        assert element["path"].split(".")[0] == "Consent"


def test_canonical_urls_and_bindings_resolve() -> None:
    by_url = {r["url"]: r for r in ARTEFACTS.values() if "url" in r}
    for resource in ARTEFACTS.values():
        if "url" in resource:
            assert resource["url"] == f"{RIX}/{resource['resourceType']}/{resource['id']}"
    bound = {
        element["binding"]["valueSet"]
        for structure in STRUCTURES.values()
        for element in structure["differential"]["element"]
        if "binding" in element
    }
    assert all(url in by_url for url in bound if url.startswith(RIX)), bound
    for value_set in (r for r in ARTEFACTS.values() if r["resourceType"] == "ValueSet"):
        for include in value_set["compose"]["include"]:
            if include["system"].startswith(RIX):
                system = by_url[include["system"]]
                defined = {concept["code"] for concept in system["concept"]}
                assert {c["code"] for c in include.get("concept", [])} <= defined


def test_consent_kind_code_system_has_the_four_kinds() -> None:
    system = ARTEFACTS["CodeSystem-consent-kind.json"]
    assert system["url"] == KIND_SYSTEM
    assert system["content"] == "complete"
    assert [c["code"] for c in system["concept"]] == [
        "opposition",
        "exam-opposition",
        "external-diffusion",
        "community-sharing",
    ]
    assert set(KIND_OF_PROFILE.values()) == {c["code"] for c in system["concept"]}


@pytest.mark.parametrize("url", sorted(KIND_OF_PROFILE))
def test_kind_profile_pins_its_kind(url: str) -> None:
    kind = _merged(url)["Consent.category:kind"]
    assert kind["min"] == 1 and kind["max"] == "1"
    assert kind["patternCodeableConcept"] == {
        "coding": [{"system": KIND_SYSTEM, "code": KIND_OF_PROFILE[url]}]
    }


def test_invariants_are_declared() -> None:
    """The rules the small checker cannot evaluate are FHIRPath invariants of the base profile
    (checked on the examples by test_example_category_* and test_example_follows_the_model)."""
    elements = _merged(f"{SD}/rix-consent")
    keys = {
        element_id: {c["key"] for c in element.get("constraint", [])}
        for element_id, element in elements.items()
    }
    assert keys["Consent"] == {"rix-kind-1"}
    assert keys["Consent.provision.data.reference"] == {"rix-data-1", "rix-data-2", "rix-data-3"}


# ---------------------------------------------------------------- examples


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_conforms_to_its_profile(name: str) -> None:
    example = EXAMPLES[name]
    profile = _profile_of(example)
    assert profile in KIND_OF_PROFILE, f"{name} declares {profile}, not a RIX kind profile"
    assert violations(example, profile) == []


def _category_codes(example: Json) -> tuple[bool, list[str]]:
    """Whether the category has LOINC 59284-0, and its consent-kind codes (rix-kind-1: one)."""
    codings = [coding for category in example["category"] for coding in category["coding"]]
    loinc = any(_contains(coding, LOINC_CONSENT) for coding in codings)
    return loinc, [coding["code"] for coding in codings if coding.get("system") == KIND_SYSTEM]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_category_has_loinc_and_one_kind(name: str) -> None:
    example = EXAMPLES[name]
    assert _category_codes(example) == (True, [KIND_OF_PROFILE[_profile_of(example)]])


def test_category_check_catches_two_kinds_in_one_category() -> None:
    example = copy.deepcopy(EXAMPLES["Consent-community-sharing.json"])
    example["category"][1]["coding"].append({"system": KIND_SYSTEM, "code": "opposition"})
    assert _category_codes(example) == (True, ["community-sharing", "opposition"])


def _is_emergency_permit(provision: Json) -> bool:
    purposes = {(p["system"], p["code"]) for p in provision.get("purpose", [])}
    return (
        provision.get("type") == "permit"
        and purposes == {(ACT_REASON, "ETREAT"), (ACT_REASON, "BTG")}
        and set(provision) <= {"type", "purpose"}
    )


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_follows_the_model(name: str) -> None:
    """What the invariants and the README say, for the examples: nested provisions are only the
    emergency permit of a deny; data items name an exam in one of the three ways."""
    example = EXAMPLES[name]
    provision = example["provision"]
    for nested in provision.get("provision", []):
        assert provision["type"] == "deny"
        assert _is_emergency_permit(nested)
    for data in provision.get("data", []):
        assert data["meaning"] == "dependents"
        reference = data["reference"]
        assert ("reference" in reference) != ("identifier" in reference)  # rix-data-1
        if "reference" in reference:  # rix-data-3
            assert reference["reference"].split("/")[0] in {"ImagingStudy", "DocumentReference"}
        else:  # rix-data-2
            identifier = reference["identifier"]
            by_uid = identifier.get("system") == "urn:dicom:uid" and identifier.get(
                "value", ""
            ).startswith("urn:oid:")
            by_accession = any(
                _contains(c, {"system": V2_0203, "code": "ACSN"})
                for c in identifier.get("type", {}).get("coding", [])
            )
            assert by_uid or by_accession
            assert identifier["value"]


def _feature(example: Json) -> set[str]:
    provision = example["provision"]
    features = {KIND_OF_PROFILE[_profile_of(example)], example["status"]}
    features.add("emergency" if provision.get("provision") else "no-emergency")
    for data in provision.get("data", []):
        reference = data["reference"]
        if "reference" in reference:
            features.add("literal")
        elif reference["identifier"].get("system") == "urn:dicom:uid":
            features.add("study-uid")
        else:
            features.add("accession")
    if "period" in provision:
        features.add("period")
    return features


@pytest.mark.parametrize(
    "wanted",
    [
        {"opposition", "active", "emergency"},
        {"opposition", "active", "no-emergency"},
        {"opposition", "inactive"},
        {"exam-opposition", "literal"},
        {"exam-opposition", "study-uid"},
        {"exam-opposition", "accession"},
        {"external-diffusion", "study-uid", "period"},
        {"community-sharing", "active"},
    ],
)
def test_examples_cover_the_model(wanted: set[str]) -> None:
    assert any(wanted <= _feature(example) for example in EXAMPLES.values()), wanted


# ---------------------------------------------------------------- the checker can fail


def _drop_date(c: Json) -> None:
    del c["dateTime"]


def _permit(c: Json) -> None:
    c["provision"]["type"] = "permit"


def _add_data(provision: Json) -> None:
    provision["data"] = [{"meaning": "dependents", "reference": {"reference": "ImagingStudy/x"}}]


def _top_data(c: Json) -> None:
    _add_data(c["provision"])


def _no_loinc(c: Json) -> None:
    c["category"] = c["category"][1:]


def _two_kinds(c: Json) -> None:
    c["category"].append({"coding": [{"system": KIND_SYSTEM, "code": "exam-opposition"}]})


def _third_purpose(c: Json) -> None:
    c["provision"]["provision"][0]["purpose"].append({"system": ACT_REASON, "code": "TREAT"})


def _nested_data(c: Json) -> None:
    _add_data(c["provision"]["provision"][0])


def _wrong_scope(c: Json) -> None:
    c["scope"]["coding"][0]["code"] = "treatment"


def _no_identifier_system(c: Json) -> None:
    del c["identifier"][0]["system"]


def _no_policy_rule(c: Json) -> None:
    del c["policyRule"]


def _other_policy_rule(c: Json) -> None:
    c["policyRule"]["coding"][0]["code"] = "OPTOUTE"


def _draft(c: Json) -> None:
    c["status"] = "draft"


def _unknown_kind(c: Json) -> None:
    c["category"][1]["coding"][0]["code"] = "bogus"


@pytest.mark.parametrize(
    "mutate",
    [
        _drop_date,
        _permit,
        _top_data,
        _no_loinc,
        _two_kinds,
        _third_purpose,
        _nested_data,
        _wrong_scope,
        _no_identifier_system,
        _no_policy_rule,
        _other_policy_rule,
        _draft,
        _unknown_kind,
    ],
)
def test_checker_catches_a_broken_opposition(mutate: Callable[[Json], None]) -> None:
    example = copy.deepcopy(EXAMPLES["Consent-opposition-emergency-allowed.json"])
    url = _profile_of(example)
    assert violations(example, url) == []
    mutate(example)
    assert violations(example, url), mutate.__name__


def test_checker_catches_an_exam_opposition_without_data() -> None:
    example = copy.deepcopy(EXAMPLES["Consent-exam-opposition-study-uid.json"])
    del example["provision"]["data"]
    assert violations(example, _profile_of(example))
