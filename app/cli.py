"""The `rix` command: serve, db upgrade, demo, openapi."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from app.config import Settings, get_settings

OPENAPI_PATH = Path("openapi/openapi.json")


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.storage.migrations import upgrade

    upgrade(settings.database_url)
    if args.demo:
        _demo(settings, args)
    uvicorn.run(
        "app.main:create_app",
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


def _demo(settings: Settings, _args: argparse.Namespace) -> int:
    from app.demo.loader import demo_bundle
    from app.services.bundles import process_bundle
    from app.services.runtime import Runtime
    from app.storage.migrations import upgrade

    upgrade(settings.database_url)
    rt = Runtime.build(settings)
    result = process_bundle(
        rt, settings.base_url or "http://localhost/fhir", demo_bundle(), return_pref="minimal"
    )
    rt.engine.dispose()
    print(f"demo data loaded: {len(result.get('entry', []))} resources")
    return 0


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
    sub.add_parser("demo", help="load the demo data set").set_defaults(func=_demo)
    openapi = sub.add_parser("openapi", help="write the OpenAPI description")
    openapi.add_argument("--output", default=str(OPENAPI_PATH))
    openapi.set_defaults(func=_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rix` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(get_settings(), args)
    return result


if __name__ == "__main__":
    sys.exit(main())
