"""Reading an operation's input Parameters resource (FHIR R4 parameters.html)."""

from __future__ import annotations

from typing import Any

from app.errors import Invalid
from app.fhir import models


def parameters_of(parameters: Any, operation: str) -> list[dict[str, Any]]:
    """The `parameter` list of a Parameters body, value types checked (a 400, never a crash)."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise Invalid(f"${operation} takes a Parameters resource")
    models.validate(parameters, "Parameters")
    params = parameters.get("parameter", [])
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise Invalid("Parameters.parameter must be a list of parameters")
    return params
