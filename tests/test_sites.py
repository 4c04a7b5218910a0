"""The site registry import (`rix sites import FILE`): file format and checks, the FHIR form of a
site (Organization + Endpoints), idempotent re-import, updates, all-or-nothing writes, the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from app import cli
from app.config import Settings
from app.demo.loader import demo_bundle, demo_sites
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
from app.services.runtime import Runtime
from app.sites.registry import (
    CONNECTION_TYPE_SYSTEM,
    ImportSummary,
    Site,
    SiteEndpoint,
    SiteFileError,
    import_sites,
    load_sites,
    site_bundle,
)
from app.storage.tables import VERSION, metadata
from tests.server import rix_env, run_rix

RESOURCE = metadata.tables["resource"]

REGISTRY_YAML = """\
# two sites of the region
sites:
  - id: "423"
    name: CH Romorantin
    emitter: csrom41200
    endpoints:
      - address: https://pacs-423.example/dicom-web
        name: PACS CH Romorantin
        ae_title: CSROM41200
        timeout_seconds: 2.5
        credentials_ref: PACS_423
  - id: "401"
    name: CHRU Tours
    namespace: urn:oid:1.2.250.1.999.401
    active: false
    endpoints:
      - address: http://pacs-401.example:8042/dicom-web
        connection_type: dicom-qido-rs
        status: "off"
      - address: https://pacs-401b.example/dicom-web
"""


def _registry_json() -> str:
    """REGISTRY_YAML as JSON."""
    return json.dumps(
        {
            "sites": [
                {
                    "id": "423",
                    "name": "CH Romorantin",
                    "emitter": "csrom41200",
                    "endpoints": [
                        {
                            "address": "https://pacs-423.example/dicom-web",
                            "name": "PACS CH Romorantin",
                            "ae_title": "CSROM41200",
                            "timeout_seconds": 2.5,
                            "credentials_ref": "PACS_423",
                        }
                    ],
                },
                {
                    "id": "401",
                    "name": "CHRU Tours",
                    "namespace": "urn:oid:1.2.250.1.999.401",
                    "active": False,
                    "endpoints": [
                        {
                            "address": "http://pacs-401.example:8042/dicom-web",
                            "connection_type": "dicom-qido-rs",
                            "status": "off",
                        },
                        {"address": "https://pacs-401b.example/dicom-web"},
                    ],
                },
            ]
        },
        indent=1,
    )


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.rix  # type: ignore[attr-defined]
    return rt


def _data(url: str) -> dict[str, tuple[int, int]]:
    """Per resource type (AuditEvents aside): how many resources and how many versions."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            resources = conn.execute(
                select(RESOURCE.c.resource_type, func.count()).group_by(RESOURCE.c.resource_type)
            ).all()
            versions = dict(
                conn.execute(
                    select(VERSION.c.resource_type, func.count()).group_by(VERSION.c.resource_type)
                ).all()
            )
    finally:
        engine.dispose()
    return {t: (int(n), int(versions[t])) for t, n in resources if t != "AuditEvent"}


