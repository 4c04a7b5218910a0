"""The `rix` command: serve, db upgrade, demo, sites, token, audit, maintenance, openapi."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import Settings, get_settings
from app.errors import FhirError
from app.policy.principal import PURPOSES, ROLES

if TYPE_CHECKING:
    from app.services.runtime import Runtime

OPENAPI_PATH = Path("openapi/openapi.json")


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.storage.migrations import upgrade

    upgrade(settings.database_url)
    if args.demo:
        _demo(settings, args)
    uvicorn.run(
        "app.main:server_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_level=settings.log_level,
        proxy_headers=True,
    )
    return 0


def _upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    from app.storage.migrations import upgrade

    upgrade(settings.database_url)
    print(f"database at head: {settings.database_url}")
    return 0


def _reindex(settings: Settings, args: argparse.Namespace) -> int:
    from app.identity.vigilance import Vigilance
    from app.storage.db import transaction
    from app.storage.repository import Repository

    rt = _runtime(settings)
    if args.type:
        rt.registry.get(args.type)  # an unknown type is an error, not a silent no-op
    with transaction(rt.sessions, write=True) as session:
        repo = Repository(session, rt.registry)
        repo.listeners.append(Vigilance(repo, "rix db reindex").on_write)
        count = repo.reindex(args.type)
    rt.engine.dispose()
    print(f"reindexed {count} resources")
    return 0


def _demo(settings: Settings, _args: argparse.Namespace) -> int:
    from app.demo.loader import demo_bundle
    from app.services.bundles import process_bundle

    rt = _runtime(settings)
    result = process_bundle(
        rt, settings.base_url or "http://localhost/fhir", demo_bundle(), return_pref="minimal"
    )
    rt.engine.dispose()
    print(f"demo data loaded: {len(result.get('entry', []))} resources")
    return 0


def _sites_import(settings: Settings, args: argparse.Namespace) -> int:
    from app.sites.registry import SiteFileError, apply_sites, load_sites

    try:
        sites = load_sites(args.file)  # checked before the database is touched
    except SiteFileError as exc:
        print(f"rix sites import: {exc}", file=sys.stderr)
        return 2
    rt = _runtime(settings)
    try:
        summary = apply_sites(rt, sites, settings.base_url or "http://localhost/fhir")
    finally:
        rt.engine.dispose()
    print(f"sites imported from {args.file}: {summary}")
    return 0


def _sites_check(settings: Settings, _args: argparse.Namespace) -> int:
    import httpx

    from app.services import sites

    rt = _runtime(settings)
    try:
        with httpx.Client() as client, rt.resources(None, write=True) as svc:
            results = sites.check(svc, client)
    finally:
        rt.engine.dispose()
    for endpoint, contact in results:
        where = f"Endpoint/{endpoint.id} {endpoint.resource.get('address', '')}"
        print(f"ok   {where}" if contact.ok else f"FAIL {where}: {contact.error}")
    failed = sum(not c.ok for _, c in results)
    print(f"{len(results)} active endpoints checked, {failed} failing")
    return 1 if failed else 0


def _openapi(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(openapi_text(settings), encoding="utf-8")
    print(f"wrote {path}")
    return 0


def openapi_text(settings: Settings) -> str:
    """The OpenAPI description of the app, as committed in openapi/openapi.json."""
    from app.main import create_app

    app = create_app(settings)
    text = json.dumps(app.openapi(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    app.state.rix.engine.dispose()
    return text


def _runtime(settings: Settings) -> Runtime:
    """A runtime on a database brought to the current schema first."""
    from app.services.runtime import Runtime
    from app.storage.migrations import upgrade

    upgrade(settings.database_url)
    return Runtime.build(settings)


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth.tokens import issue_dev_token

    if settings.env == "production":
        print(
            "rix token: the development issuer is disabled when RIX_ENV=production", file=sys.stderr
        )
        return 2
    print(
        issue_dev_token(
            settings,
            subject=args.sub,
            name=args.name,
            role=args.role,
            organization_id=args.org,
            organization_name=args.org_name,
            purpose=args.purpose,
            scopes=args.scope or None,
            patient=args.patient,
            npi=args.npi,
            ttl=args.ttl,
        )
    )
    return 0


def _audit_verify(settings: Settings, _args: argparse.Namespace) -> int:
    from app.storage.db import transaction

    rt = _runtime(settings)
    with transaction(rt.sessions, write=True) as session:
        rt.trail.seal(session)
    with transaction(rt.sessions) as session:
        problems = rt.trail.verify(session)
    rt.engine.dispose()
    for problem in problems:
        print(f"TAMPERED: {problem}")
    if problems:
        return 1
    print("audit chain intact")
    return 0


def _audit_export(settings: Settings, args: argparse.Namespace) -> int:
    from app.fhir.values import date_range
    from app.storage.db import transaction

    since = date_range(args.since)[0] if args.since else None
    until = date_range(args.until)[1] if args.until else None
    rt = _runtime(settings)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    count = 0
    try:
        with transaction(rt.sessions, write=True) as session:
            rt.trail.seal(session)
        with transaction(rt.sessions) as session:
            for line in rt.trail.export(session, since, until):
                out.write(line + "\n")
                count += 1
    finally:
        if out is not sys.stdout:
            out.close()
        rt.engine.dispose()
    print(f"exported {count} AuditEvents", file=sys.stderr)
    return 0


def _maintenance(settings: Settings, _args: argparse.Namespace) -> int:
    from app.storage.db import transaction
    from app.storage.repository import Repository

    rt = _runtime(settings)
    with transaction(rt.sessions, write=True) as session:
        indexed = rt.trail.catch_up(Repository(session, rt.registry))
    with transaction(rt.sessions, write=True) as session:
        purged = rt.trail.purge(session, settings.audit_retention_days)
    rt.engine.dispose()
    print(f"indexed {indexed} new AuditEvents for search")
    print(f"purged {purged} AuditEvents older than {settings.audit_retention_days} days")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = argparse.ArgumentParser(prog="rix", description="RIX, the Regional Imaging eXchange")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="apply migrations and run the HTTP service")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--demo", action="store_true", help="load the demo data set first")
    serve.set_defaults(func=_serve)
    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply pending migrations").set_defaults(func=_upgrade)
    reindex = db_sub.add_parser(
        "reindex", help="rebuild search indexes (after search-parameter definitions change)"
    )
    reindex.add_argument("--type", default=None, help="only this resource type")
    reindex.set_defaults(func=_reindex)
    sub.add_parser("demo", help="load the demo data set").set_defaults(func=_demo)
    sites = sub.add_parser("sites", help="the site registry (Organizations and their Endpoints)")
    sites_sub = sites.add_subparsers(dest="sites_command", required=True)
    sites_import = sites_sub.add_parser(
        "import", help="create or update sites from a YAML or JSON file (idempotent)"
    )
    sites_import.add_argument("file", help="the site registry file (.yaml, .yml or .json)")
    sites_import.set_defaults(func=_sites_import)
    sites_sub.add_parser(
        "check", help="probe every active PACS endpoint (QIDO-RS) and record its health"
    ).set_defaults(func=_sites_check)
    token = sub.add_parser("token", help="print a development token (refused in production)")
    token.add_argument("--sub", required=True, help="subject (person or system id)")
    token.add_argument("--name", required=True, help="subject_name")
    token.add_argument("--org", default=None, help="subject_organization_id (site id)")
    token.add_argument("--org-name", default=None, help="subject_organization")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--purpose", default="TREAT", choices=PURPOSES)
    token.add_argument("--scope", action="append", help="SMART scope (repeatable)")
    token.add_argument("--patient", default=None, help="Patient id (patient tokens)")
    token.add_argument("--npi", default=None, help="national_provider_identifier (RPPS)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(func=_token)
    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check the hash chain").set_defaults(func=_audit_verify)
    export = audit_sub.add_parser("export", help="write AuditEvents as NDJSON")
    export.add_argument("--since", default=None, help="FHIR date/dateTime (inclusive)")
    export.add_argument("--until", default=None, help="FHIR date/dateTime (inclusive)")
    export.add_argument("--output", default=None, help="file (default: standard output)")
    export.set_defaults(func=_audit_export)
    sub.add_parser(
        "maintenance", help="index new audit records for search; purge those past retention"
    ).set_defaults(func=_maintenance)
    openapi = sub.add_parser("openapi", help="write the OpenAPI description")
    openapi.add_argument("--output", default=str(OPENAPI_PATH))
    openapi.set_defaults(func=_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rix` console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(get_settings(), args)
    except FhirError as exc:
        print(f"rix: {exc.diagnostics}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
