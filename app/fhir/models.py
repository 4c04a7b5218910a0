"""FHIR R4 content validation: the only module that imports fhir.resources (R4B models)."""

from __future__ import annotations

import json
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
    issues.extend(_binding_issues(data, type_name))
    if issues:
        raise Invalid(f"Invalid {type_name} resource: {issues[0].diagnostics}", issues=issues)
    return data
