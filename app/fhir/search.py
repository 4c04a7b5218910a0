"""Parse a FHIR search query string into a SearchQuery (no SQL, no HTTP).

FHIR R4 search: parameters AND across repetitions, OR across comma-separated values;
modifiers, prefixes, chains (`patient.identifier`), reverse chains (`_has`), and the result
parameters (_sort, _count, _include, _revinclude, _summary, _elements, _total).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.errors import Invalid, NotSupported
from app.fhir.registry import Registry, ResourceDefinition
from app.fhir.searchparams import SearchParam

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS = {
    "token": {"not", "text", "of-type", "missing"},
    "string": {"exact", "contains", "missing"},
    "reference": {"identifier", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "uri": {"below", "above", "missing"},
}
# Parameters that shape the result rather than select resources.
RESULT_PARAMS = {
    "_sort",
    "_count",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_totalMethod",
    "_format",
    "_pretty",
    "_offset",
    "_snapshot",
}
SUMMARY_MODES = {"count", "data", "false"}
TOTAL_MODES = {"none", "estimate", "accurate"}


@dataclass
class Value:
    """One OR-ed value: its comparison prefix (date/number) and raw text."""

    raw: str
    prefix: str = "eq"


@dataclass
class Criterion:
    """One parameter occurrence: `code[:modifier]=v1,v2` or a chain through a reference."""

    param: SearchParam
    modifier: str | None = None
    values: list[Value] = field(default_factory=list)
    target_type: str | None = None
    chain: Criterion | None = None
    has: HasCriterion | None = None
    # A chain whose parameter several target types define alike (`author.given`: Practitioner,
    # Patient...): any of them may match.
    chain_types: tuple[str, ...] = ()


@dataclass
class HasCriterion:
    """`_has:Type:ref:...`: resources of `source_type` whose `reference` points at the result."""

    source_type: str
    reference: SearchParam
    inner: Criterion


@dataclass
class Include:
    """An _include (`Source:param[:Target]`) or _revinclude, optionally `:iterate`."""

    source_type: str
    param: SearchParam | None
    target_type: str | None = None
    iterate: bool = False
    wildcard: bool = False


@dataclass
class SortKey:
    """One _sort key."""

    param: SearchParam
    descending: bool = False


@dataclass
class SearchQuery:
    """A parsed search of one type (or of the whole system when type is None)."""

    type: str
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    snapshot: int | None = None
    total: str = "accurate"
    summary: str | None = None
    elements: list[str] | None = None
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    used: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def split_values(text: str) -> list[str]:
    """Split on commas not escaped with a backslash; unescape `\\,` `\\|` `\\$` `\\\\`."""
    parts, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if c == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def escape(text: str) -> str:
    """Add FHIR search escapes (search.html#escaping) to a literal value."""
    return re.sub(r"([\\,|$])", r"\\\1", text)


def unescape(text: str) -> str:
    """Remove FHIR search escapes (`\\,` `\\|` `\\$` `\\\\`)."""
    return re.sub(r"\\([,|$\\])", r"\1", text)


def split_token(text: str) -> tuple[str | None, str]:
    """`system|code` -> (system, code); `|code` -> ("", code); `code` -> (None, code)."""
    parts = re.split(r"(?<!\\)\|", text, maxsplit=1)
    if len(parts) == 1:
        return None, unescape(parts[0])
    return unescape(parts[0]), unescape(parts[1])


def parse_int(key: str, value: str) -> int:
    """A non-negative integer query parameter (_count, _offset...) or a 400."""
    if not value.isdigit():
        raise Invalid(f"{key} must be a non-negative integer, not '{value}'")
    return int(value)


class SearchParser:
    """Turns query pairs into SearchQuery objects using the registry's parameter definitions."""

    def __init__(
        self, registry: Registry, *, default_count: int, max_count: int, max_include: int
    ) -> None:
        self.registry = registry
        self.default_count = default_count
        self.max_count = max_count
        self.max_include = max_include

    def parse(
        self, type_name: str, pairs: list[tuple[str, str]], *, lenient: bool = False
    ) -> SearchQuery:
        """Parse `pairs` (key, value) for a search of `type_name`."""
        definition = self.registry.get(type_name)
        query = SearchQuery(type=type_name, count=self.default_count)
        for key, value in pairs:
            try:
                if key in RESULT_PARAMS or key.split(":", 1)[0] in ("_include", "_revinclude"):
                    self._result_param(query, definition, key, value)
                    query.used.append((key, value))
                    continue
                query.criteria.append(self._criterion(definition, key, value))
                query.used.append((key, value))
            except NotSupported:
                if not lenient:
                    raise
                query.ignored.append(key)
        return query

    # -- selection ---------------------------------------------------------------------------

    def _criterion(self, definition: ResourceDefinition, key: str, value: str) -> Criterion:
        if key.startswith("_has:"):
            return self._has(definition, key, value)
        name, _, rest = key.partition(".")
        code, _, modifier = name.partition(":")
        param = definition.param(code)
        if param is None:
            raise NotSupported(
                f"Unknown search parameter '{code}' for resource type '{definition.name}'"
            )
        if rest:
            return self._chain(definition, param, modifier or None, rest, value)
        criterion = Criterion(param=param)
        if modifier:
            if param.type == "reference" and modifier in self.registry:
                if param.targets and modifier not in param.targets:
                    raise Invalid(f"'{modifier}' is not a valid target type of '{code}'")
                criterion.target_type = modifier
            elif modifier not in MODIFIERS[param.type]:
                raise NotSupported(
                    f"Modifier ':{modifier}' is not supported for {param.type} parameter '{code}'"
                )
            else:
                criterion.modifier = modifier
        if value == "":
            raise Invalid(f"Search parameter '{key}' has an empty value")
        if criterion.modifier == "missing":
            if value not in ("true", "false"):
                raise Invalid(f"':missing' takes true or false, not '{value}'")
            criterion.values = [Value(value)]
            return criterion
        criterion.values = [self._value(param, v) for v in split_values(value)]
        return criterion

    def _value(self, param: SearchParam, raw: str) -> Value:
        if param.type in ("date", "number") and raw[:2] in PREFIXES and len(raw) > 2:
            return Value(raw[2:], raw[:2])
        return Value(raw)

    def _chain(
        self,
        definition: ResourceDefinition,
        param: SearchParam,
        modifier: str | None,
        rest: str,
        value: str,
    ) -> Criterion:
        if param.type != "reference":
            raise Invalid(f"Cannot chain on '{param.code}': it is not a reference parameter")
        targets = [t for t in (param.targets or self.registry.names()) if t in self.registry]
        if modifier:
            if modifier not in targets:
                raise Invalid(f"'{modifier}' is not a valid target type of '{param.code}'")
            targets = [modifier]
        # The chained parameter must exist on the candidate target types with one search type
        # (`author.given` searches every author type that has `given`), or be typed.
        code = rest.split(".")[0].split(":")[0]
        found = {t: self.registry.get(t).param(code) for t in targets}
        candidates = [t for t, p in found.items() if p is not None]
        if not candidates:
            raise NotSupported(
                f"Chained parameter '{rest}' is not defined on any target of '{param.code}'"
            )
        kinds = {p.type for p in found.values() if p is not None}
        if len(kinds) > 1 or (len(candidates) > 1 and "." in rest):
            raise Invalid(
                f"Chain '{param.code}.{rest}' is ambiguous between {', '.join(candidates)}; "
                f"use '{param.code}:<Type>.{rest}'"
            )
        inner = self._criterion(self.registry.get(candidates[0]), rest, value)
        if len(candidates) == 1:
            return Criterion(param=param, target_type=candidates[0], chain=inner)
        return Criterion(param=param, chain=inner, chain_types=tuple(candidates))

    def _has(self, definition: ResourceDefinition, key: str, value: str) -> Criterion:
        parts = key.split(":", 3)
        if len(parts) != 4:
            raise Invalid(f"Malformed _has parameter '{key}' (expected _has:Type:reference:param)")
        _, source_type, ref_code, rest = parts
        source = self.registry.get(source_type) if source_type in self.registry else None
        if source is None:
            raise NotSupported(f"_has: unknown resource type '{source_type}'")
        ref = source.param(ref_code)
        if ref is None or ref.type != "reference":
            raise NotSupported(f"_has: '{ref_code}' is not a reference parameter of {source_type}")
        if ref.targets and definition.name not in ref.targets:
            raise Invalid(f"_has: {source_type}.{ref_code} cannot refer to {definition.name}")
        inner = self._criterion(source, rest, value)
        id_param = definition.params["_id"]
        return Criterion(param=id_param, has=HasCriterion(source_type, ref, inner))

    # -- result parameters --------------------------------------------------------------------

    def _result_param(
        self, query: SearchQuery, definition: ResourceDefinition, key: str, value: str
    ) -> None:
        base = key.split(":", 1)[0]
        if base == "_count":
            query.count = min(parse_int(key, value), self.max_count)
        elif base == "_offset":
            query.offset = parse_int(key, value)
        elif base == "_snapshot":
            query.snapshot = parse_int(key, value)
        elif base == "_sort":
            for item in split_values(value):
                descending = item.startswith("-")
                code = item.lstrip("-")
                param = definition.param(code)
                if param is None:
                    raise NotSupported(f"Cannot sort on unknown parameter '{code}'")
                query.sort.append(SortKey(param, descending))
        elif base == "_totalMethod":
            # fhirpy's count() sends this Aidbox parameter; every total here is accurate.
            query.total = "accurate"
        elif base == "_total":
            if value not in TOTAL_MODES:
                raise Invalid(f"_total must be one of {', '.join(sorted(TOTAL_MODES))}")
            query.total = value
        elif base == "_summary":
            if value not in SUMMARY_MODES:
                raise NotSupported(f"_summary={value} is not supported (use count, data or false)")
            query.summary = None if value == "false" else value
        elif base == "_elements":
            query.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif base in ("_include", "_revinclude"):
            iterate = key.endswith(":iterate") or key.endswith(":recurse")
            include = self._include(value, reverse=base == "_revinclude", iterate=iterate)
            (query.revincludes if base == "_revinclude" else query.includes).append(include)

    def _include(self, value: str, *, reverse: bool, iterate: bool) -> Include:
        if value == "*":
            return Include(source_type="*", param=None, iterate=iterate, wildcard=True)
        parts = value.split(":")
        if len(parts) not in (2, 3):
            raise Invalid(f"Malformed include '{value}' (expected Type:param[:Target])")
        source_type, code = parts[0], parts[1]
        if source_type not in self.registry:
            raise NotSupported(f"Include: unknown resource type '{source_type}'")
        source = self.registry.get(source_type)
        if code == "*":
            return Include(source_type, None, iterate=iterate, wildcard=True)
        param = source.param(code)
        if param is None or param.type != "reference":
            raise NotSupported(f"Include: '{code}' is not a reference parameter of {source_type}")
        target = parts[2] if len(parts) == 3 else None
        if target is not None and target not in self.registry:
            raise NotSupported(f"Include: unknown target type '{target}'")
        return Include(source_type, param, target, iterate)
