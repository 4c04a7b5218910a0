"""The site registry file, its FHIR form (Organization + Endpoints) and its import.

`rix sites import FILE` reads a YAML (.yaml, .yml) or JSON (.json) file of this shape:

    sites:
      - id: "423"                 # required: letters, digits, . _ - (quote it in YAML)
        name: CH Romorantin       # required
        emitter: csrom41200       # optional: the site's emitter code
        namespace: urn:oid:1.2.250.1.999.423   # optional URI of the site's patient-ID
                                  #   namespace; default https://fhir.rix.example/sid/ipp/<id>
        active: true              # optional, default true
        endpoints:                # optional
          - address: https://pacs.example/dicom-web   # required: http(s) URL, no user:password
            name: PACS CH Romorantin                  # optional
            ae_title: CSROM41200                      # optional: the PACS AE title (1-16 chars)
            connection_type: dicom-wado-rs            # optional, default dicom-wado-rs
            status: active                            # optional, default active
            timeout_seconds: 5                        # optional, a number > 0
            credentials_ref: PACS_423                 # optional: the NAME of a credentials
                                                      #   entry, never the secret itself

`connection_type` is a code of http://terminology.hl7.org/CodeSystem/endpoint-connection-type,
`status` one of Endpoint.status (active, suspended, error, off, entered-in-error, test). Every
value is checked before anything is written: unknown keys, keys given twice, missing or empty
required values, values of the wrong type (YAML reads `off`, `yes` and `0423` as non-strings:
quote them), bad URLs and codes, and duplicate site ids, emitters, namespaces or AE titles are
refused with a `SiteFileError` that lists each problem as `sites[i] (id "..."): field: reason`.

Each site becomes one transaction Bundle entry `PUT Organization?identifier=<site-id system>|id`
and each endpoint one `PUT Endpoint?identifier=...`, keyed on its AE title when it has one, else
on `<ENDPOINT_ID_SYSTEM>|<site id>-<index>`. Conditional updates that store nothing when the
content is the same make a re-import of an unchanged file a no-op; a changed value makes a new
version. The import adds and updates, it never deletes: a site or endpoint left out of the file
stays as it is (deactivate it with `active: false` / `status: off`, or delete it through FHIR).
"""

from __future__ import annotations

import difflib
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

import yaml

from app.errors import FhirError
from app.fhir.naming import (
    AE_TITLE_SYSTEM,
    EMITTER_SYSTEM,
    ENDPOINT_CREDENTIALS_URL,
    ENDPOINT_ID_SYSTEM,
    ENDPOINT_TIMEOUT_URL,
    NAMESPACE_SYSTEM,
    SITE_ID_SYSTEM,
    ipp_system,
)
from app.fhir.search import escape
from app.policy.principal import SYSTEM

if TYPE_CHECKING:
    from app.services.runtime import Runtime

CONNECTION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
# The R4 codes of CONNECTION_TYPE_SYSTEM and of Endpoint.status (a required binding).
CONNECTION_TYPES = frozenset(
    {
        "ihe-xcpd",
        "ihe-xca",
        "ihe-xdr",
        "ihe-xds",
        "ihe-iid",
        "dicom-wado-rs",
        "dicom-qido-rs",
        "dicom-stow-rs",
        "dicom-wado-uri",
        "hl7-fhir-rest",
        "hl7-fhir-msg",
        "hl7v2-mllp",
        "secure-email",
        "direct-project",
    }
)
ENDPOINT_STATUSES = ("active", "suspended", "error", "off", "entered-in-error", "test")
DEFAULT_CONNECTION_TYPE = "dicom-wado-rs"

