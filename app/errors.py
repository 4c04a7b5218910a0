"""The one error vocabulary: typed domain errors, rendered at the edge as OperationOutcome."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Issue:
    """One OperationOutcome.issue: severity, FHIR issue-type code, text and FHIRPath locations."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: list[str] = field(default_factory=list)


class FhirError(Exception):
    """Base of every error a client can cause; `status` is the HTTP status it leaves with."""

    status = 400
    code = "processing"

    def __init__(self, diagnostics: str, *, issues: list[Issue] | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.issues = issues or [Issue(self.code, diagnostics)]
        self.headers: dict[str, str] = {}


class Invalid(FhirError):
    status = 400
    code = "invalid"


class NotSupported(FhirError):
    status = 400
    code = "not-supported"


class Unauthorized(FhirError):
    status = 401
    code = "login"


class Forbidden(FhirError):
    status = 403
    code = "forbidden"


class NotFound(FhirError):
    status = 404
    code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class Gone(FhirError):
    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class Unprocessable(FhirError):
    status = 422
    code = "business-rule"


class Unavailable(FhirError):
    status = 503
    code = "transient"
