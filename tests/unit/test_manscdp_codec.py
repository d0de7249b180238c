"""MANSCDP XML codec: charsets, vendor repairs, hostile XML, output format."""

from __future__ import annotations

import time
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement

import pytest

from gateway.errors import ManscdpError
from gateway.gb28181.manscdp import (
    MAX_BODY_SIZE,
    BodyTooLarge,
    DecodedXml,
    ForbiddenXml,
    UnknownCharset,
    XmlSyntaxError,
    charset_codec,
    decode_xml,
    encode_xml,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manscdp"

KINDERGARTEN = "和平区第三幼儿园·大门口"
RARE = "萳"  # in GBK/GB18030 but not in GB2312 (WVP issue #1344)
GB_PROLOG = '<?xml version="1.0" encoding="GB2312"?>\r\n'


def _doc(name: str) -> Element:
    root = Element("Response")
    SubElement(root, "CmdType").text = "Catalog"
    item = SubElement(SubElement(root, "DeviceList", {"Num": "1"}), "Item")
    SubElement(item, "Name").text = name
    return root


def _name(decoded: DecodedXml) -> str | None:
    found = decoded.root.find("DeviceList/Item/Name")
    assert found is not None
    return found.text


def test_rare_character_is_really_outside_gb2312() -> None:
    with pytest.raises(UnicodeEncodeError):
        RARE.encode("gb2312")


@pytest.mark.parametrize("charset", ["GB2312", "UTF-8", "gbk", "GB18030"])
@pytest.mark.parametrize("name", [KINDERGARTEN, RARE, KINDERGARTEN + RARE, 'A&B <Gate> "1"'])
def test_round_trip_keeps_chinese_names_exactly(charset: str, name: str) -> None:
    decoded = decode_xml(encode_xml(_doc(name), charset))
    assert _name(decoded) == name
    assert decoded.charset == charset_codec(charset)[1]


def test_gb2312_output_is_gb18030_bytes_so_rare_chars_survive() -> None:
    body = encode_xml(_doc(KINDERGARTEN + RARE), "GB2312")
    assert body.startswith(GB_PROLOG.encode("ascii"))
    assert (KINDERGARTEN + RARE).encode("gb18030") in body
    assert "和平区第三幼儿园".encode("gb2312") + b"\xa1\xa4" in body  # 0xA1A4 is GB2312 middle dot


def test_output_has_one_element_per_line_with_crlf() -> None:
    body = encode_xml(_doc("x"), "UTF-8")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\r\n')
    assert body.endswith(b"</Response>\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")
    lines = body.split(b"\r\n")[1:-1]
    assert lines == [
        b"<Response>",
        b"<CmdType>Catalog</CmdType>",
        b'<DeviceList Num="1">',
        b"<Item>",
        b"<Name>x</Name>",
        b"</Item>",
        b"</DeviceList>",
        b"</Response>",
    ]


def test_carriage_return_and_attribute_quotes_round_trip() -> None:
    root = Element("Notify", {"Note": 'say "hi"\tnow\n'})
    root.text = "line1\r\nline2"
    decoded = decode_xml(encode_xml(root))
    assert decoded.root.text == "line1\r\nline2"
    assert decoded.root.get("Note") == 'say "hi"\tnow\n'


def test_illegal_xml_characters_are_dropped_on_output() -> None:
    root = Element("Notify")
    root.text = "a\x00b\x07c"
    assert decode_xml(encode_xml(root)).root.text == "abc"


def test_encode_with_unknown_charset_is_refused() -> None:
    with pytest.raises(UnknownCharset):
        encode_xml(_doc("x"), "ISO-8859-1")


def test_encode_refuses_invalid_tag_names() -> None:
    with pytest.raises(XmlSyntaxError):
        encode_xml(Element("bad tag"))


@pytest.mark.parametrize(
    "prolog",
    [
        b'<?xml version="1.0" encoding="GB2312"?>',
        b"<?xml version='1.0' encoding='GB2312'?>",
        b"<?xml version='1.0' encoding='gb2312'?>",
        b'<?xml version="1.0" ENCODING = "Gb2312" ?>',
    ],
)
def test_declared_gb2312_in_any_quoting_or_case(prolog: bytes) -> None:
    body = prolog + _body_without_prolog(KINDERGARTEN, "gb18030")
    decoded = decode_xml(body)
    assert decoded.charset == "GB2312"
    assert _name(decoded) == KINDERGARTEN


@pytest.mark.parametrize(("label", "canonical"), [("GBK", "GBK"), ("gb18030", "GB18030"), ("utf8", "UTF-8")])
def test_declared_charset_is_reported_canonically(label: str, canonical: str) -> None:
    codec = "utf-8" if canonical == "UTF-8" else "gb18030"
    body = f'<?xml version="1.0" encoding="{label}"?>'.encode() + _body_without_prolog(KINDERGARTEN + RARE, codec)
    decoded = decode_xml(body)
    assert decoded.charset == canonical
    assert _name(decoded) == KINDERGARTEN + RARE


def _body_without_prolog(name: str, codec: str) -> bytes:
    return f"<Response><DeviceList><Item><Name>{name}</Name></Item></DeviceList></Response>".encode(codec)


@pytest.mark.parametrize("name", [KINDERGARTEN, "大门", "门", "张三", RARE])
def test_undeclared_encoding_gb2312_bytes(name: str) -> None:
    for prolog in (b"", b'<?xml version="1.0"?>\r\n'):
        decoded = decode_xml(prolog + _body_without_prolog(name, "gb18030"))
        assert decoded.charset == "GB2312"
        assert _name(decoded) == name


def test_undeclared_encoding_utf8_bytes() -> None:
    decoded = decode_xml(_body_without_prolog(KINDERGARTEN, "utf-8"))
    assert decoded.charset == "UTF-8"
    assert _name(decoded) == KINDERGARTEN


@pytest.mark.parametrize("name", [KINDERGARTEN, "大门", "甲乙", "张三", "幼儿园", KINDERGARTEN + RARE])
def test_declared_gb2312_but_actually_utf8(name: str) -> None:
    # "大门" and "张三" are 6 UTF-8 bytes that gb18030 also decodes without error
    # (into mojibake): the plausibility tie-break must still choose UTF-8.
    body = GB_PROLOG.encode() + _body_without_prolog(name, "utf-8")
    decoded = decode_xml(body)
    assert decoded.charset == "UTF-8"
    assert _name(decoded) == name


@pytest.mark.parametrize("name", [KINDERGARTEN, "大门", "门"])
def test_declared_utf8_but_actually_gb2312(name: str) -> None:
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + _body_without_prolog(name, "gb18030")
    decoded = decode_xml(body)
    assert decoded.charset == "GB2312"
    assert _name(decoded) == name


@pytest.mark.parametrize("text", ["©", "Café ©", "Ω"])
def test_declared_utf8_that_is_valid_utf8_is_trusted(text: str) -> None:
    # Found by fuzzing: "©" is C2 A9 in UTF-8, which gb18030 reads as a common hanzi.
    body = b'<?xml version="1.0" encoding="UTF-8"?>' + _body_without_prolog(text, "utf-8")
    decoded = decode_xml(body)
    assert (decoded.charset, _name(decoded)) == ("UTF-8", text)


def test_undecodable_bytes_fall_back_to_replacement() -> None:
    body = GB_PROLOG.encode() + b"<Response><Name>\x81\xff\xfe</Name></Response>"
    decoded = decode_xml(body)
    assert decoded.charset == "GB2312"
    assert decoded.root.findtext("Name") is not None


def test_utf8_bom_wins_over_declaration() -> None:
    body = b"\xef\xbb\xbf" + GB_PROLOG.encode() + _body_without_prolog(KINDERGARTEN, "utf-8")
    decoded = decode_xml(body)
    assert decoded.charset == "UTF-8"
    assert _name(decoded) == KINDERGARTEN


def test_unknown_declared_charset_is_sniffed() -> None:
    body = b'<?xml version="1.0" encoding="ISO-8859-1"?>' + _body_without_prolog(KINDERGARTEN, "gb18030")
    assert _name(decode_xml(body)) == KINDERGARTEN


def test_trailing_nul_and_whitespace_are_tolerated() -> None:
    body = GB_PROLOG.encode() + b"<Notify><SN>1</SN></Notify>\r\n\x00\x00"
    assert decode_xml(body).root.findtext("SN") == "1"


def test_hikvision_unescaped_ampersand_in_address() -> None:
    body = (
        GB_PROLOG + "<Item><Address>Tianjin Rd 3 & 5 &amp; &#38; &#x26; &lt;</Address><Name>A&B</Name></Item>"
    ).encode("gb18030")
    root = decode_xml(body).root
    assert root.findtext("Address") == "Tianjin Rd 3 & 5 & & & <"
    assert root.findtext("Name") == "A&B"


def test_hikvision_unescaped_angle_bracket_in_address() -> None:
    body = (GB_PROLOG + "<Item><Address>Gate <1> & east</Address><Name>n</Name></Item>").encode("gb18030")
    root = decode_xml(body).root
    assert root.findtext("Address") == "Gate <1> & east"
    assert root.findtext("Name") == "n"


def test_address_that_cannot_be_repaired_is_dropped() -> None:
    # A control character is illegal even when escaped: WVP drops the Address line.
    body = (GB_PROLOG + "<Item><Address>bad\x01char</Address><Name>n</Name></Item>").encode("gb18030")
    root = decode_xml(body).root
    assert root.find("Address") is None
    assert root.findtext("Name") == "n"


BILLION_LAUGHS = (
    Path(__file__).resolve().parents[1] / "fixtures" / "attacks" / "billion_laughs_entity_expansion.xml"
).read_bytes()

EXTERNAL_ENTITY = b"""<?xml version="1.0" encoding="GB2312"?>
<!DOCTYPE Notify [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&xxe;</DeviceID></Notify>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Notify SYSTEM "http://127.0.0.1:1/evil.dtd">
<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD], ids=["laughs", "xxe", "dtd"])
def test_dtds_and_entities_are_refused(body: bytes) -> None:
    with pytest.raises(ForbiddenXml) as info:
        decode_xml(body)
    assert isinstance(info.value, ManscdpError)
    assert info.value.status_hint == 400


def test_undefined_entity_without_dtd_is_a_syntax_error() -> None:
    with pytest.raises(XmlSyntaxError):
        decode_xml(b"<Notify><SN>&lol9;</SN></Notify>")


def test_body_size_is_capped() -> None:
    body = b"<Notify>" + b" " * MAX_BODY_SIZE + b"</Notify>"
    with pytest.raises(BodyTooLarge) as info:
        decode_xml(body)
    assert info.value.status_hint == 413
    assert isinstance(info.value, ManscdpError)


@pytest.mark.parametrize(
    "body",
    [b"", b"   ", b"not xml", b"<Notify>", b"<Notify></Query>", b"<a/><b/>", b"\x00\x01\x02", GB_PROLOG.encode()],
)
def test_garbage_is_a_manscdp_error(body: bytes) -> None:
    with pytest.raises(XmlSyntaxError):
        decode_xml(body)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.xml")), ids=lambda p: p.name)
def test_every_captured_body_decodes(path: Path) -> None:
    decoded = decode_xml(path.read_bytes())
    assert decoded.root.tag.lower() in {"query", "notify", "response", "control"}  # vendors write any case
    expected = "UTF-8" if path.name.startswith("camsim") or "utf8" in path.name else "GB2312"
    assert decoded.charset == expected


def test_address_repair_leaves_similar_tags_alone() -> None:
    body = (GB_PROLOG + "<Item><AddressCode>7</AddressCode><Address>a<b</Address><Name>n</Name></Item>").encode(
        "gb18030"
    )
    root = decode_xml(body).root
    assert (root.findtext("AddressCode"), root.findtext("Address"), root.findtext("Name")) == ("7", "a<b", "n")


@pytest.mark.parametrize(
    "body",
    [
        b"<Item>" + b"<Address>" * 100_000,
        b"<Item>" + b"<Address>&x<" * 70_000 + b"</Address>",
        b"<a>" + b"&a" * 400_000,
        b"<" * MAX_BODY_SIZE,
        b"<a>" * 300_000,
    ],
    ids=["unclosed-address", "address-soup", "ampersands", "angles", "deep-nesting"],
)
def test_pathological_bodies_fail_fast(body: bytes) -> None:
    # This used to be quadratic: a non-greedy <Address>(.*?)</Address> regex (minutes on these).
    # CPU time of this thread, not wall time: a busy machine makes the call late, not costlier.
    # Each takes well under 0.2 s of CPU.
    started = time.thread_time()
    with pytest.raises(ManscdpError):
        decode_xml(body)
    assert time.thread_time() - started < 5.0


def test_deep_documents_parse_and_encode_without_recursion() -> None:
    depth = 50_000
    body = b"<Notify>" + b"<a>" * depth + b"</a>" * depth + b"</Notify>"
    root = decode_xml(body).root
    again = decode_xml(encode_xml(root)).root
    assert again.tag == "Notify"
