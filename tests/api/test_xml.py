"""FHIR XML on every interaction (FHIR R4 http.html#mime-type, xml.html): XML and JSON give the
same results.

Bodies sent as `application/fhir+xml` are stored exactly as their JSON equivalent; answers asked
for in XML (`_format` or Accept) say what the JSON answer says. The official R4 examples of every
served type make the round trips (the examples package holds JSON only: their XML is made with
app.fhir.xmlio); hand-made resources cover decimals, narrative and extensions on primitives.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from app.auth.tokens import issue_dev_token
from app.fhir import jsonio, xmlio
from tests.api.test_r4_examples import EXAMPLES, exact, example_bytes, without_version
from tests.npm_packages import npm_package

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
XML_CONTENT = f"{FHIR_XML}; charset=utf-8"
NS = "{http://hl7.org/fhir}"
REQUEST_ID_URL = "https://fhir.rix.example/StructureDefinition/request-id"
AS_XML = {"Content-Type": FHIR_XML, "Accept": FHIR_XML}


@pytest.fixture(scope="session")
def examples() -> Path:
    return npm_package("hl7.fhir.r4.examples@4.0.1")


# -- helpers ----------------------------------------------------------------------------------


def to_xml(resource: dict[str, Any]) -> bytes:
    return xmlio.dumps(resource).encode("utf-8")


def from_xml(response: httpx.Response, context: str = "") -> Any:
    """The JSON form of an XML answer, decimals as written (compare with `exact`)."""
    kind = response.headers.get("content-type")
    assert kind == XML_CONTENT, f"{context}: content-type {kind!r}: {response.text[:300]}"
    root = ET.fromstring(response.content)  # well-formed, independently of xmlio
    assert root.tag.startswith(NS), f"{context}: root {root.tag}"
    return exact(jsonio.dumps(xmlio.loads(response.content)))


def from_json(response: httpx.Response, context: str = "") -> Any:
    kind = response.headers.get("content-type", "").split(";")[0]
    assert kind == FHIR_JSON, f"{context}: content-type {kind!r}: {response.text[:300]}"
    return exact(response.content)


def xml_outcome(response: httpx.Response, status: int, context: str = "") -> dict[str, Any]:
    """An XML OperationOutcome with `status` carrying the request id."""
    assert response.status_code == status, f"{context}: {response.status_code} {response.text}"
    outcome: dict[str, Any] = from_xml(response, context)
    assert outcome["resourceType"] == "OperationOutcome", context
    assert outcome["issue"], context
    ids = [e["valueString"] for e in outcome.get("extension", []) if e["url"] == REQUEST_ID_URL]
    assert ids == [response.headers["x-request-id"]], context
    return outcome


def as_published(resource: dict[str, Any]) -> dict[str, Any]:
    """What must equal the published example: not meta.versionId and meta.lastUpdated, nor
    Patient.link, which identity vigilance manages (README "FHIR API", "Identity")."""
    out = without_version(resource)
    return {k: v for k, v in out.items() if not (k == "link" and out["resourceType"] == "Patient")}


PAGE_PINS = ("_snapshot", "_horizon")


def without_bundle_meta(bundle: dict[str, Any]) -> dict[str, Any]:
    """A Bundle less its meta (lastUpdated is the time it was made)."""
    return {k: v for k, v in bundle.items() if k != "meta"}


def site_headers(client: TestClient) -> dict[str, str]:
    """A site system's token: AuditEvents are created by site systems only."""
    rt = client.app.state.rix  # type: ignore[attr-defined]
    jwt = issue_dev_token(
        rt.settings, subject="site-pacs", name="Site PACS", role="site-system", organization_id="s"
    )
    return {"Authorization": f"Bearer {jwt}"}


def write(
    client: TestClient, resource: dict[str, Any], body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """PUT the resource at its id, or POST it (as a site system) for create-only types."""
    type_name = resource["resourceType"]
    rt = client.app.state.rix  # type: ignore[attr-defined]
    if "update" in rt.registry.get(type_name).interactions:
        return client.put(f"/fhir/{type_name}/{resource['id']}", content=body, headers=headers)
    return client.post(
        f"/fhir/{type_name}", content=body, headers={**headers, **site_headers(client)}
    )


def location(response: httpx.Response) -> str:
    return urlsplit(response.headers["location"]).path.split("/_history/")[0]


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **fields}


