"""Generate RIX's compact FHIR R4 data files from the official definitions.

Reads the unpacked ``hl7.fhir.r4.examples@4.0.1`` npm package (its
``SearchParameter-*.json``, ``StructureDefinition-*.json``, ``ValueSet-*.json``
and ``CodeSystem-*.json`` files) and writes, deterministically (sorted keys,
``indent=1``):

* ``app/fhir/data/search_parameters.json`` -- per supported resource type, the
  search parameters ``{code, type, expression[, target]}`` sorted by code, with
  each FHIRPath expression reduced to the alternatives rooted at that type.
  Resource/DomainResource-level parameters (``_id``, ``_lastUpdated``...),
  ``composite``/``special`` ones and non-core (extension/example) ones are left
  out.
* ``app/fhir/data/required_bindings.json`` -- per supported resource type (plus
  ``Bundle``), the ``code``-typed elements with a *required* binding whose value
  set can be fully expanded from the package: ``{path, codes, valueSet}``.
* ``app/fhir/data/elements.json`` -- for every R4 resource, complex data type and
  backbone element, its child elements in definition order (what the XML format
  needs, FHIR R4 xml.html): ``[name, type, "*" when it repeats]``, where type is a
  primitive type name, ``"@"`` for an XML attribute (``Element.id``,
  ``Extension.url``), ``"xhtml"``, ``"Resource"``, a data type name, the path of a
  backbone element (``"Patient.contact"``) or, for a choice ``value[x]``, the list
  of its types. ``resources`` lists the concrete resource types.

A summary of the FHIRPath constructs used by the kept expressions, and of the
bindings that were skipped, is printed to stdout.

Run from the repository root::

    python scripts/gen_fhir_data.py /path/to/package [output_dir]

``output_dir`` defaults to ``app/fhir/data`` next to this script's parent.
To obtain the package::

    mkdir -p /tmp/r4 && cd /tmp/r4 && npm pack hl7.fhir.r4.examples@4.0.1 \
        && tar xzf hl7.fhir.r4.examples-4.0.1.tgz   # -> /tmp/r4/package
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# The types the server registers (app/fhir/registry.py is the one list).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.fhir.registry import SERVED_TYPES as RESOURCE_TYPES

# Bundle is validated on input, so its bindings are needed too.
BINDING_TYPES: tuple[str, ...] = (*RESOURCE_TYPES, "Bundle")

SKIPPED_SEARCH_TYPES = frozenset({"composite", "special"})
# Parameters on these bases (_id, _lastUpdated, _tag, _text...) are handled by
# the server itself.
GENERIC_BASES = frozenset({"Resource", "DomainResource"})

Json = dict[str, Any]


def load_json(path: Path) -> Json:
    """Load one JSON file."""
    with path.open(encoding="utf-8") as fh:
        data: Json = json.load(fh)
    return data


def write_json(path: Path, data: object) -> None:
    """Write ``data`` compactly and deterministically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


# --------------------------------------------------------------------------
# FHIRPath expression splitting
# --------------------------------------------------------------------------


