"""The MIRC case: one woman, IPP `x` at CH Romorantin (site 423) and IPP `y` at CHRU Tours
(site 401). With the same qualified INS at both sites, Romorantin's prior-exams query finds the
Tours exams; with only the same name and birth date it does not (an operator decides, a Task
asks them to); an operator's unlink takes the Tours exams out of Romorantin's answer at once."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.identity.support import (
    ROMORANTIN,
    TOURS,
    Token,
    document,
    feed_id,
    found_ids,
    ipp,
    link,
    pair_of,
    patient,
    study,
    tasks,
    unlink,
)

INS = "2580130123456"
MOHR = {"family": "MOHR", "given": "Alice", "birth": "1958-01-30"}


def mohr_at_both_sites(client: TestClient, token: Token, **ins: str) -> tuple[str, str]:
    """Patient x at Romorantin and Patient y at Tours, each site feeding its own record."""
    x = feed_id(client, token, ROMORANTIN, patient(ROMORANTIN, "x", **MOHR, **ins))
    y = feed_id(client, token, TOURS, patient(TOURS, "y", **MOHR, **ins))
    return x, y


def priors(client: TestClient, headers: dict[str, str], **criteria: str) -> set[str]:
    return found_ids(client.get("/fhir/ImagingStudy", params=criteria, headers=headers))


def test_romorantin_finds_the_tours_exams_of_the_same_qualified_ins(
    client: TestClient, token: Token
) -> None:
    x, y = mohr_at_both_sites(client, token, ins=INS, status="QUAL")
    here = study(client, token, ROMORANTIN, x, "1.2.250.423.1")
    tours = study(client, token, TOURS, y, "1.2.250.401.1")
    radiologist = token("radiologist", org=ROMORANTIN)
    found = priors(client, radiologist, **{"patient.identifier": f"{ipp(ROMORANTIN)}|x"})
    assert found == {here, tours}
    # And the other way round: Tours finds the Romorantin exam.
    at_tours = token("radiologist", org=TOURS)
    found = priors(client, at_tours, **{"patient.identifier": f"{ipp(TOURS)}|y"})
    assert found == {here, tours}


def test_priors_by_patient_reference_cover_the_whole_person(
    client: TestClient, token: Token
) -> None:
    x, y = mohr_at_both_sites(client, token, ins=INS, status="QUAL")
    tours = study(client, token, TOURS, y, "1.2.250.401.1")
    report = document(client, token, TOURS, y)
    clinician = token("clinician", org=ROMORANTIN)
    assert priors(client, clinician, patient=f"Patient/{x}") == {tours}
    assert priors(client, clinician, subject=f"Patient/{x}") == {tours}
    assert priors(client, clinician, patient=x) == {tours}
    for criteria in ({"patient": f"Patient/{x}"}, {"subject": f"Patient/{x}"}):
        response = client.get("/fhir/DocumentReference", params=criteria, headers=clinician)
        assert found_ids(response) == {report}, criteria
    response = client.get(
        "/fhir/DocumentReference",
        params={"patient.identifier": f"{ipp(ROMORANTIN)}|x"},
        headers=clinician,
    )
    assert found_ids(response) == {report}


def test_same_name_and_birth_date_without_ins_is_not_consolidated(
    client: TestClient, token: Token
) -> None:
    x, y = mohr_at_both_sites(client, token)
    study(client, token, TOURS, y, "1.2.250.401.1")
    radiologist = token("radiologist", org=ROMORANTIN)
    assert priors(client, radiologist, **{"patient.identifier": f"{ipp(ROMORANTIN)}|x"}) == set()
    assert [pair_of(t) for t in tasks(client, "requested")] == [{x, y}]


def test_operator_link_consolidates_records_without_ins(client: TestClient, token: Token) -> None:
    x, y = mohr_at_both_sites(client, token)
    tours = study(client, token, TOURS, y, "1.2.250.401.1")
    officer = token("identity-officer", name="Irène Officer")
    assert link(client, x, y, headers=officer).status_code == 200
    radiologist = token("radiologist", org=ROMORANTIN)
    assert priors(client, radiologist, **{"patient.identifier": f"{ipp(ROMORANTIN)}|x"}) == {tours}


def test_unlink_takes_the_tours_exams_out_at_once(client: TestClient, token: Token) -> None:
    x, y = mohr_at_both_sites(client, token, ins=INS, status="QUAL")
    here = study(client, token, ROMORANTIN, x, "1.2.250.423.1")
    tours = study(client, token, TOURS, y, "1.2.250.401.1")
    radiologist = token("radiologist", org=ROMORANTIN)
    query = {"patient.identifier": f"{ipp(ROMORANTIN)}|x"}
    assert priors(client, radiologist, **query) == {here, tours}
    officer = token("identity-officer", name="Irène Officer")
    response = unlink(client, x, y, headers=officer, reason="two women, INS collision")
    assert response.status_code == 200, response.text
    assert priors(client, radiologist, **query) == {here}
    assert priors(client, radiologist, patient=f"Patient/{x}") == {here}