# -- the official examples --------------------------------------------------------------------


def xml_in_problem(client: TestClient, raw: bytes) -> str | None:
    """XML create -> JSON read (and XML answer, XML read): what differs, if anything."""
    published, resource = exact(raw), jsonio.loads(raw)
    ref = f"{published['resourceType']}/{published['id']}"
    written = write(client, resource, to_xml(resource), AS_XML)
    if written.status_code != 201:
        return f"XML write answered {written.status_code}: {written.text[:600]}"
    url = location(written)
    as_json = from_json(client.get(url), ref)
    if as_published(as_json) != as_published(dict(published, id=as_json["id"])):
        return f"reads back different in JSON: {json.dumps(as_json)[:600]}"
    answer = from_xml(written, ref)
    if as_published(answer) != as_published(dict(published, id=answer["id"])):
        return f"the XML answer to the write differs: {json.dumps(answer)[:600]}"
    if from_xml(client.get(url, headers={"Accept": FHIR_XML}), ref) != as_json:
        return "the XML read differs from the JSON read"
    return None


def json_in_problem(client: TestClient, raw: bytes) -> str | None:
    """JSON create (the published bytes) -> XML read: what differs, if anything."""
    published = exact(raw)
    ref = f"{published['resourceType']}/{published['id']}"
    written = write(client, published, raw, {"Content-Type": FHIR_JSON})
    if written.status_code != 201:
        return f"JSON write answered {written.status_code}: {written.text[:600]}"
    url = location(written)
    as_xml = from_xml(client.get(url, params={"_format": "xml"}), ref)
    if as_published(as_xml) != as_published(dict(published, id=as_xml["id"])):
        return f"reads back different in XML: {json.dumps(as_xml)[:600]}"
    if as_xml != from_json(client.get(url), ref):
        return "the XML read differs from the JSON read"
    return None


@pytest.mark.parametrize("way", ["xml-in", "json-in"])
@pytest.mark.parametrize("type_name", list(EXAMPLES))
def test_examples_round_trip_through_xml(
    client: TestClient, examples: Path, type_name: str, way: str
) -> None:
    """Every example of a served type, written in one format and read in the other (one app
    per type and way: two copies of a Patient would be linked as one person)."""
    check = xml_in_problem if way == "xml-in" else json_in_problem
    problems = {}
    for id_ in EXAMPLES[type_name]:
        ref = f"{type_name}/{id_}"
        if problem := check(client, example_bytes(examples, ref)):
            problems[ref] = problem
    assert not problems, "\n".join(f"{ref}: {text}" for ref, text in problems.items())


# -- what JSON writes in its own way ----------------------------------------------------------

DIV = (
    '<div xmlns="http://www.w3.org/1999/xhtml"><p>Jos&#233; &amp; <b>Ana</b> &lt;3</p>'
    '<br/><table class="x"><tr><td title="a &quot;b&quot; &gt; c">1</td></tr></table>\n</div>'
)
TRICKY = patient(
    id="tricky",
    text={"status": "generated", "div": DIV},
    name=[{"family": "O'Brien & Sons <Ltd>", "given": ["Ana", "Maria", "Zoé"]}],
    _birthDate={"id": "bd", "extension": [{"url": "http://x/ext", "valueDecimal": 0.10}]},
    birthDate="1970-01-01",
)
TRICKY["name"][0]["_given"] = [None, {"extension": [{"url": "http://x/pos", "valueInteger": 2}]}]
TRICKY["extension"] = [
    {"url": "http://x/weight", "valueQuantity": {"value": 1.50, "unit": "kg"}},
    {"url": "http://x/note", "valueString": 'line 1\nline 2\ttabbed "quoted"'},
]
TRICKY["multipleBirthInteger"] = 2
TRICKY["active"] = False
TRICKY_JSON = (
    json.dumps(TRICKY)
    .replace('"valueDecimal": 0.1', '"valueDecimal": 0.10')
    .replace('"value": 1.5', '"value": 1.50')
    .encode()
)


