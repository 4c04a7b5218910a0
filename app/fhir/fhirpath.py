"""The small FHIRPath subset that search-parameter expressions use, evaluated on resource JSON.

Supported: dotted paths with choice types (`Observation.effective` finds `effectiveDateTime`),
`.where(resolve() is Type)`, `.where(path.to.field='value')`, `.extension('url')`, `(path as type)`,
`path.exists()` with `and path != false`, and unions (`a | b`). An expression outside the
subset raises `UnsupportedExpression` when compiled, so a parameter is never silently indexed
wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Node = Any
Step = Callable[[list[Node]], list[Node]]


class UnsupportedExpression(ValueError):
    """The expression uses FHIRPath beyond the subset above."""


@dataclass(frozen=True)
class Path:
    """A compiled expression: the resource type it starts from and its steps per alternative."""

    alternatives: tuple[tuple[str, tuple[Step, ...]], ...]

    def evaluate(self, resource: dict[str, Any]) -> list[Node]:
        """Every node the expression selects in `resource` (lists are flattened)."""
        out: list[Node] = []
        for root, steps in self.alternatives:
            if resource.get("resourceType") != root:
                continue
            nodes: list[Node] = [resource]
            for step in steps:
                nodes = step(nodes)
            out.extend(nodes)
        return out


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, quote, start, i = [], 0, False, 0, 0
    while i < len(text):
        c = text[i]
        if c == "'":
            quote = not quote
        elif not quote and c == "(":
            depth += 1
        elif not quote and c == ")":
            depth -= 1
        elif not quote and depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _children(name: str) -> Step:
    def step(nodes: list[Node]) -> list[Node]:
        out: list[Node] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            if name in node:
                _extend(out, node[name])
                continue
            # choice type: `value` matches `valueQuantity`, `valueString`...
            for key, value in node.items():
                if key.startswith(name) and key[len(name) : len(name) + 1].isupper():
                    _extend(out, value)
        return out

    return step


def _choice(name: str, type_name: str) -> Step:
    key = name + type_name[0].upper() + type_name[1:]

    def step(nodes: list[Node]) -> list[Node]:
        out: list[Node] = []
        for node in nodes:
            if isinstance(node, dict) and key in node:
                _extend(out, node[key])
        return out

    return step


def _extend(out: list[Node], value: Any) -> None:
    if isinstance(value, list):
        out.extend(v for v in value if v is not None)
    elif value is not None:
        out.append(value)


def reference_type(reference: str) -> str | None:
    """The resource type a literal reference names (`Patient/1`, `http://x/fhir/Patient/1`)."""
    parts = reference.split("?", 1)[0].split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2]
    return None


_WHERE_RESOLVE = re.compile(r"^where\(resolve\(\) is (\w+)\)$")
_WHERE_EQ = re.compile(r"^where\(([\w.]+)\s*=\s*'([^']*)'\)$")
_EXTENSION = re.compile(r"^extension\('([^']+)'\)$")


def _extension(url: str) -> Step:
    def step(nodes: list[Node]) -> list[Node]:
        return [
            ext
            for n in nodes
            if isinstance(n, dict)
            for ext in n.get("extension", []) or []
            if isinstance(ext, dict) and ext.get("url") == url
        ]

    return step


def _where(segment: str) -> Step:
    if m := _WHERE_RESOLVE.match(segment):
        wanted = m.group(1)

        def resolve_is(nodes: list[Node]) -> list[Node]:
            return [
                n
                for n in nodes
                if isinstance(n, dict)
                and isinstance(n.get("reference"), str)
                and reference_type(n["reference"]) == wanted
            ]

        return resolve_is
    if m := _WHERE_EQ.match(segment):
        steps = [_children(name) for name in m.group(1).split(".")]
        value = m.group(2)

        def equals(nodes: list[Node]) -> list[Node]:
            out = []
            for node in nodes:
                found = [node]
                for step in steps:  # `where(type.coding.code='ACSN')`: any value along the path
                    found = step(found)
                if value in found:
                    out.append(node)
            return out

        return equals
    raise UnsupportedExpression(segment)


def _exists_not_false(steps: tuple[Step, ...]) -> Step:
    def step(nodes: list[Node]) -> list[Node]:
        values = nodes
        for s in steps:
            values = s(values)
        return [bool(values) and values != [False]]

    return step


def _compile_alternative(text: str) -> tuple[str, tuple[Step, ...]]:
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    if m := re.match(r"^(.*)\.exists\(\) and (.*) != false$", text):
        if m.group(1) != m.group(2):
            raise UnsupportedExpression(text)
        root, inner = _compile_alternative(m.group(1))
        return root, (_exists_not_false(inner),)
    cast: str | None = None
    if m := re.match(r"^(.*) as (\w+)$", text):
        text, cast = m.group(1), m.group(2)
    segments = _split_top(text, ".")
    root, names = segments[0], segments[1:]
    if not re.fullmatch(r"[A-Z]\w*", root):
        raise UnsupportedExpression(text)
    steps: list[Step] = []
    for i, segment in enumerate(names):
        if segment.startswith("where("):
            steps.append(_where(segment))
        elif m := _EXTENSION.match(segment):
            steps.append(_extension(m.group(1)))
        elif re.fullmatch(r"\w+", segment):
            last = i == len(names) - 1
            steps.append(_choice(segment, cast) if cast and last else _children(segment))
        else:
            raise UnsupportedExpression(segment)
    return root, tuple(steps)


def compile_path(expression: str) -> Path:
    """Compile a search parameter's expression (one resource type's part of it)."""
    return Path(tuple(_compile_alternative(alt) for alt in _split_top(expression, "|")))


def iter_strings(nodes: Iterable[Node]) -> Iterable[str]:
    """The string leaves of nodes (for string-typed complex values like HumanName)."""
    for node in nodes:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("extension", "period", "use", "id") or key.startswith("_"):
                    continue
                yield from iter_strings(value if isinstance(value, list) else [value])