_FILE_KEYS = ("sites",)
_SITE_KEYS = ("id", "name", "emitter", "namespace", "active", "endpoints")
_ENDPOINT_KEYS = (
    "address",
    "name",
    "ae_title",
    "connection_type",
    "status",
    "timeout_seconds",
    "credentials_ref",
)
_SITE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+")
_CREDENTIALS_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SiteFileError(ValueError):
    """A site registry file that cannot be imported; `problems` lists every reason."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        if len(problems) == 1:
            message = f"{path}: {problems[0]}"
        else:
            message = f"{path}: {len(problems)} problems\n" + "\n".join(
                f"  - {p}" for p in problems
            )
        super().__init__(message)


@dataclass(frozen=True)
class SiteEndpoint:
    """One PACS (or other) endpoint of a site."""

    address: str
    name: str | None = None
    ae_title: str | None = None
    connection_type: str = DEFAULT_CONNECTION_TYPE
    status: str = "active"
    timeout_seconds: Decimal | None = None
    credentials_ref: str | None = None


@dataclass(frozen=True)
class Site:
    """One site of the region: an Organization with its Endpoints."""

    id: str
    name: str
    emitter: str | None = None
    namespace: str | None = None
    active: bool = True
    endpoints: tuple[SiteEndpoint, ...] = ()

    @property
    def patient_namespace(self) -> str:
        """The URI of the site's patient-identifier namespace (declared, or the default)."""
        return self.namespace or ipp_system(self.id)


@dataclass(frozen=True)
class ImportSummary:
    """What an import did, counted in resources (Organizations and Endpoints)."""

    sites: int
    endpoints: int
    created: int
    updated: int
    unchanged: int

    def __str__(self) -> str:
        return (
            f"{self.sites} sites, {self.endpoints} endpoints: {self.created} created, "
            f"{self.updated} updated, {self.unchanged} unchanged"
        )


# -- reading the file ---------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load` that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"the key {key!r} is given twice",
                key_node.start_mark,
            )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is given twice")
        out[key] = value
    return out