def _one(client: TestClient, type_name: str, system: str, value: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{type_name}", params={"identifier": f"{system}|{value}"})
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["total"] == 1, found
    resource: dict[str, Any] = found["entry"][0]["resource"]
    return resource


def _identifiers(resource: dict[str, Any]) -> dict[str, str]:
    return {i["system"]: i["value"] for i in resource["identifier"]}


def _extensions(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        e["url"]: e.get("valueDecimal", e.get("valueString")) for e in resource.get("extension", [])
    }


Rix = Callable[[list[str]], int]


@pytest.fixture
def rix(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Rix:
    """`rix(ARGV)`: the `rix` command in this process, on the test settings."""
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    return cli.main


# -- the file ------------------------------------------------------------------------------------


def test_yaml_and_json_files_give_the_same_sites(tmp_path: Path) -> None:
    from_yaml = load_sites(_write(tmp_path, "sites.yaml", REGISTRY_YAML))
    from_yml = load_sites(_write(tmp_path, "sites.yml", REGISTRY_YAML))
    from_json = load_sites(_write(tmp_path, "sites.json", _registry_json()))
    assert from_yaml == from_yml == from_json
    romorantin, tours = from_yaml
    assert romorantin == Site(
        "423",
        "CH Romorantin",
        emitter="csrom41200",
        endpoints=(
            SiteEndpoint(
                "https://pacs-423.example/dicom-web",
                name="PACS CH Romorantin",
                ae_title="CSROM41200",
                timeout_seconds=Decimal("2.5"),
                credentials_ref="PACS_423",
            ),
        ),
    )
    assert tours.active is False
    assert [e.status for e in tours.endpoints] == ["off", "active"]
    assert [e.connection_type for e in tours.endpoints] == ["dicom-qido-rs", "dicom-wado-rs"]


def test_namespace_defaults_to_the_site_ipp_system() -> None:
    bundle = site_bundle(
        [Site("423", "CH Romorantin"), Site("401", "CHRU Tours", namespace="urn:oid:1.2.3.401")]
    )
    orgs = [e["resource"] for e in bundle["entry"]]
    assert _identifiers(orgs[0]) == {SITE_ID_SYSTEM: "423", NAMESPACE_SYSTEM: ipp_system("423")}
    assert _identifiers(orgs[1])[NAMESPACE_SYSTEM] == "urn:oid:1.2.3.401"
    assert "endpoint" not in orgs[0]  # no empty list: FHIR forbids it


def test_bundle_entries_are_conditional_updates_linked_by_uuid(tmp_path: Path) -> None:
    bundle = site_bundle(load_sites(_write(tmp_path, "sites.yaml", REGISTRY_YAML)))
    assert bundle["type"] == "transaction"
    requests = [(e["request"]["method"], e["request"]["url"]) for e in bundle["entry"]]
    assert requests == [
        ("PUT", f"Organization?identifier={SITE_ID_SYSTEM}|423"),
        ("PUT", f"Endpoint?identifier={AE_TITLE_SYSTEM}|CSROM41200"),
        ("PUT", f"Organization?identifier={SITE_ID_SYSTEM}|401"),
        ("PUT", f"Endpoint?identifier={ENDPOINT_ID_SYSTEM}|401-0"),
        ("PUT", f"Endpoint?identifier={ENDPOINT_ID_SYSTEM}|401-1"),
    ]
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert all(u.startswith("urn:uuid:") for u in urls) and len(set(urls)) == len(urls)
    org, endpoint = bundle["entry"][0]["resource"], bundle["entry"][1]["resource"]
    assert org["endpoint"] == [{"reference": urls[1]}]
    assert endpoint["managingOrganization"] == {"reference": urls[0]}
    # the same file gives the same Bundle: fullUrls are derived from the site ids
    assert site_bundle(load_sites(tmp_path / "sites.yaml")) == bundle


# Each bad file holds a valid site too: a partial import would show.
VALID_SITE = '  - id: "900"\n    name: Valid site\n'


def _site(*lines: str) -> str:
    """A file with site "1" (its id, then `lines`) and a valid site."""
    return 'sites:\n  - id: "1"\n' + "".join(f"    {line}\n" for line in lines) + VALID_SITE


def _endpoint(*lines: str) -> str:
    """A file with site "1" whose one endpoint has an address, then `lines`."""
    return _site(
        "name: X", "endpoints:", "  - address: https://p.example/x", *(f"    {x}" for x in lines)
    )


TWO_AE = (
    _endpoint("ae_title: PACS")
    + '  - id: "2"\n    name: Y\n    endpoints:\n'
    + ("      - address: https://q.example/x\n        ae_title: PACS\n")
)
BAD_FILES = [
    ("top-key.yaml", "other: 1\n", "file: other: unknown key"),
    ("no-sites.yaml", "# nothing\n", "the file is empty"),
    ("list.yaml", "- id: '1'\n", "expected a mapping with a 'sites' list"),
    ("empty-list.yaml", "sites: []\n", "sites: is empty"),
    ("missing-id.yaml", "sites:\n  - name: X\n" + VALID_SITE, "sites[0]: id: is required"),
    ("missing-name.yaml", _site(), 'sites[0] (id "1"): name: is required'),
    ("int-id.yaml", "sites:\n  - id: 423\n    name: X\n" + VALID_SITE, "id: must be a string"),
    ("bad-id.yaml", 'sites:\n  - id: "4 23"\n    name: X\n' + VALID_SITE, "id: must be 1-64"),
    ("empty-name.yaml", _site('name: " "'), "name: must not be empty"),
    ("control.yaml", _site('name: "X\\nY"'), "name: must be one line of text"),
    ("null-emitter.yaml", _site("name: X", "emitter:"), "emitter: has no value"),
    ("unknown-key.yaml", _site("nom: X", "name: X"), "nom: unknown key"),
    ("typo.yaml", _site("name: X", "emiter: e"), "did you mean 'emitter'?"),
    ("dup-key.yaml", _site("name: X", "name: Y"), "the key 'name' is given twice"),
    ("dup-key.json", '{"sites": [{"id": "1", "name": "X", "id": "2"}]}', "'id' is given twice"),
    ("bad.json", '{"sites": [', "not valid JSON"),
    ("bad.yaml", "sites: [\n", "not valid YAML"),
    ("sites.txt", "sites: []\n", "unsupported file type"),
    ("active.yaml", _site("name: X", 'active: "no"'), "active: must be true or false"),
    ("namespace.yaml", _site("name: X", "namespace: not a uri"), "'not a uri' is not an absolute"),
    ("dup-id.yaml", "sites:\n" + VALID_SITE * 2, '"900" is already the id'),
    (
        "dup-emitter.yaml",
        _site("name: X", "emitter: e1") + "    emitter: e1\n",
        'sites[1] (id "900"): emitter: "e1" is already the emitter of sites[0] (id "1")',
    ),
    (
        "dup-namespace.yaml",
        _site("name: X", f"namespace: {ipp_system('900')}"),
        f'namespace: "{ipp_system("900")}" is already the namespace',
    ),
    ("endpoints.yaml", _site("name: X", "endpoints: https://x"), "endpoints: must be a list"),
    (
        "ep-address.yaml",
        _site("name: X", "endpoints:", "  - name: P"),
        'sites[0] (id "1"): endpoints[0]: address: is required',
    ),
    ("ep-scheme.yaml", _site("name: X", "endpoints:", "  - address: ftp://p/x"), "not an http"),
    ("ep-nohost.yaml", _site("name: X", "endpoints:", "  - address: https:///x"), "not an http"),
    (
        "ep-port.yaml",
        _site("name: X", "endpoints:", "  - address: https://p:99999/"),
        "not an http",
    ),
    (
        "ep-userinfo.yaml",
        _site("name: X", "endpoints:", "  - address: https://u:secret@p.example/x"),
        "must not carry a user name or password",
    ),
    ("ep-status.yaml", _endpoint("status: on"), "status: must be a string, not a boolean"),
    ("ep-status2.yaml", _endpoint("status: down"), "status: 'down' is not an Endpoint status"),
    ("ep-type.yaml", _endpoint("connection_type: web"), "connection_type: 'web' is not a code"),
    ("ep-timeout.yaml", _endpoint("timeout_seconds: 0"), "must be a number greater than 0"),
    ("ep-timeout2.yaml", _endpoint("timeout_seconds: 5s"), "must be a number of seconds"),
    ("ep-timeout3.yaml", _endpoint("timeout_seconds: .inf"), "must be a number greater than 0"),
    ("ep-ae.yaml", _endpoint("ae_title: A_VERY_LONG_AE_TITLE"), "a DICOM AE title is 1-16"),
    ("ep-dup-ae.yaml", TWO_AE, 'endpoints[0].ae_title: "PACS" is already the AE title'),
    ("ep-secret.yaml", _endpoint('credentials_ref: "hunter2 !"'), "never the secret itself"),
    ("ep-unknown.yaml", _endpoint("password: hunter2"), "endpoints[0]: password: unknown key"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_file_is_refused_with_its_location(
    name: str, text: str, expected: str, tmp_path: Path
) -> None:
    with pytest.raises(SiteFileError) as caught:
        load_sites(_write(tmp_path, name, text))
    assert expected in str(caught.value), str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / name))


def test_every_problem_is_listed(tmp_path: Path) -> None:
    text = 'sites:\n  - id: "1"\n    endpoints:\n      - address: ftp://x\n        status: up\n'
    with pytest.raises(SiteFileError) as caught:
        load_sites(_write(tmp_path, "sites.yaml", text))
    assert caught.value.problems == [
        'sites[0] (id "1"): name: is required',
        "sites[0] (id \"1\"): endpoints[0]: address: 'ftp://x' is not an http or https URL",
        "sites[0] (id \"1\"): endpoints[0]: status: 'up' is not an Endpoint status "
        "(active, suspended, error, off, entered-in-error, test)",
    ]


def test_a_missing_file_is_a_site_file_error(tmp_path: Path) -> None:
    with pytest.raises(SiteFileError, match="cannot read the file"):
        load_sites(tmp_path / "nowhere.yaml")


# -- the import ----------------------------------------------------------------------------------


def test_import_writes_organizations_and_endpoints_an_admin_can_read(
    client: TestClient, tmp_path: Path
) -> None:
    summary = import_sites(_runtime(client), _write(tmp_path, "sites.yaml", REGISTRY_YAML))
    assert summary == ImportSummary(sites=2, endpoints=3, created=5, updated=0, unchanged=0)

    org = _one(client, "Organization", SITE_ID_SYSTEM, "423")
    assert org["name"] == "CH Romorantin" and org["active"] is True
    assert _identifiers(org) == {
        SITE_ID_SYSTEM: "423",
        EMITTER_SYSTEM: "csrom41200",
        NAMESPACE_SYSTEM: ipp_system("423"),
    }
    endpoint = _one(client, "Endpoint", AE_TITLE_SYSTEM, "CSROM41200")
    assert org["endpoint"] == [{"reference": f"Endpoint/{endpoint['id']}"}]
    assert endpoint["managingOrganization"] == {"reference": f"Organization/{org['id']}"}
    assert endpoint["address"] == "https://pacs-423.example/dicom-web"
    assert endpoint["name"] == "PACS CH Romorantin"
    assert endpoint["status"] == "active"
    assert endpoint["connectionType"] == {"system": CONNECTION_TYPE_SYSTEM, "code": "dicom-wado-rs"}
    assert endpoint["payloadType"] == [{"text": "DICOM"}]
    assert endpoint["payloadMimeType"] == ["application/dicom"]
    assert _extensions(endpoint) == {
        ENDPOINT_TIMEOUT_URL: 2.5,
        ENDPOINT_CREDENTIALS_URL: "PACS_423",
    }

    tours = _one(client, "Organization", NAMESPACE_SYSTEM, "urn:oid:1.2.250.1.999.401")
    assert tours["active"] is False and EMITTER_SYSTEM not in _identifiers(tours)
    first = _one(client, "Endpoint", ENDPOINT_ID_SYSTEM, "401-0")
    second = _one(client, "Endpoint", ENDPOINT_ID_SYSTEM, "401-1")
    assert tours["endpoint"] == [
        {"reference": f"Endpoint/{first['id']}"},
        {"reference": f"Endpoint/{second['id']}"},
    ]
    assert first["status"] == "off" and first["connectionType"]["code"] == "dicom-qido-rs"
    assert "name" not in second and "extension" not in second

    # the directory is searchable the usual ways
    found = client.get("/fhir/Endpoint", params={"organization": f"Organization/{tours['id']}"})
    assert found.json()["total"] == 2
    found = client.get("/fhir/Organization", params={"identifier": f"{SITE_ID_SYSTEM}|423"})
    assert found.json()["total"] == 1


def test_json_import_matches_yaml_import(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    rt = _runtime(client)
    assert import_sites(rt, _write(tmp_path, "sites.json", _registry_json())).created == 5
    again = import_sites(rt, _write(tmp_path, "sites.yaml", REGISTRY_YAML))
    assert again == ImportSummary(sites=2, endpoints=3, created=0, updated=0, unchanged=5)


def test_reimport_is_idempotent(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    rt = _runtime(client)
    path = _write(tmp_path, "sites.yaml", REGISTRY_YAML)
    import_sites(rt, path)
    loaded = _data(settings.database_url)
    assert loaded == {"Organization": (2, 2), "Endpoint": (3, 3)}

    summary = import_sites(rt, path)
    assert summary == ImportSummary(sites=2, endpoints=3, created=0, updated=0, unchanged=5)
    assert _data(settings.database_url) == loaded  # no new resource, no new version
    assert _one(client, "Organization", SITE_ID_SYSTEM, "423")["meta"]["versionId"] == "1"


def test_reimport_with_a_change_updates_only_what_changed(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    rt = _runtime(client)
    import_sites(rt, _write(tmp_path, "sites.yaml", REGISTRY_YAML))
    before = _one(client, "Organization", SITE_ID_SYSTEM, "423")
    changed = REGISTRY_YAML.replace("name: CH Romorantin", "name: CH de Romorantin-Lanthenay")
    changed = changed.replace("timeout_seconds: 2.5", "timeout_seconds: 10")
    summary = import_sites(rt, _write(tmp_path, "changed.yaml", changed))
    assert summary == ImportSummary(sites=2, endpoints=3, created=0, updated=2, unchanged=3)

    after = _one(client, "Organization", SITE_ID_SYSTEM, "423")
    assert after["id"] == before["id"]
    assert after["name"] == "CH de Romorantin-Lanthenay"
    assert after["meta"]["versionId"] == "2"
    endpoint = _one(client, "Endpoint", AE_TITLE_SYSTEM, "CSROM41200")
    assert endpoint["meta"]["versionId"] == "2"
    assert _extensions(endpoint)[ENDPOINT_TIMEOUT_URL] == 10
    assert _data(settings.database_url) == {"Organization": (2, 3), "Endpoint": (3, 4)}


def test_identifier_values_with_search_special_characters(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """An AE title may hold `,` `$` `|` and spaces: the conditional update still finds its
    Endpoint (FHIR search escapes), so a re-import creates no duplicate."""
    text = (
        'sites:\n  - id: "7"\n    name: X\n    endpoints:\n'
        "      - address: https://p.example/x\n        ae_title: 'A,B$C|D E'\n"
    )
    path = _write(tmp_path, "sites.yaml", text)
    rt = _runtime(client)
    assert import_sites(rt, path).created == 2
    assert import_sites(rt, path).unchanged == 2
    assert _data(settings.database_url) == {"Organization": (1, 1), "Endpoint": (1, 1)}


def test_a_failing_transaction_writes_nothing(
    client: TestClient,
    settings: Settings,
    rix: Rix,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two Endpoints already carry the AE title a site names: the conditional update cannot
    choose, the whole import is refused (exit 2) and no other site is written either."""
    for address in ("https://a.example/x", "https://b.example/x"):
        created = client.post(
            "/fhir/Endpoint",
            json={
                "resourceType": "Endpoint",
                "identifier": [{"system": AE_TITLE_SYSTEM, "value": "TAKEN"}],
                "status": "active",
                "connectionType": {"system": CONNECTION_TYPE_SYSTEM, "code": "dicom-wado-rs"},
                "payloadType": [{"text": "DICOM"}],
                "address": address,
            },
        )
        assert created.status_code == 201, created.text
    before = _data(settings.database_url)
    text = REGISTRY_YAML + (
        '  - id: "9"\n    name: Z\n    endpoints:\n'
        "      - address: https://z.example/x\n        ae_title: TAKEN\n"
    )
    path = _write(tmp_path, "sites.yaml", text)
    assert rix(["sites", "import", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('rix: sites[2] (id "9"): endpoints[0]: Endpoint TAKEN: '), err
    assert _data(settings.database_url) == before


def test_demo_sites_are_valid_registry_sites(tmp_path: Path) -> None:
    """The demo's sites pass the file checks and are the start of the demo Bundle."""
    sites = demo_sites()
    rows = [
        {
            "id": s.id,
            "name": s.name,
            "emitter": s.emitter,
            "endpoints": [
                {"address": e.address, "name": e.name, "ae_title": e.ae_title} for e in s.endpoints
            ],
        }
        for s in sites
    ]
    path = _write(tmp_path, "demo.json", json.dumps({"sites": rows}))
    assert load_sites(path) == sites
    entries = demo_bundle()["entry"]
    assert entries[: 2 * len(sites)] == site_bundle(sites)["entry"]
    assert {e["resource"]["resourceType"] for e in entries[2 * len(sites) :]} == {
        "Patient",
        "ImagingStudy",
        "DocumentReference",
    }


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "text", "expected"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_cli_refuses_a_bad_file_with_exit_2_and_writes_nothing(
    name: str,
    text: str,
    expected: str,
    settings: Settings,
    rix: Rix,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _write(tmp_path, name, text)
    assert rix(["sites", "import", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"rix sites import: {path}") and expected in err, err
    assert _data(settings.database_url) == {}


def test_cli_end_to_end(database_url: str, tmp_path: Path) -> None:
    env = rix_env(database_url, tmp_path / "data")
    path = _write(tmp_path, "sites.yaml", REGISTRY_YAML)
    first = run_rix(["sites", "import", str(path)], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"sites imported from {path}: 2 sites, 3 endpoints: 5 created, 0 updated, 0 unchanged\n"
    )
    again = run_rix(["sites", "import", str(path)], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith("0 created, 0 updated, 5 unchanged\n")
    assert _data(database_url) == {"Organization": (2, 2), "Endpoint": (3, 3)}

    bad = _write(tmp_path, "bad.yaml", REGISTRY_YAML.replace('status: "off"', "status: down"))
    refused = run_rix(["sites", "import", str(bad)], env, tmp_path)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "sites[1] (id \"401\"): endpoints[0]: status: 'down'" in refused.stderr


def test_cli_bad_file_does_not_touch_the_database(tmp_path: Path) -> None:
    """The file is checked before the database is opened (or migrated)."""
    database = tmp_path / "never.db"
    env = rix_env(f"sqlite:///{database}", tmp_path / "data")
    bad = _write(tmp_path, "bad.yaml", "sites: []\n")
    done = run_rix(["sites", "import", str(bad)], env, tmp_path)
    assert done.returncode == 2 and "nothing to import" in done.stderr
    assert not database.exists()
    usage = run_rix(["sites"], env, tmp_path)
    assert usage.returncode == 2 and "import" in usage.stderr