def test_decimals_narrative_and_primitive_extensions_survive(client: TestClient) -> None:
    sent = exact(TRICKY_JSON)
    assert sent["extension"][0]["valueQuantity"]["value"] == "1.50"  # the test's own premise
    # JSON in, XML out.
    created = client.put(
        "/fhir/Patient/tricky", content=TRICKY_JSON, headers=AS_XML | {"Content-Type": FHIR_JSON}
    )
    assert created.status_code == 201, created.text
    assert b'value="1.50"' in created.content and b'value="0.10"' in created.content
    birth = b'<birthDate id="bd" value="1970-01-01"><extension url="http://x/ext">'
    assert birth in created.content
    assert DIV.encode() in created.content  # the narrative leaves as it was written
    assert b'value="line 1&#10;line 2&#9;tabbed &quot;quoted&quot;"' in created.content
    root = ET.fromstring(created.content)
    given = root.findall(f"{NS}name/{NS}given")
    assert [g.get("value") for g in given] == ["Ana", "Maria", "Zoé"]
    assert given[1].find(f"{NS}extension") is not None
    note = root.find(f"{NS}extension[@url='http://x/note']/{NS}valueString")
    assert note is not None and note.get("value") == 'line 1\nline 2\ttabbed "quoted"'
    stored = from_xml(created)
    assert without_version(stored) == sent
    # XML in (what the server just wrote), JSON out: the same resource again.
    xml_body = created.content.replace(b'value="tricky"', b'value="tricky2"', 1)
    again = client.put(
        "/fhir/Patient/tricky2", content=xml_body, headers={"Content-Type": FHIR_XML}
    )
    assert again.status_code == 201, again.text
    assert without_version(from_json(again)) == dict(sent, id="tricky2")
    assert b'"value":1.50' in again.content and b'"valueDecimal":0.10' in again.content
    assert from_json(again)["text"]["div"] == DIV


def test_xml_written_by_hand_is_understood(client: TestClient) -> None:
    """XML as another system writes it: comments, a declaration, other namespaces' attributes,
    indentation, a narrative declaring its namespace, contained resources, element order."""
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<Patient xmlns="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://hl7.org/fhir patient.xsd">
  <id value="hand"/>
  <text>
    <status value="generated"/>
    <div xmlns="http://www.w3.org/1999/xhtml"><p>Hello <i>world</i></p></div>
  </text>
  <contained>
    <Organization>
      <id value="org1"/>
      <name value="Clinique du Parc"/>
    </Organization>
  </contained>
  <active value="true"/>
  <name>
    <use value="official"/>
    <family value="Durand"/>
    <given value="Paul"/>
    <given value="Jean"/>
  </name>
  <birthDate value="1980-05-06">
    <extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">
      <valueDateTime value="1980-05-06T14:35:45-05:00"/>
    </extension>
  </birthDate>
  <multipleBirthInteger value="1"/>
  <managingOrganization>
    <reference value="#org1"/>
  </managingOrganization>
