"""FHIR XML <-> JSON conversion (FHIR R4 xml.html): pure unit tests of app/fhir/xmlio.py (no
database, no HTTP). The HTTP side is tests/api/test_xml.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.errors import Invalid
from app.fhir import jsonio, xmlio
from tests.npm_packages import npm_package

F = 'xmlns="http://hl7.org/fhir"'
X = 'xmlns="http://www.w3.org/1999/xhtml"'
NS = "{http://hl7.org/fhir}"


def patient(inner: str) -> bytes:
    return f"<Patient {F}>{inner}</Patient>".encode()


def read(xml: str | bytes) -> Any:
    return xmlio.loads(xml.encode("utf-8") if isinstance(xml, str) else xml)


def tags(xml: str) -> list[str]:
    return [child.tag.removeprefix(NS) for child in ET.fromstring(xml.encode())]


# -- every R4 resource type -------------------------------------------------------------------


def test_r4_examples_of_every_resource_type_round_trip() -> None:
    """JSON -> XML -> JSON gives the example back exactly (up to three examples of each of the
    140 resource types the package has examples for: nearly every layout is exercised)."""
    package = npm_package("hl7.fhir.r4.examples@4.0.1")
    by_type: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(package.glob("*.json")):
        name = path.name.split("-", 1)[0]
        if name in xmlio.resource_types() and len(by_type[name]) < 3:
            by_type[name].append(path)
    assert len(by_type) >= 140
    problems = []
    for paths in by_type.values():
        for path in paths:
            resource = jsonio.loads(path.read_bytes())
            if not isinstance(resource, dict) or resource.get("resourceType") is None:
                continue
            text = xmlio.dumps(resource)
            ET.fromstring(text.encode())  # well-formed for an independent parser
            if xmlio.loads(text.encode()) != resource:
                problems.append(path.name)
    assert not problems


# -- writing ----------------------------------------------------------------------------------


def test_elements_leave_in_definition_order_with_attributes_where_xml_has_them() -> None:
    patient = {
        "gender": "male",
        "resourceType": "Patient",
        "extension": [{"valueCode": "x", "url": "http://e", "id": "e1"}],
        "name": [{"given": ["A"], "family": "B", "id": "n1"}],
        "id": "p1",
    }
    text = xmlio.dumps(patient)
    assert text.startswith(f'<?xml version="1.0" encoding="UTF-8"?><Patient {F}><id value="p1"/>')
    assert tags(text) == ["id", "extension", "name", "gender"]
    assert '<extension id="e1" url="http://e"><valueCode value="x"/></extension>' in text
    assert '<name id="n1"><family value="B"/><given value="A"/></name>' in text


def test_primitives_are_written_as_json_has_them() -> None:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "t"},
        "valueQuantity": {"value": Decimal("1.50")},
        "component": [
            {"code": {"text": "a"}, "valueInteger": 0},
            {"code": {"text": "b"}, "valueBoolean": False},
            {"code": {"text": "c"}, "valueQuantity": {"value": Decimal("1E+2")}},
        ],
        "note": [{"text": 'a\nb\r\tc & <d> "e"\x01'}],
    }
    text = xmlio.dumps(resource)
    for part in ('value="1.50"', 'value="0"', 'value="false"', 'value="1E+2"'):
        assert part in text
    assert 'value="a&#10;b&#13;&#9;c &amp; &lt;d&gt; &quot;e&quot;\ufffd"' in text
    note = ET.fromstring(text.encode()).find(f"{NS}note/{NS}text")
    assert note is not None and note.get("value") == 'a\nb\r\tc & <d> "e"\ufffd'
    assert read(text)["valueQuantity"]["value"].as_tuple() == Decimal("1.50").as_tuple()


def test_repeating_primitives_with_ids_and_extensions() -> None:
    name = {
        "given": ["a", None, "c"],
        "_given": [None, {"extension": [{"url": "u", "valueString": "x"}]}, {"id": "g3"}],
    }
    text = xmlio.dumps({"resourceType": "Patient", "name": [name]})
    assert (
        '<given value="a"/><given><extension url="u"><valueString value="x"/></extension>'
        '</given><given id="g3" value="c"/>'
    ) in text
    assert read(text)["name"] == [name]
    only_extensions = {"_given": [{"id": "g1"}, {"id": "g2"}]}
    assert read(xmlio.dumps({"resourceType": "Patient", "name": [only_extensions]}))["name"] == [
        only_extensions
    ]


def test_narrative() -> None:
    div = f"<div {X}><p>Jos&#233; &amp; <b>Ana</b></p><br/></div>"
    text = xmlio.dumps({"resourceType": "Patient", "text": {"status": "generated", "div": div}})
    assert f'<status value="generated"/>{div}</text>' in text  # as written
    assert read(text)["text"]["div"] == div
    bare = xmlio.dumps({"resourceType": "Patient", "text": {"div": "<div>no namespace</div>"}})
    assert f"<div {X}>no namespace</div>" in bare
    broken = xmlio.dumps({"resourceType": "Patient", "text": {"div": "<div>&nbsp; <b>"}})
    assert f"<div {X}>&lt;div&gt;&amp;nbsp; &lt;b&gt;</div>" in broken


# -- reading ----------------------------------------------------------------------------------


def test_contained_and_bundle_resources_are_wrapped() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:1",
                "resource": {
                    "resourceType": "Patient",
                    "contained": [{"resourceType": "Organization", "id": "o"}],
                    "managingOrganization": {"reference": "#o"},
                },
            }
        ],
    }
    text = xmlio.dumps(bundle)
    assert (
        '<resource><Patient><contained><Organization><id value="o"/></Organization></contained>'
    ) in text
    assert read(text) == bundle


@pytest.mark.parametrize(
    ("xml", "div"),
    [
        pytest.param(f"<div {X}/>", f"<div {X}/>", id="self-closing"),
        pytest.param(f'<div {X} title="a>b"/>', f'<div {X} title="a>b"/>', id="gt-in-attribute"),
        pytest.param(f"<div {X}><br/></div  >", f"<div {X}><br/></div  >", id="empty-child"),
        pytest.param(
            '<h:div xmlns:h="http://www.w3.org/1999/xhtml"><h:p>x</h:p></h:div>',
            '<h:div xmlns:h="http://www.w3.org/1999/xhtml"><h:p>x</h:p></h:div>',
            id="prefixed",
        ),
    ],
)
def test_the_narrative_is_kept_as_written(xml: str, div: str) -> None:
    resource = read(f"<Patient {F}><text><status value='generated'/>{xml}</text></Patient>")
    assert resource["text"]["div"] == div


def test_namespace_declarations_a_div_relies_on_are_copied_onto_it() -> None:
    hoisted = read(
        f'<Patient {F} xmlns:h="http://www.w3.org/1999/xhtml"><text><h:div><h:p>x</h:p>'
        "</h:div></text></Patient>"
    )
    assert hoisted["text"]["div"] == (
        '<h:div xmlns:h="http://www.w3.org/1999/xhtml"><h:p>x</h:p></h:div>'
    )
    prefixed_fhir = read(
        f'<f:Patient xmlns:f="http://hl7.org/fhir" {X}><f:text><div><p>x</p></div></f:text>'
        "</f:Patient>"
    )
    assert prefixed_fhir == {"resourceType": "Patient", "text": {"div": f"<div {X}><p>x</p></div>"}}


def test_encodings_and_byte_order_mark() -> None:
    latin = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>'
        f"<Patient {F}><text><div {X}>caf\xe9</div></text><name><family value='L\xe8'/></name>"
        "</Patient>"
    ).encode("latin-1")
    assert read(latin) == {
        "resourceType": "Patient",
        "text": {"div": f"<div {X}>café</div>"},
        "name": [{"family": "Lè"}],
    }
    bom = b"\xef\xbb\xbf" + f"<Patient {F}>\r\n<active value='true'/>\r\n</Patient>".encode()
    assert read(bom) == {"resourceType": "Patient", "active": True}


def test_values_become_json_types() -> None:
    resource = read(
        f"<Patient {F}><active value='true'/><multipleBirthInteger value='2'/>"
        "<extension url='u'><valueDecimal value='-0.010'/></extension>"
        "<extension url='v'><valuePositiveInt value='x'/></extension></Patient>"
    )
    assert resource["active"] is True and resource["multipleBirthInteger"] == 2
    assert jsonio.dumps(resource["extension"][0]) == '{"url":"u","valueDecimal":-0.010}'
    assert resource["extension"][1]["valuePositiveInt"] == "x"  # left for validation to refuse


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"", "not well-formed"),
        (b"<Patient", "not well-formed"),
        (b"<Patient/>", "in no namespace"),
        (b"<Patient xmlns='http://hl7.org/fhir/x'/>", "in the namespace 'http://hl7.org/fhir/x'"),
        (b"<Resource xmlns='http://hl7.org/fhir'/>", "not a FHIR R4 resource type"),
        (b"<!DOCTYPE Patient><Patient xmlns='http://hl7.org/fhir'/>", "DOCTYPE"),
        (b"<Patient xmlns='http://hl7.org/fhir' id='x'/>", "unexpected attribute 'id'"),
        (patient("<id>x</id>"), "unexpected text 'x'"),
        (patient("<name><id value='x'/></name>"), "'id' is an attribute here"),
        (patient("<active value='true'/><active/>"), "Patient.active: may appear only once"),
        (patient("<contained/>"), "Patient.contained: must hold a resource"),
        (patient("<contained><Basic/><Basic/></contained>"), "holds one resource"),
        (
            patient("<name><x:family xmlns:x='urn:x'/></name>"),
            "Patient.name.family: the element is in the namespace 'urn:x'",
        ),
        (patient("<text><div/></text>"), "XHTML namespace"),
        (patient(f"<text><div {X}><p>&nbsp;</p></div></text>"), "undefined entity"),
    ],
)
def test_what_is_not_fhir_xml_is_refused_with_where_and_why(xml: bytes, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        xmlio.loads(xml)
    assert message in str(caught.value)


def test_unknown_elements_are_kept_for_validation_to_name() -> None:
    resource = read(patient("<favouriteColour value='blue'/><pet><name value='Rex'/></pet>"))
    assert resource == {
        "resourceType": "Patient",
        "favouriteColour": "blue",
        "pet": {"name": "Rex"},
    }
    assert xmlio.dumps(resource).endswith(
        '<favouriteColour value="blue"/><pet><name value="Rex"/></pet></Patient>'
    )