def _read(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise SiteFileError(
            str(path), [f"unsupported file type '{suffix or path.name}': use .yaml, .yml or .json"]
        )
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise SiteFileError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise SiteFileError(str(path), ["the file is not UTF-8 text"]) from None
    try:
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_unique_pairs, parse_float=Decimal)
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: plain data only
    except json.JSONDecodeError as exc:
        raise SiteFileError(
            str(path), [f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
        ) from None
    except yaml.YAMLError as exc:
        raise SiteFileError(str(path), [f"not valid YAML: {_yaml_problem(exc)}"]) from None
    except ValueError as exc:  # a duplicate JSON key
        raise SiteFileError(str(path), [f"not valid: {exc}"]) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return str(exc)
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return f"{problem} ({where}{', ' + context if context else ''})"


def load_sites(path: str | Path) -> list[Site]:
    """The sites of a registry file, every value checked; raises SiteFileError."""
    path = Path(path)
    data = _read(path)
    problems: list[str] = []
    sites = _parse(data, problems)
    if problems:
        raise SiteFileError(str(path), problems)
    return sites


# -- checking values ----------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


class _Fields:
    """Reads the keys of one mapping of the file, recording each problem with its location."""

    def __init__(
        self, raw: dict[Any, Any], allowed: Sequence[str], where: str, problems: list[str]
    ) -> None:
        self.raw = raw
        self.where = where
        self.problems = problems
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.problem(str(key), f"unknown key (expected one of: {', '.join(allowed)}){hint}")

    def problem(self, field: str, message: str) -> None:
        self.problems.append(f"{self.where}: {field}: {message}")

    def _given(self, key: str, required: bool) -> Any:
        if key not in self.raw:
            if required:
                self.problem(key, "is required")
            return None
        value = self.raw[key]
        if value is None:
            self.problem(key, "has no value (give one, or leave the key out)")
        return value

    def text(
        self,
        key: str,
        *,
        required: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        """A non-empty single-line string; `check` returns a problem or None."""
        value = self._given(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(key, f"must be a string, not {_kind(value)} ({value!r}); quote it")
            return None
        value = value.strip()
        if not value:
            self.problem(key, "must not be empty")
            return None
        if _CONTROL.search(value):
            self.problem(key, "must be one line of text, without control characters")
            return None
        problem = check(value) if check else None
        if problem:
            self.problem(key, problem)
            return None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._given(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"must be true or false, not {value!r}")
            return default
        return value

    def seconds(self, key: str) -> Decimal | None:
        value = self._given(key, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            self.problem(key, f"must be a number of seconds, not {_kind(value)} ({value!r})")
            return None
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        if not number.is_finite() or number <= 0:
            self.problem(key, f"must be a number greater than 0, not {value}")
            return None
        return number

    def items(self, key: str) -> list[Any]:
        value = self._given(key, False)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"must be a list, not {_kind(value)}")
            return []
        return value


def _site_id(value: str) -> str | None:
    if not _SITE_ID.fullmatch(value):
        return "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def _uri(value: str) -> str | None:
    if not _URI.fullmatch(value):
        return f"'{value}' is not an absolute URI (e.g. urn:oid:1.2.250.1.999.423)"
    return None


def _address(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return f"'{value}' is not an http or https URL"
    if re.search(r"\s", value):
        return "a URL cannot contain spaces"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password (use credentials_ref)"
    if parts.fragment:
        return "must not have a #fragment"
    return None


def _ae_title(value: str) -> str | None:
    if len(value) > 16 or "\\" in value or not value.isascii():
        return "a DICOM AE title is 1-16 ASCII characters, without a backslash"
    return None


def _connection_type(value: str) -> str | None:
    if value not in CONNECTION_TYPES:
        codes = ", ".join(sorted(CONNECTION_TYPES))
        return f"'{value}' is not a code of {CONNECTION_TYPE_SYSTEM} ({codes})"
    return None


def _status(value: str) -> str | None:
    if value not in ENDPOINT_STATUSES:
        return f"'{value}' is not an Endpoint status ({', '.join(ENDPOINT_STATUSES)})"
    return None


def _credentials_ref(value: str) -> str | None:
    if not _CREDENTIALS_REF.fullmatch(value):
        return (
            "must be the name of a credentials entry (letters, digits, _ . : / -, e.g. PACS_423),"
            " never the secret itself"
        )
    return None


def _parse(data: Any, problems: list[str]) -> list[Site]:
    if data is None:
        problems.append("the file is empty: expected a mapping with a 'sites' list")
        return []
    if not isinstance(data, dict):
        problems.append(f"expected a mapping with a 'sites' list, not {_kind(data)}")
        return []
    top = _Fields(data, _FILE_KEYS, "file", problems)
    if "sites" not in data:
        problems.append("the file has no 'sites' list")
        return []
    raw_sites = top.items("sites")
    if data["sites"] == []:
        top.problem("sites", "is empty: there is nothing to import")
    sites = [_site(raw, f"sites[{i}]", problems) for i, raw in enumerate(raw_sites)]
    _refuse_duplicates(sites, problems)
    return [s for s in sites if s is not None]


def _site(raw: Any, where: str, problems: list[str]) -> Site | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping (id, name, ...), not {_kind(raw)}")
        return None
    given = raw.get("id")
    if isinstance(given, str) and given.strip():
        where = f'{where} (id "{given.strip()}")'
    elif isinstance(given, int) and not isinstance(given, bool):
        where = f"{where} (id {given})"
    before = len(problems)
    f = _Fields(raw, _SITE_KEYS, where, problems)
    site_id = f.text("id", required=True, check=_site_id)
    name = f.text("name", required=True)
    emitter = f.text("emitter")
    namespace = f.text("namespace", check=_uri)
    active = f.boolean("active", True)
    endpoints = [
        _endpoint(e, f"{where}: endpoints[{j}]", problems)
        for j, e in enumerate(f.items("endpoints"))
    ]
    if len(problems) > before or site_id is None or name is None:
        return None
    return Site(
        site_id,
        name,
        emitter,
        namespace,
        active,
        tuple(e for e in endpoints if e is not None),
    )


def _endpoint(raw: Any, where: str, problems: list[str]) -> SiteEndpoint | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping (address, ...), not {_kind(raw)}")
        return None
    before = len(problems)
    f = _Fields(raw, _ENDPOINT_KEYS, where, problems)
    address = f.text("address", required=True, check=_address)
    endpoint = SiteEndpoint(
        address or "",
        name=f.text("name"),
        ae_title=f.text("ae_title", check=_ae_title),
        connection_type=f.text("connection_type", check=_connection_type)
        or DEFAULT_CONNECTION_TYPE,
        status=f.text("status", check=_status) or "active",
        timeout_seconds=f.seconds("timeout_seconds"),
        credentials_ref=f.text("credentials_ref", check=_credentials_ref),
    )
    return endpoint if len(problems) == before else None


def _refuse_duplicates(sites: list[Site | None], problems: list[str]) -> None:
    """Site ids, emitters, namespaces and AE titles each identify one thing in the region."""
    seen: dict[tuple[str, str], int] = {}

    def claim(kind: str, value: str | None, i: int, field: str) -> bool:
        first = seen.setdefault((kind, value), i) if value is not None else i
        if first != i:
            problems.append(
                f'sites[{i}] (id "{_id(sites[i])}"): {field}: "{value}" is already the {kind} '
                f'of sites[{first}] (id "{_id(sites[first])}")'
            )
        return first == i

    for i, site in enumerate(sites):
        if site is None:
            continue
        unique_id = claim("id", site.id, i, "id")
        claim("emitter", site.emitter, i, "emitter")
        if unique_id or site.namespace:  # a default namespace repeats when the id does
            claim("namespace", site.patient_namespace, i, "namespace")
        for j, endpoint in enumerate(site.endpoints):
            claim("AE title", endpoint.ae_title, i, f"endpoints[{j}].ae_title")


def _id(site: Site | None) -> str:
    return site.id if site else "?"


# -- the FHIR form ------------------------------------------------------------------------------


def organization_full_url(site_id: str) -> str:
    """The `urn:uuid:` fullUrl of a site's Organization in `site_bundle` (stable per site id)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{SITE_ID_SYSTEM}|{site_id}')}"


def endpoint_full_url(site_id: str, index: int = 0) -> str:
    """The `urn:uuid:` fullUrl of a site's `index`-th Endpoint in `site_bundle`."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{ENDPOINT_ID_SYSTEM}|{site_id}-{index}')}"


def endpoint_identifier(site_id: str, index: int, endpoint: SiteEndpoint) -> dict[str, str]:
    """The identifier an Endpoint is matched on: its AE title, else `<site id>-<index>`."""
    if endpoint.ae_title:
        return {"system": AE_TITLE_SYSTEM, "value": endpoint.ae_title}
    return {"system": ENDPOINT_ID_SYSTEM, "value": f"{site_id}-{index}"}


def _put(resource: dict[str, Any], key: dict[str, str], full_url: str) -> dict[str, Any]:
    token = quote(f"{key['system']}|{escape(key['value'])}", safe=":/|")
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}?identifier={token}"},
    }