</Patient>"""
    response = client.put("/fhir/Patient/hand", content=body, headers={"Content-Type": "text/xml"})
    assert response.status_code == 201, response.text
    assert from_json(response) | {"meta": None} == {
        "resourceType": "Patient",
        "id": "hand",
        "meta": None,
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Hello <i>world</i></p></div>',
        },
        "contained": [{"resourceType": "Organization", "id": "org1", "name": "Clinique du Parc"}],
        "active": True,
        "name": [{"use": "official", "family": "Durand", "given": ["Paul", "Jean"]}],
        "birthDate": "1980-05-06",
        "_birthDate": {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                    "valueDateTime": "1980-05-06T14:35:45-05:00",
                }
            ]
        },
        "multipleBirthInteger": 1,
        "managingOrganization": {"reference": "#org1"},
    }
    # Elements leave in the order of the definition, whatever order the JSON had.
    shuffled = {
        "birthDate": "1990-01-01",
        "id": "order",
        "gender": "male",
        "resourceType": "Patient",
    }
    assert client.put("/fhir/Patient/order", json=shuffled).status_code == 201
    root = ET.fromstring(client.get("/fhir/Patient/order", params={"_format": "xml"}).content)
    assert [child.tag.removeprefix(NS) for child in root] == ["id", "meta", "gender", "birthDate"]


# -- search, history, transaction -------------------------------------------------------------


def service_request(subject: str, value: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": subject},
        "quantityQuantity": {"value": value, "unit": "mL"},
    }


def test_search_and_history_bundles_are_the_same_in_xml(client: TestClient) -> None:
    for i in range(3):
        body = jsonio.dumps(patient(id=f"p{i}", name=[{"family": "Xmlson", "given": [f"G{i}"]}]))
        assert client.put(f"/fhir/Patient/p{i}", content=body).status_code == 201
        sr = service_request(f"Patient/p{i}", "PLACEHOLDER")
        text = jsonio.dumps(sr).replace('"PLACEHOLDER"', f"{i}.50")
        assert client.post("/fhir/ServiceRequest", content=text).status_code == 201
    patched = [{"op": "replace", "path": "/name/0/family", "value": "Xmlsen"}]
    headers = {"Content-Type": "application/json-patch+json"}
    assert client.patch("/fhir/Patient/p1", json=patched, headers=headers).status_code == 200
    assert client.delete("/fhir/Patient/p2").status_code == 204
    searches = [
        ("/fhir/Patient", {"family": "xmls", "_count": "1", "_sort": "given"}),
        ("/fhir/ServiceRequest", {"_include": "ServiceRequest:subject", "_sort": "_id"}),
        ("/fhir/Patient/_history", {}),
        ("/fhir/Patient/p1/_history", {}),
        ("/fhir/_history", {"_count": "2"}),
    ]
    for path, params in searches:
        # Both pinned to one snapshot (each request also writes its audit record).
        first = from_json(client.get(path, params=params), path)
        first_page = next(lk["url"] for lk in first["link"] if lk["relation"] == "first")
        # (and to its horizon, which the paging links carry: tests/test_registry_sync.py)
        pins = parse_qs(urlsplit(first_page).query)
        pinned = params | {k: pins[k][0] for k in PAGE_PINS if k in pins}
        as_json = from_json(client.get(path, params=pinned), path)
        as_xml = from_xml(client.get(path, params=pinned, headers={"Accept": FHIR_XML}), path)
        assert without_bundle_meta(as_xml) == without_bundle_meta(as_json), path
    # Decimals as written, in the included and matched resources.
    bundle = from_xml(client.get("/fhir/ServiceRequest", params={"_sort": "_id", "_format": "xml"}))
    assert sorted(e["resource"]["quantityQuantity"]["value"] for e in bundle["entry"]) == [
        "0.50",
        "1.50",
        "2.50",
    ]
    # A client paging with _format keeps getting XML.
    first = client.get("/fhir/Patient", params={"family": "xmls", "_count": "1", "_format": "xml"})
    next_url = next(lk["url"] for lk in from_xml(first)["link"] if lk["relation"] == "next")
    assert parse_qs(urlsplit(next_url).query)["_format"] == ["xml"]
    second = client.get(next_url)
    assert from_xml(second)["entry"][0]["resource"]["id"] == "p1"
    # POST _search answers in XML too.
    posted = client.post(
        "/fhir/Patient/_search",
        content="family=xmls",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": FHIR_XML},
    )
    assert from_xml(posted)["total"] == 2


def test_transaction_posted_in_xml(client: TestClient) -> None:
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5b8a2b9e-4d1c-4a39-9c46-3d0f6f0c6a11",
                "resource": patient(name=[{"family": "Transacted"}], birthDate="1999-12-31"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": service_request("urn:uuid:5b8a2b9e-4d1c-4a39-9c46-3d0f6f0c6a11", "x"),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }
    body = to_xml(transaction).replace(b'value="x"', b'value="10.250"')
    response = client.post("/fhir", content=body, headers=AS_XML)
    assert response.status_code == 200, response.text
    result = from_xml(response)
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert [s.split()[0] for s in statuses] == ["201", "201"]
    created = [e["resource"] for e in result["entry"]]
    assert created[1]["subject"]["reference"] == f"Patient/{created[0]['id']}"
    assert created[1]["quantityQuantity"]["value"] == "10.250"
    read = from_json(client.get(f"/fhir/ServiceRequest/{created[1]['id']}"))
    assert read == created[1]
    # The same Bundle in JSON gives the same kind of answer, in JSON.
    text = jsonio.dumps(transaction).replace('"value":"x"', '"value":10.250')
    again = client.post("/fhir", content=text)
    assert [e["response"]["status"] for e in from_json(again)["entry"]] == statuses


# -- the other interactions -------------------------------------------------------------------


def test_http_semantics_are_kept_in_xml(client: TestClient) -> None:
    identifier = [{"system": "urn:x", "value": "1"}]
    body = to_xml(patient(identifier=identifier, gender="female"))
    minimal = client.post(
        "/fhir/Patient", content=body, headers=AS_XML | {"Prefer": "return=minimal"}
    )
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["etag"] == 'W/"1"' and minimal.headers["last-modified"]
    url = location(minimal)
    assert url.startswith("/fhir/Patient/")
    rid = url.rsplit("/", 1)[1]
    outcome = client.put(
        url,
        content=to_xml(patient(id=rid, identifier=identifier, gender="male")),
        headers=AS_XML | {"Prefer": "return=OperationOutcome", "If-Match": 'W/"1"'},
    )
    assert outcome.status_code == 200 and outcome.headers["etag"] == 'W/"2"'
    assert from_xml(outcome)["issue"][0]["severity"] == "information"
    stale_body = to_xml(patient(id=rid, identifier=identifier, gender="female"))
    stale = client.put(url, content=stale_body, headers=AS_XML | {"If-Match": 'W/"1"'})
    xml_outcome(stale, 412, "stale If-Match")
    not_modified = client.get(url, headers={"Accept": FHIR_XML, "If-None-Match": 'W/"2"'})
    assert not_modified.status_code == 304 and not_modified.headers["etag"] == 'W/"2"'
    vread = client.get(f"{url}/_history/1", params={"_format": "xml"})
    assert from_xml(vread)["gender"] == "female"
    assert vread.headers["etag"] == 'W/"1"' and vread.headers["last-modified"]
    summary = from_xml(client.get(url, params={"_elements": "gender", "_format": "xml"}))
    assert summary["gender"] == "male" and "identifier" not in summary
    assert summary["meta"]["tag"][0]["code"] == "SUBSETTED"
    # Conditional create finds the existing record (If-None-Exist), conditional update changes it.
    existing = client.post(
        "/fhir/Patient", content=body, headers=AS_XML | {"If-None-Exist": "identifier=urn:x|1"}
    )
    assert existing.status_code == 200 and from_xml(existing)["id"] == rid
    updated = client.put(
        "/fhir/Patient",
        params={"identifier": "urn:x|1"},
        content=to_xml(patient(identifier=identifier, gender="other")),
        headers=AS_XML,
    )
    assert updated.status_code == 200 and from_xml(updated)["gender"] == "other"
    # JSON Patch stays JSON; its answer can be XML.
    ops = [{"op": "replace", "path": "/gender", "value": "unknown"}]
    patched = client.patch(
        url,
        content=json.dumps(ops),
        headers={"Content-Type": "application/json-patch+json", "Accept": FHIR_XML},
    )
    assert patched.status_code == 200 and from_xml(patched)["gender"] == "unknown"
    xml_patch = client.patch(url, content=body, headers=AS_XML)
    xml_outcome(xml_patch, 415, "XML patch")
    gone = client.delete("/fhir/Patient", params={"identifier": "urn:x|nobody", "_format": "xml"})
    assert from_xml(gone)["issue"][0]["severity"] == "information"
    metadata = client.get("/fhir/metadata", params={"_format": "xml"})
    statement = from_xml(metadata)
    assert statement["resourceType"] == "CapabilityStatement"
    assert {FHIR_XML, "xml", FHIR_JSON, "json"} <= set(statement["format"])


def test_operations_in_xml(client: TestClient) -> None:
    system = "https://fhir.rix.example/sid/ipp/423"
    record = patient(
        identifier=[{"system": system, "value": "X-1"}],
        name=[{"family": "Dupont", "given": ["Jean"]}],
        birthDate="1970-03-04",
    )
    assert client.post("/fhir/Patient", json=record).status_code == 201
    pix = {"sourceIdentifier": f"{system}|X-1"}
    as_json = from_json(client.get("/fhir/Patient/$ihe-pix", params=pix))
    as_xml = from_xml(client.get("/fhir/Patient/$ihe-pix", params=pix | {"_format": "xml"}))
    assert as_xml == as_json and as_xml["resourceType"] == "Parameters"
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "sourceIdentifier", "valueIdentifier": {"system": system, "value": "X-1"}}
        ],
    }
    posted = client.post("/fhir/Patient/$ihe-pix", content=to_xml(parameters), headers=AS_XML)
    assert from_xml(posted) == as_json
    match = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "resource",
                "resource": patient(
                    name=[{"family": "Dupont", "given": ["Jean"]}], birthDate="1970-03-04"
                ),
            }
        ],
    }
    matched_json = from_json(client.post("/fhir/Patient/$match", json=match))
    matched_xml = client.post("/fhir/Patient/$match", content=to_xml(match), headers=AS_XML)
    assert without_bundle_meta(from_xml(matched_xml)) == without_bundle_meta(matched_json)
    assert matched_json["entry"], "the Patient is a candidate"


# -- errors and negotiation -------------------------------------------------------------------


def test_errors_are_xml_operation_outcomes(client: TestClient) -> None:
    created = client.post("/fhir/Patient", json=patient())
    url = location(created)
    xml = {"Accept": FHIR_XML}
    xml_outcome(client.get("/fhir/Patient/nobody", headers=xml), 404, "unknown id")
    xml_outcome(client.get("/fhir/Patient", params={"shoe": "42", "_format": "xml"}), 400, "param")
    xml_outcome(client.get("/fhir/Patient", headers=xml | {"Authorization": ""}), 401, "no token")
    xml_outcome(client.request("DELETE", "/fhir/metadata", headers=xml), 405, "method")
    xml_outcome(client.get("/fhir/Nothing/1", headers=xml), 404, "unknown type")
    assert client.delete(url).status_code == 204
    xml_outcome(client.get(url, headers=xml), 410, "deleted")
    invalid = client.post("/fhir/Patient", content=to_xml(patient(gender="robot")), headers=AS_XML)
    outcome = xml_outcome(invalid, 400, "binding")
    assert ["Patient.gender"] in [i.get("expression") for i in outcome["issue"]]
    text = client.post(
        "/fhir/Patient",
        content=b"gender=male",
        headers={"Content-Type": "text/plain", "Accept": FHIR_XML},
    )
    xml_outcome(text, 415, "text/plain")
    # The same failures in JSON say the same things.
    as_json = client.post("/fhir/Patient", json=patient(gender="robot"))
    assert as_json.status_code == 400
    assert [i["expression"] for i in as_json.json()["issue"]] == [
        i["expression"] for i in outcome["issue"]
    ]
    # An XML body sent without a Content-Type is recognised as XML.
    sniffed = client.post(
        "/fhir/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'>", headers=xml
    )
    assert "well-formed XML" in json.dumps(xml_outcome(sniffed, 400, "no Content-Type"))
    # Asked for a format that is not served: 406, in JSON.
    refused = client.get(url, headers={"Accept": "text/html"})
    assert refused.status_code == 406
    assert refused.headers["content-type"].startswith(FHIR_JSON)


BAD_BODIES = [
    pytest.param(
        b"<Patient xmlns='http://hl7.org/fhir'><active value='true'>", "well-formed", id="truncated"
    ),
    pytest.param(b"<Patient><active value='true'/></Patient>", "namespace", id="no-namespace"),
    pytest.param(
        b"<Patient xmlns='http://hl7.org/fhir/v2'><active value='true'/></Patient>",
        "namespace",
        id="wrong-namespace",
    ),
    pytest.param(
        b"<Pateint xmlns='http://hl7.org/fhir'/>", "not a FHIR R4 resource", id="unknown-root"
    ),
    pytest.param(b"<html xmlns='http://www.w3.org/1999/xhtml'/>", "namespace", id="xhtml-root"),
    pytest.param(
        b"<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]>"
        b"<Patient xmlns='http://hl7.org/fhir'><gender value='&lol2;'/></Patient>",
        "DOCTYPE",
        id="entities",
    ),
    pytest.param(
        b"<Patient xmlns='http://hl7.org/fhir'><gender value='male'/>male</Patient>",
        "unexpected text",
        id="text",
    ),
    pytest.param(
        b"<Patient xmlns='http://hl7.org/fhir'><gender value='male'/><gender value='other'/>"
        b"</Patient>",
        "only once",
        id="repeated",
    ),
    pytest.param(
        b"<Patient xmlns='http://hl7.org/fhir'><name><family value='A' id='x' foo='y'/></name>"
        b"</Patient>",
        "unexpected attribute 'foo'",
        id="attribute",
    ),
    pytest.param(
        b"<Patient xmlns='http://hl7.org/fhir'><favouriteColour value='blue'/></Patient>",
        "Patient.favouriteColour",
        id="unknown-element",
    ),
    pytest.param(
        b"<Patient xmlns='http://hl7.org/fhir'><active value='yes'/></Patient>",
        "Patient.active",
        id="not-a-boolean",
    ),
    pytest.param(
        b"<Organization xmlns='http://hl7.org/fhir'><name value='A'/></Organization>",
        "does not match the endpoint",
        id="other-type",
    ),
    pytest.param(b"", "empty", id="empty"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_xml_is_a_400_and_stores_nothing(client: TestClient, body: bytes, message: str) -> None:
    headers = {"Content-Type": FHIR_XML, "Accept": FHIR_XML}
    response = client.post("/fhir/Patient", content=body, headers=headers)
    outcome = xml_outcome(response, 400, message)
    assert message in json.dumps(outcome), outcome
    assert from_json(client.get("/fhir/Patient/_history"))["total"] == 0


NEGOTIATION = [
    # (_format, Accept, answer)
    (None, None, FHIR_JSON),
    (None, "*/*", FHIR_JSON),
    (None, "application/*", FHIR_JSON),
    (None, FHIR_XML, FHIR_XML),
    (None, "application/xml", FHIR_XML),
    (None, "text/xml", FHIR_XML),
    (None, "application/fhir+xml; fhirVersion=4.0", FHIR_XML),
    (None, "application/json", FHIR_JSON),
    (None, f"{FHIR_JSON};q=0.5, {FHIR_XML}", FHIR_XML),
    (None, f"{FHIR_XML};q=0.2, application/json;q=0.9", FHIR_JSON),
    (None, f"{FHIR_XML};q=0, */*", FHIR_JSON),
    (None, "*/*, application/fhir+xml", FHIR_XML),
    (None, "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", FHIR_XML),
    ("xml", None, FHIR_XML),
    ("xml", FHIR_JSON, FHIR_XML),
    ("text/xml", None, FHIR_XML),
    ("application/xml", FHIR_JSON, FHIR_XML),
    (FHIR_XML, None, FHIR_XML),
    ("json", FHIR_XML, FHIR_JSON),
    ("application/json", FHIR_XML, FHIR_JSON),
    (FHIR_JSON, FHIR_XML, FHIR_JSON),
]


def test_format_parameter_overrides_accept(client: TestClient) -> None:
    rid = client.post("/fhir/Patient", json=patient(gender="female")).json()["id"]
    for fmt, accept, answer in NEGOTIATION:
        params = {"_format": fmt} if fmt else {}
        headers = {"Accept": accept} if accept else {}
        for path in (f"/fhir/Patient/{rid}", "/fhir/Patient", "/fhir/metadata"):
            response = client.get(path, params=params, headers=headers)
            case = f"{path} _format={fmt} Accept={accept}"
            assert response.status_code == 200, f"{case}: {response.text}"
            body = from_xml(response, case) if answer == FHIR_XML else from_json(response, case)
            assert body["resourceType"] in ("Patient", "Bundle", "CapabilityStatement"), case
    # `_format=application/fhir+xml` written unencoded in a URL: its "+" reads as a space.
    raw = client.get(f"/fhir/Patient/{rid}?_format=application/fhir+xml")
    assert from_xml(raw)["gender"] == "female"
    for fmt, accept in (
        ("html", None),
        ("turtle", FHIR_XML),
        (None, "text/html"),
        (None, f"{FHIR_XML};q=0"),
    ):
        params = {"_format": fmt} if fmt else {}
        headers = {"Accept": accept} if accept else {}
        response = client.get(f"/fhir/Patient/{rid}", params=params, headers=headers)
        assert response.status_code == 406, f"_format={fmt} Accept={accept}"
        assert from_json(response)["resourceType"] == "OperationOutcome"


def test_xml_request_bodies_in_every_xml_media_type(client: TestClient) -> None:
    for i, kind in enumerate(
        (
            FHIR_XML,
            f"{FHIR_XML}; charset=UTF-8",
            "application/xml",
            "text/xml",
            "application/xml+fhir",
        )
    ):
        body = to_xml(patient(id=f"k{i}", gender="other"))
        response = client.put(f"/fhir/Patient/k{i}", content=body, headers={"Content-Type": kind})
        assert response.status_code == 201, f"{kind}: {response.text}"
        assert from_json(response, kind)["gender"] == "other"