def split_top_level_union(expression: str) -> list[str]:
    """Split ``expression`` on ``|`` outside parentheses, brackets and strings."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    i = 0
    while i < len(expression):
        ch = expression[i]
        if quote is not None:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
        i += 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def strip_outer_parens(text: str) -> str:
    """Remove parentheses that wrap the whole of ``text``."""
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0 and i != len(text) - 1:
                    return text  # the opening paren closes early: not a wrapper
        text = text[1:-1].strip()
    return text


_ROOT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def expression_root(alternative: str) -> str | None:
    """Return the leading identifier (the resource type) of an alternative."""
    match = _ROOT_RE.match(strip_outer_parens(alternative))
    return match.group(0) if match else None


def expression_for_type(expression: str, resource_type: str) -> str:
    """Keep only the union alternatives rooted at ``resource_type``."""
    kept = [
        alt for alt in split_top_level_union(expression) if expression_root(alt) == resource_type
    ]
    return " | ".join(kept)


# --------------------------------------------------------------------------
# FHIRPath construct summary
# --------------------------------------------------------------------------

_CONSTRUCT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (".where(resolve() is X)", re.compile(r"\.where\(resolve\(\) is \w+\)")),
    (".where(<criteria>) (not resolve)", re.compile(r"\.where\((?!resolve\(\))")),
    ("(<path> as X)  [as operator]", re.compile(r"\sas\s+\w+")),
    (".as(X)", re.compile(r"\.as\(")),
    (".ofType(X)", re.compile(r"\.ofType\(")),
    (".extension('url')", re.compile(r"\.extension\(")),
    (".exists()", re.compile(r"\.exists\(")),
    (".resolve()", re.compile(r"\.resolve\(")),
    (" is X  [is operator, outside where(resolve())]", re.compile(r"(?<!\(\)) is \w+")),
    (" and ", re.compile(r"\sand\s")),
    (" or ", re.compile(r"\sor\s")),
    (" != ", re.compile(r"!=")),
    ("[n] indexer", re.compile(r"\[\d+\]")),
    ("parenthesised alternative", re.compile(r"^\(")),
    ("| union (multiple alternatives)", re.compile(r"\|")),
)
_FUNCTION_RE = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)\(")


def summarise_constructs(expressions: list[str]) -> tuple[Counter[str], Counter[str]]:
    """Count the FHIRPath constructs and function names used in ``expressions``."""
    constructs: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for expr in expressions:
        for alt in split_top_level_union(expr):
            for label, pattern in _CONSTRUCT_PATTERNS:
                if label.startswith("|"):
                    continue
                constructs[label] += len(pattern.findall(alt))
            functions.update(_FUNCTION_RE.findall(alt))
        if len(split_top_level_union(expr)) > 1:
            constructs["| union (multiple alternatives)"] += 1
    return +constructs, functions


def _call_text(expr: str, start: int) -> str:
    """Return ``.name(args)`` starting at ``start`` (balanced parentheses)."""
    open_at = expr.index("(", start)
    depth = 0
    for i in range(open_at, len(expr)):
        if expr[i] == "(":
            depth += 1
        elif expr[i] == ")":
            depth -= 1
            if depth == 0:
                return expr[start : i + 1]
    return expr[start:]


def distinct_forms(expressions: list[str]) -> list[str]:
    """Distinct ``.fn(args)`` calls with arguments and ``as``/``is`` operators."""
    forms: set[str] = set()
    for expr in expressions:
        for match in re.finditer(r"\.[A-Za-z]+\((?!\))", expr):
            forms.add(_call_text(expr, match.start()))
        forms.update(m.strip() for m in re.findall(r"\s(?:as|is)\s+\w+", expr))
        forms.update(m.strip() for m in re.findall(r"\s(?:and|or|!=|=)\s", expr))
    return sorted(forms)


# --------------------------------------------------------------------------
# Search parameters
# --------------------------------------------------------------------------


def is_core_search_parameter(sp: Json) -> bool:
    """True for parameters defined by the core spec (not extensions/examples)."""
    sp_id = str(sp.get("id", ""))
    return not (sp_id.startswith("example") or "-extensions-" in sp_id)


def build_search_parameters(
    package: Path,
) -> tuple[dict[str, list[Json]], list[str], list[str]]:
    """Return (params per type, kept expressions, notes on dropped params)."""
    result: dict[str, list[Json]] = {t: [] for t in RESOURCE_TYPES}
    notes: list[str] = []
    for path in sorted(package.glob("SearchParameter-*.json")):
        sp = load_json(path)
        bases = set(sp.get("base", []))
        if bases & GENERIC_BASES:
            continue
        types = [t for t in RESOURCE_TYPES if t in bases]
        if not types:
            continue
        code = str(sp["code"])
        if not is_core_search_parameter(sp):
            notes.append(f"{'/'.join(types)} {code}: non-core ({sp['id']})")
            continue
        if sp.get("type") in SKIPPED_SEARCH_TYPES:
            notes.append(f"{'/'.join(types)} {code}: type {sp['type']}")
            continue
        for resource_type in types:
            expression = expression_for_type(str(sp.get("expression", "")), resource_type)
            if not expression:
                notes.append(f"{resource_type} {code}: no expression for type")
                continue
            entry: Json = {"code": code, "type": sp["type"], "expression": expression}
            if sp["type"] == "reference":
                entry["target"] = sorted(set(sp.get("target", [])))
            result[resource_type].append(entry)
    expressions: list[str] = []
    for resource_type, params in result.items():
        params.sort(key=lambda p: str(p["code"]))
        codes = [p["code"] for p in params]
        duplicates = sorted({c for c in codes if codes.count(c) > 1})
        if duplicates:
            raise SystemExit(f"duplicate search parameter codes on {resource_type}: {duplicates}")
        expressions.extend(str(p["expression"]) for p in params)
    return result, expressions, notes


# --------------------------------------------------------------------------
# Value set expansion
# --------------------------------------------------------------------------


class ExpansionError(Exception):
    """Raised when a value set cannot be fully expanded from the package."""


class Terminology:
    """Index of the package's CodeSystem and ValueSet resources by URL."""

    def __init__(self, package: Path) -> None:
        self.code_systems: dict[str, Json] = {}
        self.value_sets: dict[str, Json] = {}
        for path in sorted(package.glob("CodeSystem-*.json")):
            cs = load_json(path)
            if cs.get("resourceType") == "CodeSystem" and "url" in cs:
                self.code_systems.setdefault(str(cs["url"]), cs)
        for path in sorted(package.glob("ValueSet-*.json")):
            vs = load_json(path)
            if vs.get("resourceType") == "ValueSet" and "url" in vs:
                self.value_sets.setdefault(str(vs["url"]), vs)

    def expand(self, canonical: str, _seen: frozenset[str] = frozenset()) -> list[str]:
        """Return the codes of the value set ``canonical`` (``url|version`` allowed)."""
        url = canonical.split("|", 1)[0]
        if url in _seen:
            raise ExpansionError(f"circular value set reference {url}")
        vs = self.value_sets.get(url)
        if vs is None:
            raise ExpansionError(f"value set {url} not in package")
        expansion = vs.get("expansion")
        if isinstance(expansion, dict) and expansion.get("contains"):
            codes: list[str] = []
            _collect_contains(expansion["contains"], codes)
            return _dedupe(codes)
        compose = vs.get("compose")
        if not isinstance(compose, dict) or not compose.get("include"):
            raise ExpansionError(f"value set {url} has no compose/expansion")
        seen = _seen | {url}
        codes = []
        for include in compose["include"]:
            codes.extend(self._expand_include(include, seen))
        excluded: set[str] = set()
        for exclude in compose.get("exclude", []):
            excluded.update(self._expand_include(exclude, seen))
        return _dedupe(c for c in codes if c not in excluded)

    def _expand_include(self, include: Json, seen: frozenset[str]) -> list[str]:
        if include.get("filter"):
            raise ExpansionError("compose uses filters")
        system = include.get("system")
        codes: list[str] | None = None
        if system is not None:
            if include.get("concept"):
                codes = [str(c["code"]) for c in include["concept"]]
            else:
                codes = self._all_codes(str(system))
        value_set_codes: list[list[str]] = [
            self.expand(str(ref), seen) for ref in include.get("valueSet", [])
        ]
        if codes is None and not value_set_codes:
            raise ExpansionError("include with neither system nor valueSet")
        # Include semantics: system part intersected with every referenced set.
        result = codes if codes is not None else value_set_codes.pop(0)
        for other in value_set_codes:
            allowed = set(other)
            result = [c for c in result if c in allowed]
        return result

    def _all_codes(self, system: str) -> list[str]:
        cs = self.code_systems.get(system)
        if cs is None:
            raise ExpansionError(f"code system {system} not in package")
        if cs.get("content") != "complete":
            raise ExpansionError(f"code system {system} content is {cs.get('content')}")
        codes: list[str] = []
        _collect_concepts(cs.get("concept", []), codes)
        if not codes:
            raise ExpansionError(f"code system {system} lists no concepts")
        return codes


