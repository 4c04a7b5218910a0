"""FHIR R4 content validation: the only module that imports fhir.resources (R4B models)."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from app.errors import Invalid, Issue


def _expression(type_name: str, loc: tuple[int | str, ...]) -> str:
    out = type_name
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            out += f".{part}"
    return out


@cache
def _required_bindings() -> dict[str, list[dict[str, Any]]]:
    text = resources.files("app.fhir").joinpath("data/required_bindings.json").read_text("utf-8")
    data: dict[str, list[dict[str, Any]]] = json.loads(text)
    return data


def _binding_issues(data: dict[str, Any], type_name: str) -> list[Issue]:
    """Codes outside a required value set (the models accept any string for `code`)."""
    issues: list[Issue] = []
    for binding in _required_bindings().get(type_name, []):
        names = binding["path"].split(".")[1:]
        allowed = set(binding["codes"])
        for location, value in _walk(data, names, type_name):
            if isinstance(value, str) and value not in allowed:
                issues.append(
                    Issue(
                        "code-invalid",
                        f"'{value}' is not a valid code for {binding['path']} "
                        f"(value set {binding['valueSet']})",
                        expression=[location],
                    )
                )
    return issues


def _walk(node: Any, names: list[str], location: str) -> list[tuple[str, Any]]:
    if not names:
        return [(location, node)]
    if not isinstance(node, dict) or names[0] not in node:
        return []
    value = node[names[0]]
    here = f"{location}.{names[0]}"
    if isinstance(value, list):
        out: list[tuple[str, Any]] = []
        for i, item in enumerate(value):
            out.extend(_walk(item, names[1:], f"{here}[{i}]"))
        return out
    return _walk(value, names[1:], here)


# The models coerce "true", "yes", 1 or "5" into booleans and numbers; FHIR JSON does not.
_JSON_PRIMITIVES: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    bool: ("boolean (true or false)", lambda v: isinstance(v, bool)),
    int: ("integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    Decimal: (
        "number",
        lambda v: isinstance(v, int | float | Decimal) and not isinstance(v, bool),
    ),
}


def _element_type(annotation: Any) -> Any:
    """The element type inside Optional[...], List[...] and Annotated[...]."""
    while typing.get_origin(annotation) is not None:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


@cache
def _element_types(model: Any) -> dict[str, Any]:
    return {f.alias or name: _element_type(f.annotation) for name, f in model.model_fields.items()}


def _json_type_issues(node: dict[str, Any], model: Any, location: str) -> list[Issue]:
    """Primitive values whose JSON type is wrong (a string for a boolean, integer or decimal)."""
    kind = node.get("resourceType")
    if isinstance(kind, str) and is_known_type(kind):  # the resource itself, or a contained one
        model = get_fhir_model_class(kind)
    types = _element_types(model)
    issues: list[Issue] = []
    for key, value in node.items():
        element: Any = types.get(key)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            here = f"{location}.{key}" if i is None else f"{location}.{key}[{i}]"
            if element in _JSON_PRIMITIVES:
                name, valid = _JSON_PRIMITIVES[element]
                if item is not None and not valid(item):
                    text = f"{here}: {item!r} is not a JSON {name}"
                    issues.append(Issue("value", text, expression=[here]))
            elif isinstance(item, dict) and hasattr(element, "get_model_klass"):
                issues.extend(_json_type_issues(item, element.get_model_klass(), here))
    return issues


def is_known_type(type_name: str) -> bool:
    """True when FHIR R4 defines a resource type of that name."""
    try:
        get_fhir_model_class(type_name)
    except (KeyError, ValueError):
        return False
    return True


def validate(data: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check `data` is a valid R4 resource (of `expected_type` when given); return it unchanged.

    Raises Invalid with one issue per problem, each pointing at the offending element.
    """
    if not isinstance(data, dict):
        raise Invalid("The body must be a JSON object (a FHIR resource)")
    type_name = data.get("resourceType")
    if not isinstance(type_name, str) or not type_name:
        raise Invalid(
            "Missing resourceType",
            issues=[Issue("required", "Missing resourceType", expression=["resourceType"])],
        )
    if expected_type and type_name != expected_type:
        raise Invalid(
            f"Expected a {expected_type} resource but the body is a {type_name}",
            issues=[
                Issue(
                    "invalid",
                    f"resourceType '{type_name}' does not match the endpoint '{expected_type}'",
                    expression=["resourceType"],
                )
            ],
        )
    if not is_known_type(type_name):
        raise Invalid(f"Unknown resource type '{type_name}'")
    model = get_fhir_model_class(type_name)
    issues: list[Issue] = []
    try:
        model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p != "__root__")
            issues.append(
                Issue(
                    "structure" if err["type"] == "extra_forbidden" else "value",
                    f"{_expression(type_name, loc)}: {err['msg']}",
                    expression=[_expression(type_name, loc)],
                )
            )
    except (ValueError, TypeError) as exc:
        issues.append(Issue("invalid", f"{type_name}: {exc}", expression=[type_name]))
    if not issues:
        issues.extend(_json_type_issues(data, model, type_name))
    issues.extend(_binding_issues(data, type_name))
    if issues:
        raise Invalid(f"Invalid {type_name} resource: {issues[0].diagnostics}", issues=issues)
    return data