def _organization(site: Site) -> dict[str, Any]:
    identifiers = [{"system": SITE_ID_SYSTEM, "value": site.id}]
    if site.emitter:
        identifiers.append({"system": EMITTER_SYSTEM, "value": site.emitter})
    identifiers.append({"system": NAMESPACE_SYSTEM, "value": site.patient_namespace})
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "identifier": identifiers,
        "active": site.active,
        "name": site.name,
    }
    if site.endpoints:
        resource["endpoint"] = [
            {"reference": endpoint_full_url(site.id, i)} for i in range(len(site.endpoints))
        ]
    return resource


def _endpoint_resource(site: Site, index: int, endpoint: SiteEndpoint) -> dict[str, Any]:
    extensions: list[dict[str, Any]] = []
    if endpoint.timeout_seconds is not None:
        extensions.append({"url": ENDPOINT_TIMEOUT_URL, "valueDecimal": endpoint.timeout_seconds})
    if endpoint.credentials_ref:
        ref = endpoint.credentials_ref
        extensions.append({"url": ENDPOINT_CREDENTIALS_URL, "valueString": ref})
    resource: dict[str, Any] = {"resourceType": "Endpoint"}
    if extensions:
        resource["extension"] = extensions
    resource |= {
        "identifier": [endpoint_identifier(site.id, index, endpoint)],
        "status": endpoint.status,
        "connectionType": {"system": CONNECTION_TYPE_SYSTEM, "code": endpoint.connection_type},
    }
    if endpoint.name:
        resource["name"] = endpoint.name
    resource |= {
        "managingOrganization": {"reference": organization_full_url(site.id)},
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": endpoint.address,
    }
    return resource