def _collect_concepts(concepts: list[Json], out: list[str]) -> None:
    for concept in concepts:
        out.append(str(concept["code"]))
        _collect_concepts(concept.get("concept", []), out)


def _collect_contains(contains: list[Json], out: list[str]) -> None:
    for item in contains:
        if "code" in item and not item.get("abstract", False):
            out.append(str(item["code"]))
        _collect_contains(item.get("contains", []), out)


def _dedupe(codes: Any) -> list[str]:
    return list(dict.fromkeys(codes))


# --------------------------------------------------------------------------
# Required bindings
# --------------------------------------------------------------------------


def build_required_bindings(
    package: Path, terminology: Terminology
) -> tuple[dict[str, list[Json]], list[str], list[str]]:
    """Return (bindings per type, skipped-binding notes, contentReference notes)."""
    result: dict[str, list[Json]] = {}
    skipped: list[str] = []
    content_refs: list[str] = []
    for resource_type in BINDING_TYPES:
        sd = load_json(package / f"StructureDefinition-{resource_type}.json")
        entries: list[Json] = []
        for element in sd["snapshot"]["element"]:
            path = str(element["path"])
            if "contentReference" in element:
                content_refs.append(f"{path} -> {element['contentReference']}")
                continue
            binding = element.get("binding")
            if not isinstance(binding, dict) or binding.get("strength") != "required":
                continue
            value_set = str(binding.get("valueSet", ""))
            type_codes = [str(t.get("code")) for t in element.get("type", [])]
            if path.endswith("[x]"):
                skipped.append(f"{path} ({'/'.join(type_codes)}): choice type; {value_set}")
                continue
            if type_codes != ["code"]:
                skipped.append(f"{path} ({'/'.join(type_codes)}): not a code; {value_set}")
                continue
            try:
                codes = terminology.expand(value_set)
            except ExpansionError as exc:
                skipped.append(f"{path}: {value_set}: {exc}")
                continue
            entries.append({"path": path, "codes": codes, "valueSet": value_set})
        entries.sort(key=lambda e: str(e["path"]))
        result[resource_type] = entries
    return result, skipped, content_refs


