"""The community's base consent policy (`RIX_COMMUNITY_POLICY`) and consent enforcement
(`RIX_CONSENT_ENFORCEMENT`).

In an explicit opt-in community (`opt-in`, as IMAG) an exam leaves its producing site only for a
patient who consented to community sharing (an active Consent of the community-sharing kind,
profiles/Consent-community-sharing.json): until then ("not yet informed") her ImagingStudy,
DocumentReference, List and ServiceRequest resources, and the report's bytes, are hidden from
every role but the patient, even a clinician in her care; her withdrawal (status inactive)
hides them again; an opposition wins over her consent; a break-glass grant overrides "not yet
informed". In the default opt-out community nothing changes. `RIX_CONSENT_ENFORCEMENT=false`
turns Consents off (refused when `RIX_ENV=production`).

The scene is the care-relationship one (tests/test_care_relationship.py): Agathe LENOIR is `a1`
at CH Romorantin (site 423), which registered a study, its report and an order; CHRU Tours
(site 401) knows her too (`t7`, same validated INS), so a Tours radiologist is in her care;
Tours' own patient `b1` has a Tours study. The module's apps run in an opt-in community.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.services.runtime import Runtime
from tests.conftest import Token, other_app
from tests.identity.support import BLOIS, ROMORANTIN, TOURS
from tests.test_break_glass import authz_events, grant_id, open_grant, subtype
from tests.test_care_relationship import _ids, _link_at_tours, _scene
from tests.test_consent_enforcement import _example, opposition, record, withdraw

NOT_INFORMED = "no community-sharing consent (opt-in community)"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The conftest settings, in an explicit opt-in community."""
    return Settings(
        env="test",
        database_url=database_url,
        data_dir=tmp_path / "data",
        audit_seal_interval=60,
        community_policy="opt-in",
    )


def sharing(patient_id: str) -> dict[str, Any]:
    """The published community-sharing example, about `patient_id`."""
    consent = copy.deepcopy(_example("community-sharing"))
    consent.pop("id")
    consent.pop("organization", None)
    consent["patient"] = {"reference": f"Patient/{patient_id}"}
    consent["performer"] = [{"reference": f"Patient/{patient_id}"}]
    consent["identifier"][0]["value"] = f"CONS-{uuid.uuid4().hex[:8]}"
    return consent