def site_bundle(sites: Sequence[Site]) -> dict[str, Any]:
    """A transaction Bundle of conditional updates: each site's Organization, then its
    Endpoints, linked through `urn:uuid:` fullUrls (see organization_full_url)."""
    entries: list[dict[str, Any]] = []
    for site in sites:
        entries.append(
            _put(
                _organization(site),
                {"system": SITE_ID_SYSTEM, "value": site.id},
                organization_full_url(site.id),
            )
        )
        for i, endpoint in enumerate(site.endpoints):
            entries.append(
                _put(
                    _endpoint_resource(site, i, endpoint),
                    endpoint_identifier(site.id, i, endpoint),
                    endpoint_full_url(site.id, i),
                )
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# -- the import ---------------------------------------------------------------------------------


def _versions(rt: Runtime, base: str, body: dict[str, Any]) -> list[str | None]:
    """The current version of the resource each entry's criteria match (None: none, or more
    than one, which the transaction then refuses with its own located error)."""
    out: list[str | None] = []
    with rt.resources(base, principal=SYSTEM) as svc:
        for entry in body["entry"]:
            type_name, _, query = entry["request"]["url"].partition("?")
            try:
                found = svc.conditional_matches(type_name, parse_qsl(query))
            except FhirError:
                found = []
            out.append(str(found[0].version) if len(found) == 1 else None)
    return out


def _labels(sites: Sequence[Site]) -> list[str]:
    """What each entry of `site_bundle(sites)` is, in the file's terms."""
    out: list[str] = []
    for i, site in enumerate(sites):
        out.append(f'sites[{i}] (id "{site.id}"): Organization')
        for j, endpoint in enumerate(site.endpoints):
            key = endpoint_identifier(site.id, j, endpoint)
            out.append(f'sites[{i}] (id "{site.id}"): endpoints[{j}]: Endpoint {key["value"]}')
    return out


def _located(exc: FhirError, labels: list[str]) -> FhirError:
    """The transaction's error, its `Bundle.entry[n] (...)` prefixes named after the file."""

    def name(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return labels[n] if n < len(labels) else match.group(0)

    pattern = re.compile(r"Bundle\.entry\[(\d+)\] \([A-Z]+ [A-Za-z]+\)")
    exc.diagnostics = pattern.sub(name, exc.diagnostics)
    for issue in exc.issues:
        issue.diagnostics = pattern.sub(name, issue.diagnostics)
    return exc


def apply_sites(rt: Runtime, sites: Sequence[Site], base: str | None = None) -> ImportSummary:
    """Write `sites` as one transaction, as the system principal: all or nothing (a refused
    entry raises the FhirError, located by site, and nothing is written)."""
    from app.services.bundles import process_bundle

    base = base or rt.settings.base_url or "http://localhost/fhir"
    body = site_bundle(sites)
    before = _versions(rt, base, body)
    try:
        result = process_bundle(rt, base, body, return_pref="minimal", principal=SYSTEM)
    except FhirError as exc:
        raise _located(exc, _labels(sites)) from None
    created = updated = unchanged = 0
    for previous, entry in zip(before, result.get("entry", []), strict=True):
        response = entry["response"]
        if response["status"].startswith("201"):
            created += 1
        elif response["etag"] == f'W/"{previous}"':
            unchanged += 1
        else:
            updated += 1
    return ImportSummary(
        len(sites), sum(len(s.endpoints) for s in sites), created, updated, unchanged
    )


def import_sites(rt: Runtime, path: str | Path, base: str | None = None) -> ImportSummary:
    """Load, check and write a site registry file; a bad file raises SiteFileError and writes
    nothing."""
    return apply_sites(rt, load_sites(path), base)