# --------------------------------------------------------------------------
# Element layouts (the XML format)
# --------------------------------------------------------------------------

FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


def _element_type(element: Json, path: str) -> str | list[str]:
    """The type of one snapshot element as elements.json writes it."""
    if "xmlAttr" in element.get("representation", []):
        return "@"
    if "contentReference" in element:
        return str(element["contentReference"]).lstrip("#")
    codes: list[str] = []
    for type_ in element.get("type", []):
        code = str(type_["code"])
        if code.startswith("http://hl7.org/fhirpath/System."):
            urls = [
                str(e["valueUrl"])
                for e in type_.get("extension", [])
                if e.get("url") == FHIR_TYPE_EXTENSION
            ]
            code = urls[0] if urls else "string"
        codes.append(path if code in ("BackboneElement", "Element") else code)
    if path.endswith("[x]"):
        return codes
    if len(codes) != 1:
        raise ValueError(f"{path}: expected one type, got {codes}")
    return codes[0]


def build_element_layouts(package: Path) -> Json:
    """Every resource, complex type and backbone element with its children in order."""
    layouts: dict[str, list[list[Any]]] = {}
    resources: list[str] = []
    for path in sorted(package.glob("StructureDefinition-*.json")):
        sd = load_json(path)
        if sd.get("derivation") != "specialization" or sd.get("kind") not in (
            "resource",
            "complex-type",
        ):
            continue
        if sd["kind"] == "resource" and not sd.get("abstract"):
            resources.append(str(sd["type"]))
        for element in sd["snapshot"]["element"]:
            element_path = str(element["path"])
            if "." not in element_path:
                continue
            parent, name = element_path.rsplit(".", 1)
            entry: list[Any] = [name, _element_type(element, element_path)]
            if element.get("max") != "1":
                entry.append("*")
            layouts.setdefault(parent, []).append(entry)
    for parent, entries in layouts.items():
        for entry in entries:
            for type_ in entry[1] if isinstance(entry[1], list) else [entry[1]]:
                if type_[:1].isupper() and type_ != "Resource" and type_ not in layouts:
                    raise ValueError(f"{parent}.{entry[0]}: no layout for type {type_}")
    return {"resources": sorted(resources), "elements": dict(sorted(layouts.items()))}


def write_layouts(path: Path, data: Json) -> None:
    """elements.json: one line per layout, so the file stays small and diffs stay readable."""
    lines = [
        f"  {json.dumps(name)}: {json.dumps(entries, separators=(',', ':'))}"
        for name, entries in data["elements"].items()
    ]
    text = (
        f'{{\n "resources": {json.dumps(data["resources"])},\n "elements": {{\n'
        + ",\n".join(lines)
        + "\n }\n}\n"
    )
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Generate the data files; return a process exit status."""
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    package = Path(argv[1])
    if not (package / "StructureDefinition-Patient.json").is_file():
        print(f"{package} does not look like the FHIR R4 package", file=sys.stderr)
        return 2
    default_out = Path(__file__).resolve().parent.parent / "app" / "fhir" / "data"
    out_dir = Path(argv[2]) if len(argv) == 3 else default_out

    params, expressions, sp_notes = build_search_parameters(package)
    write_json(out_dir / "search_parameters.json", params)
    bindings, skipped, content_refs = build_required_bindings(package, Terminology(package))
    write_json(out_dir / "required_bindings.json", bindings)
    layouts = build_element_layouts(package)
    write_layouts(out_dir / "elements.json", layouts)

    print(f"wrote {out_dir / 'search_parameters.json'}")
    for resource_type, entries in params.items():
        print(f"  {resource_type}: {len(entries)}")
    print("search parameters left out:")
    for note in sp_notes:
        print(f"  {note}")
    constructs, functions = summarise_constructs(expressions)
    print(f"FHIRPath constructs in {len(expressions)} kept expressions:")
    for label, count in sorted(constructs.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {count:4d}  {label}")
    print("FHIRPath function calls:")
    for name, count in sorted(functions.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {count:4d}  {name}()")
    print("distinct forms of calls with arguments and of 'as'/'is' operators:")
    for form in distinct_forms(expressions):
        print(f"  {form}")

    print(f"wrote {out_dir / 'required_bindings.json'}")
    for resource_type, entries in bindings.items():
        print(f"  {resource_type}: {len(entries)}")
    print("required bindings skipped:")
    for note in skipped:
        print(f"  {note}")
    print(f"wrote {out_dir / 'elements.json'}: {len(layouts['elements'])} layouts")
    print("contentReference elements (reuse the referenced element's paths):")
    for note in content_refs:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