def _order(client: TestClient, token: Token, patient_id: str) -> str:
    response = client.post(
        "/fhir/ServiceRequest",
        json={
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": f"Patient/{patient_id}"},
        },
        headers=token("site-system", org=ROMORANTIN),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _full_scene(client: TestClient, token: Token) -> dict[str, str]:
    s = _scene(client, token)
    s["t7"] = _link_at_tours(client, token)
    s["order"] = _order(client, token, s["a1"])
    return s


def _exams(s: dict[str, str]) -> list[str]:
    return [
        f"ImagingStudy/{s['study']}",
        f"DocumentReference/{s['document']}",
        f"List/{s['list']}",
        f"ServiceRequest/{s['order']}",
        f"Binary/{s['binary']}",
    ]


def _outsiders(token: Token) -> dict[str, dict[str, str]]:
    """Every role outside Romorantin that may read exams."""
    return {
        "radiologist (in care)": token("radiologist", org=TOURS),
        "clinician (in care)": token("clinician", org=TOURS),
        "gp (in care)": token("gp", org=TOURS),
        "site-system": token("site-system", org=TOURS),
        "admin": token("admin"),
        "dpo": token("dpo"),
    }


def _visible(client: TestClient, headers: dict[str, str], refs: list[str]) -> set[str]:
    return {r for r in refs if client.get(f"/fhir/{r}", headers=headers).status_code == 200}


def _searched(client: TestClient, headers: dict[str, str], s: dict[str, str]) -> set[str]:
    found: set[str] = set()
    for type_name in ("ImagingStudy", "DocumentReference", "List", "ServiceRequest"):
        response = client.get(
            f"/fhir/{type_name}", params={"patient": f"Patient/{s['t7']}"}, headers=headers
        )
        found |= _ids(response)
    return found


def test_an_opt_in_community_shares_only_what_the_patient_consented_to(
    client: TestClient, token: Token
) -> None:
    s = _full_scene(client, token)
    exams = _exams(s)
    romorantin = token("radiologist", org=ROMORANTIN)
    outsiders = _outsiders(token)

    # Not yet informed: every outsider, even in her care, sees none of her exams.
    for who, headers in outsiders.items():
        assert _visible(client, headers, exams) == set(), who
        assert _searched(client, headers, s) == set(), who
    tours = outsiders["radiologist (in care)"]
    priors = client.get(f"/fhir/Patient/{s['t7']}/$priors", headers=tours)
    assert _ids(priors) == set() and _ids(priors, "include") == set()
    count = client.get("/fhir/ImagingStudy", params={"_summary": "count"}, headers=tours)
    assert count.json()["total"] == 1  # Tours' own study only
    # An administrator is outside every producing site: Tours' patient is not informed either.
    admin = client.get("/fhir/ImagingStudy", params={"_summary": "count"})
    assert admin.json()["total"] == 0
    # Her demographics are not an exam; Tours' own patient's exams are Tours'.
    assert client.get(f"/fhir/Patient/{s['a1']}", headers=tours).status_code == 200
    assert client.get(f"/fhir/ImagingStudy/{s['tours_study']}", headers=tours).status_code == 200
    # The producing site and the patient herself see everything.
    assert _visible(client, romorantin, exams) == set(exams)
    assert _visible(client, token("site-system", org=ROMORANTIN), exams) == set(exams)
    for me in (s["a1"], s["t7"]):
        mine = token("patient", patient=me)
        assert _visible(client, mine, exams[:-1]) == set(exams[:-1]), me
    # Each hide is audited: a Role decision (no Consent decided), outcome 4.
    hides = [e for e in authz_events(client, s["a1"]) if e["outcome"] == "4"]
    assert hides and all(NOT_INFORMED in e["outcomeDesc"] for e in hides)
    assert all(subtype(e) == "AuthZ-Role" for e in hides)

    # She consents: shared with the community.
    consent = sharing(s["a1"])
    consent_id = record(client, token, consent)
    for who, headers in outsiders.items():
        assert _visible(client, headers, exams) == set(exams), who
        assert _searched(client, headers, s) == set(exams[:-1]), who

    # She withdraws: hidden again.
    withdraw(client, token, consent, consent_id)
    for who, headers in outsiders.items():
        assert _visible(client, headers, exams) == set(), who

    # Consent recorded on her Tours record counts for her person; an opposition still wins.
    record(client, token, sharing(s["t7"]))
    assert _visible(client, tours, exams) == set(exams)
    record(client, token, opposition(s["a1"], emergency=True))
    for who, headers in outsiders.items():
        assert _visible(client, headers, exams) == set(), who
    assert _visible(client, romorantin, exams) == set(exams)


def test_break_glass_overrides_not_yet_informed_and_is_audited(
    client: TestClient, token: Token
) -> None:
    s = _full_scene(client, token)
    exams = _exams(s)
    # In her care but not yet informed: an emergency purpose alone opens nothing.
    urgent = token("radiologist", sub="dr-urgence", org=TOURS, purpose="ETREAT")
    assert _visible(client, urgent, exams) == set()
    task_id = grant_id(open_grant(client, urgent, s["t7"]))
    assert _visible(client, urgent, exams) == set(exams)
    uses = [
        e
        for e in authz_events(client, s["a1"])
        if e["outcome"] == "0" and "not yet informed" in e["outcomeDesc"]
    ]
    assert uses
    assert all(f"Task/{task_id}" in e["outcomeDesc"] for e in uses)
    described = " ".join(e["outcomeDesc"] for e in uses)
    assert f"ImagingStudy/{s['study']}" in described
    # Outside her care (Blois), a grant opens both the relationship and the community.
    blois = token("clinician", sub="dr-blois", org=BLOIS, purpose="BTG")
    assert _visible(client, blois, exams) == set()
    open_grant(client, blois, s["a1"])
    assert _visible(client, blois, exams) == set(exams)
    # The same doctors without the emergency purpose: hidden.
    assert _visible(client, token("radiologist", sub="dr-urgence", org=TOURS), exams) == set()
    # An opposition without the emergency permit refuses the grant too.
    record(client, token, opposition(s["a1"], emergency=False))
    assert _visible(client, urgent, exams) == set()
    assert _visible(client, blois, exams) == set()


def test_opt_out_and_enforcement_off_on_the_same_data(settings: Settings, token: Token) -> None:
    with other_app(settings, token, community_policy="opt-out") as client:
        s = _full_scene(client, token)
        exams = _exams(s)
        # The default community: shared without any Consent, hidden by an opposition.
        for who, headers in _outsiders(token).items():
            assert _visible(client, headers, exams) == set(exams), who
        record(client, token, opposition(s["a1"], emergency=False))
        for who, headers in _outsiders(token).items():
            assert _visible(client, headers, exams) == set(), who
    with other_app(settings, token, consent_enforcement=False) as client:
        # Enforcement off (opt-in community): neither the opposition nor the missing consent
        # hides anything; the care relationship still does.
        for who, headers in _outsiders(token).items():
            assert _visible(client, headers, exams) == set(exams), who
        blois = token("radiologist", org=BLOIS)
        assert _visible(client, blois, exams) == set()
        # Nor is an opposed exam refused at the door.
        response = client.post(
            "/fhir/ImagingStudy",
            json={
                "resourceType": "ImagingStudy",
                "status": "available",
                "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.250.423.77"}],
                "subject": {"reference": f"Patient/{s['a1']}"},
            },
            headers=token("site-system", org=ROMORANTIN),
        )
        assert response.status_code == 201, response.text


