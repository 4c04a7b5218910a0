"""The priors list (`GET /fhir/Patient/{id}/$priors`): a person's imaging studies from every
site (through identity links), most recent first, each with its producing site, its report and
where to retrieve it. It is an ordinary ImagingStudy search underneath — the same list a generic
client gets with `ImagingStudy?patient...&_sort=-started&_revinclude=DocumentReference:related`
— so the policy, the audit and the paging are the search's."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import Invalid, NotFound
from app.fhir.bundles import RIX_CANONICAL
from app.fhir.naming import IPP_PREFIX, NAMESPACE_SYSTEM, SITE_ID_SYSTEM, ipp_system
from app.fhir.search import escape
from app.services.documents import is_manifest
from app.services.resources import ResourceService, SearchResult
from app.storage.repository import Stored

SITE_URL = f"{RIX_CANONICAL}/StructureDefinition/producing-site"
HAS_REPORT_URL = f"{RIX_CANONICAL}/StructureDefinition/has-report"
_PARAMS = {
    "modality",
    "since",
    "until",
    "_count",
    "_offset",
    "_snapshot",
    "identifier",
    "_format",
    "_pretty",
}


@dataclass
class Priors:
    """A page of priors: the search result (studies + included reports and endpoints)."""

    result: SearchResult
    patient_id: str


def priors(svc: ResourceService, patient_id: str | None, pairs: list[tuple[str, str]]) -> Priors:
    """The priors of the person of Patient/{patient_id}, or of `identifier=system|value`."""
    unknown = sorted({k for k, _ in pairs} - _PARAMS)
    if unknown:
        raise Invalid(f"$priors has no parameter {', '.join(repr(k) for k in unknown)}")
    values = dict(pairs)
    if patient_id is None:
        if "identifier" not in values:
            raise Invalid("$priors needs a Patient id or identifier=system|value")
        found = svc.search("Patient", [("identifier", values["identifier"])]).matches
        if not found:
            raise NotFound(f"No Patient has the identifier {values['identifier']}")
        patient_id = found[0].id
    else:
        svc.read("Patient", patient_id)  # 404 when unknown or hidden
    search = [
        ("patient", f"Patient/{patient_id}"),
        ("_sort", "-started"),
        ("_revinclude", "DocumentReference:related"),
        ("_include", "ImagingStudy:endpoint"),
    ]
    if "modality" in values:
        search.append(("modality", values["modality"]))
    if "since" in values:
        search.append(("started", f"ge{values['since']}"))
    if "until" in values:
        search.append(("started", f"le{values['until']}"))
    for paging in ("_count", "_offset", "_snapshot"):
        if paging in values:
            search.append((paging, values[paging]))
    result = svc.search("ImagingStudy", search)
    # Paging links repeat the operation's own parameters, not the search underneath.
    result.query.used = [
        (k, v) for k, v in pairs if k in ("identifier", "modality", "since", "until")
    ]
    # The reports come along; superseded reports are history, and the imaging manifests are
    # XDS-I's way to the images, which the study's endpoint (WADO-RS) and `$kos` give already.
    result.included = [
        s
        for s in result.included
        if s.resource.get("status") not in ("superseded", "entered-in-error")
        and not (s.type == "DocumentReference" and is_manifest(s.resource))
    ]
    _annotate(svc, result)
    return Priors(result, patient_id)


def _annotate(svc: ResourceService, result: SearchResult) -> None:
    """Each study gets its producing site and whether a report exists (extensions); the
    sites' Organizations join the included resources."""
    reports: dict[str, bool] = {}
    for doc in result.included:
        if doc.type != "DocumentReference" or is_manifest(doc.resource):
            continue
        for related in (doc.resource.get("context") or {}).get("related", []) or []:
            ref = related.get("reference", "") if isinstance(related, dict) else ""
            if ref.startswith("ImagingStudy/"):
                reports[ref.split("/", 1)[1]] = True
    patients = {
        s.id: s
        for s in svc.repo.live_many({("Patient", p) for m in result.matches for p in _subject(m)})
    }
    systems = {
        i.get("system") for p in patients.values() for i in p.resource.get("identifier", []) or []
    }
    sites = _sites(svc, {s for s in systems if isinstance(s, str) and s})
    shown: dict[str, Stored] = {}
    for study in result.matches:
        extensions = [{"url": HAS_REPORT_URL, "valueBoolean": reports.get(study.id, False)}]
        patient = next((patients[p] for p in _subject(study) if p in patients), None)
        org = _site_of(patient, sites) if patient else None
        if org is not None:
            shown[org.id] = org
            extensions.append(
                {
                    "url": SITE_URL,
                    "valueReference": {
                        "reference": f"Organization/{org.id}",
                        "display": org.resource.get("name", ""),
                    },
                }
            )
        study.resource["extension"] = [
            e
            for e in study.resource.get("extension", []) or []
            if e.get("url") not in (SITE_URL, HAS_REPORT_URL)
        ] + extensions
    if svc.policy.may_read(svc.principal, "Organization"):
        result.included += [o for o in shown.values() if all(o.id != i.id for i in result.included)]


def _subject(study: Stored) -> list[str]:
    ref = (study.resource.get("subject") or {}).get("reference", "")
    return [ref.split("/", 1)[1]] if isinstance(ref, str) and ref.startswith("Patient/") else []


def _sites(svc: ResourceService, namespaces: set[str]) -> dict[str, Stored]:
    """Patient-identifier namespace -> the site's Organization (site registry), for these
    namespaces: a site declares its namespace, or has the default one of its site id."""
    if not namespaces:
        return {}
    wanted = [f"{NAMESPACE_SYSTEM}|{escape(ns)}" for ns in sorted(namespaces)]
    wanted += [
        f"{SITE_ID_SYSTEM}|{escape(ns[len(IPP_PREFIX) :])}"
        for ns in sorted(namespaces)
        if ns.startswith(IPP_PREFIX) and len(ns) > len(IPP_PREFIX)
    ]
    out: dict[str, Stored] = {}
    # Directory data, read as the server: whoever may see a study may learn who produced it.
    query = svc.parser.parse("Organization", [("identifier", ",".join(wanted)), ("_total", "none")])
    query.count = 10_000
    for org in svc.repo.search(query)[0]:
        for ident in org.resource.get("identifier", []):
            if ident.get("system") == SITE_ID_SYSTEM and ident.get("value"):
                out.setdefault(ipp_system(ident["value"]), org)
            if ident.get("system") == NAMESPACE_SYSTEM and ident.get("value"):
                out[ident["value"]] = org
    return out


def _site_of(patient: Stored, sites: dict[str, Stored]) -> Stored | None:
    for ident in patient.resource.get("identifier", []) or []:
        org = sites.get(ident.get("system"))
        if org is not None:
            return org
    return None