def test_settings_read_the_policy_and_production_refuses_enforcement_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RIX_COMMUNITY_POLICY", "RIX_CONSENT_ENFORCEMENT", "RIX_BREAK_GLASS_HOURS"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().community_policy == "opt-out"
    assert Settings().consent_enforcement is True
    monkeypatch.setenv("RIX_COMMUNITY_POLICY", "opt-in")
    monkeypatch.setenv("RIX_CONSENT_ENFORCEMENT", "false")
    monkeypatch.setenv("RIX_BREAK_GLASS_HOURS", "0.5")
    read = Settings()
    assert (read.community_policy, read.consent_enforcement, read.break_glass_hours) == (
        "opt-in",
        False,
        0.5,
    )
    for bad in ("opt-maybe", ""):
        monkeypatch.setenv("RIX_COMMUNITY_POLICY", bad)
        with pytest.raises(ValueError):
            Settings()
    monkeypatch.setenv("RIX_COMMUNITY_POLICY", "opt-in")
    for hours in ("0", "-1", "73"):
        monkeypatch.setenv("RIX_BREAK_GLASS_HOURS", hours)
        with pytest.raises(ValueError):
            Settings()
    monkeypatch.delenv("RIX_BREAK_GLASS_HOURS")
    production = Settings(
        env="production",
        database_url=f"sqlite:///{tmp_path / 'rix.db'}",
        data_dir=tmp_path / "data",
        consent_enforcement=False,
        audit_key="k" * 32,
    )
    with pytest.raises(RuntimeError, match="RIX_CONSENT_ENFORCEMENT"):
        Runtime.build(production)
    with pytest.raises(RuntimeError, match="RIX_CONSENT_ENFORCEMENT"):
        create_app(production)
