"""Bytes <-> ``xml.etree`` elements for MANSCDP bodies (GB/T 28181 application XML).

Device XML is untrusted and, in the field, often not well-formed: the charset in the
prolog may be missing or wrong, and Hikvision emits raw ``&`` and ``<`` inside
``<Address>`` (docs/gb28181.md §5.3, §19 items 13-14). :func:`decode_xml` copes with
those, refuses DTDs and entity declarations outright (billion laughs, XXE), and turns
every failure into :class:`~gateway.errors.ManscdpError` -- no other exception escapes
for any byte input, so a SIP layer can answer 400 without a catch-all.

:func:`encode_xml` writes what WVP writes: a double-quoted prolog naming the charset,
one element per line, CRLF line ends.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element, ParseError, XMLParser

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _defused_fromstring

from gateway.errors import ManscdpError

__all__ = [
    "MAX_BODY_SIZE",
    "BodyTooLarge",
    "ChildIndex",
    "DecodedXml",
    "ForbiddenXml",
    "UnknownCharset",
    "XmlSyntaxError",
    "charset_codec",
    "children",
    "decode_xml",
    "element_text",
    "encode_xml",
    "local_name",
]

#: Largest MANSCDP body we read. A 2,000-channel catalog is split over many
#: MESSAGEs, each below the SIP cap (64 KiB), so 1 MiB is generous.
MAX_BODY_SIZE: Final = 1024 * 1024

GB_CODEC: Final = "gb18030"
UTF8_CODEC: Final = "utf-8"

# Every GB label maps to the gb18030 codec, a strict superset of GB2312 and GBK, so
# rare names outside GB2312 (e.g. 萳) still decode (docs/gb28181.md §5.3, WVP issue #1344).
_GB_LABELS: Final = {"gb2312": "GB2312", "gbk": "GBK", "gb18030": "GB18030", "cp936": "GBK"}
_UTF8_LABELS: Final = {"utf-8": "UTF-8", "utf8": "UTF-8"}

_PROLOG_B: Final = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<\?xml\b(.*?)\?>", re.DOTALL)
_ENCODING_B: Final = re.compile(rb"""\bencoding\s*=\s*(['"])\s*([A-Za-z0-9._:-]{1,40})\s*\1""", re.IGNORECASE)
_PROLOG_S: Final = re.compile(r"\A\ufeff?\s*<\?xml\b.*?\?>", re.DOTALL)
# A '&' that does not start a character or entity reference (XML 1.0 §4.1).
_BARE_AMP: Final = re.compile(r"&(?!#[0-9]+;|#x[0-9A-Fa-f]+;|[A-Za-z_:][A-Za-z0-9_.:-]*;)")
# Characters XML 1.0 §2.2 does not allow anywhere in a document.
_XML_ILLEGAL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


class BodyTooLarge(ManscdpError):
    """The body exceeds :data:`MAX_BODY_SIZE` (answered 413, like RFC 3261 §21.4.11)."""

    status_hint = 413


class XmlSyntaxError(ManscdpError):
    """The body is not XML, even after the vendor repairs."""


class ForbiddenXml(ManscdpError):
    """The body uses a DTD, an entity declaration or an external reference."""


class UnknownCharset(ManscdpError):
    """We were asked to *encode* with a charset we do not support (local misuse)."""


@dataclass(frozen=True, slots=True)
class DecodedXml:
    """A parsed MANSCDP document and the charset its text was actually in.

    ``charset`` is the canonical label ("GB2312", "GBK", "GB18030" or "UTF-8") to use
    when answering this peer: replies should be in the charset the peer used.
    """

    root: Element
    charset: str


def charset_codec(charset: str) -> tuple[str, str]:
    """Map a charset label to ``(python_codec, canonical_label)``.

    Raises :class:`UnknownCharset` for anything that is neither GB nor UTF-8.
    """
    label = charset.strip().lower()
    if label in _GB_LABELS:
        return GB_CODEC, _GB_LABELS[label]
    if label in _UTF8_LABELS:
        return UTF8_CODEC, _UTF8_LABELS[label]
    raise UnknownCharset(f"unsupported charset {charset[:40]!r}")


def decode_xml(body: bytes) -> DecodedXml:
    """Decode and parse an untrusted MANSCDP body; any failure is a ``ManscdpError``."""
    if len(body) > MAX_BODY_SIZE:
        raise BodyTooLarge(f"MANSCDP body of {len(body)} bytes exceeds {MAX_BODY_SIZE}")
    text, charset = _decode_text(body, _declared_charset(body))
    # Strip the prolog (its encoding no longer applies to a str) and the NULs some
    # embedded stacks append when Content-Length counts a C string terminator.
    text = _PROLOG_S.sub("", text, count=1).rstrip("\x00 \t\r\n")
    return DecodedXml(root=_parse_tolerant(text), charset=charset)


def encode_xml(root: Element, charset: str = "GB2312") -> bytes:
    """Serialise ``root`` with a prolog, one element per line, CRLF line ends.

    GB labels are encoded with gb18030 so characters outside GB2312 survive the round
    trip. Characters XML 1.0 cannot carry at all (most C0 controls) are dropped.
    Mixed content is not supported: element tails are not written.
    """
    codec, label = charset_codec(charset)
    parts: list[str] = [f'<?xml version="1.0" encoding="{label}"?>\r\n']
    _write_element(root, parts)
    try:
        return "".join(parts).encode(codec)
    except UnicodeEncodeError as exc:  # only lone surrogates can get here
        raise XmlSyntaxError("text cannot be encoded") from exc


# --- decoding ----------------------------------------------------------------------


def _declared_charset(body: bytes) -> str | None:
    """The canonical charset named in the prolog, or ``None`` if absent or unknown."""
    if body.startswith(b"\xef\xbb\xbf"):
        return "UTF-8"  # a UTF-8 BOM outranks whatever the prolog claims
    prolog = _PROLOG_B.match(body[:512])
    if prolog is None:
        return None
    match = _ENCODING_B.search(prolog.group(1))
    if match is None:
        return None
    try:
        return charset_codec(match.group(2).decode("ascii"))[1]
    except UnknownCharset:
        return None  # e.g. "ISO-8859-1": sniff like an undeclared body


def _decode_text(body: bytes, declared: str | None) -> tuple[str, str]:
    """Decode with the declared charset, falling back to the other one.

    Undeclared or UTF-8-declared bodies are UTF-8 whenever they decode strictly as
    UTF-8 (XML's own default). GB-declared bodies decode with gb18030, but gb18030
    accepts most byte strings, so a UTF-8 body mislabelled GB2312 often decodes
    "successfully" into mojibake; when the body is also valid UTF-8 we keep whichever
    reading is more plausible (the declared one on a tie). Valid multi-byte UTF-8 is
    strong evidence, so this override is only applied in that direction.
    """
    if declared is not None and declared != "UTF-8":
        try:
            text = body.decode(GB_CODEC)
        except UnicodeDecodeError:
            return _decode_fallback(body)
        if not body.isascii():
            try:
                utf8 = body.decode(UTF8_CODEC)
            except UnicodeDecodeError:
                return text, declared
            if _implausible(utf8) < _implausible(text):
                return utf8, "UTF-8"
        return text, declared
    return _decode_fallback(body)


def _decode_fallback(body: bytes) -> tuple[str, str]:
    """Strict UTF-8, then strict gb18030, then gb18030 with replacement characters."""
    for codec, label in ((UTF8_CODEC, "UTF-8"), (GB_CODEC, "GB2312")):
        try:
            return body.decode(codec), label
        except UnicodeDecodeError:
            continue
    return body.decode(GB_CODEC, errors="replace"), "GB2312"


def _implausible(text: str) -> int:
    """Score how unlikely ``text`` is as a MANSCDP body; mojibake scores high.

    Weighted by where a character sits in GB2312 (GB 2312-1980 rows): ASCII, common
    symbols and fullwidth forms (rows 0xA1-0xA3) and level-1 hanzi (0xB0-0xD7) are
    free; kana, Greek, Cyrillic, pinyin, box drawing and level-2 (rarer) hanzi cost 1;
    anything outside GB2312 costs 2, private-use or unassigned code points 4. A rare
    but real name character (萳) therefore costs as much in either decoding.
    """
    score = 0
    for char, count in Counter(text).items():
        if char.isascii():
            continue
        score += _char_cost(char) * count
    return score


def _char_cost(char: str) -> int:
    if unicodedata.category(char) in ("Co", "Cn", "Cc", "Cs"):
        return 4
    # gb18030 rather than Python's gb2312 table: it maps 0xA1A4 to U+00B7 '·' the
    # way devices mean it (the gb2312 codec says U+30FB).
    code = char.encode(GB_CODEC)
    if len(code) != 2 or not (0xA1 <= code[0] <= 0xF7 and 0xA1 <= code[1] <= 0xFE):
        return 2
    return 0 if 0xA1 <= code[0] <= 0xA3 or 0xB0 <= code[0] <= 0xD7 else 1


def _parse_tolerant(text: str) -> Element:
    """Parse, then retry with the repairs WVP applies (docs/gb28181.md §5.3).

    A repair that changes nothing is not parsed again, so well-formed-but-hopeless
    input costs one parse, not four.
    """
    try:
        return _parse(text)
    except ParseError as exc:
        error = exc
    tried = text
    for candidate in _repairs(text):
        if candidate == tried:
            continue
        tried = candidate
        try:
            return _parse(candidate)
        except ParseError as exc:
            error = exc
    raise XmlSyntaxError(f"not well-formed XML: {error}") from None


def _repairs(text: str) -> Iterator[str]:
    """Escape bare ``&``; then also ``<``/``>`` inside ``<Address>``; then drop ``<Address>``."""
    repaired = _BARE_AMP.sub("&amp;", text)
    yield repaired
    yield _repair_addresses(repaired, drop=False)
    yield _repair_addresses(repaired, drop=True)


def _repair_addresses(text: str, *, drop: bool) -> str:
    """Escape ``<``/``>`` inside every ``<Address>…</Address>``, or drop those elements.

    A linear scan rather than a regex: ``<Address>`` repeated without a closing tag
    would make a non-greedy regex quadratic on a 1 MiB body.
    """
    folded = text.lower()
    out: list[str] = []
    pos = 0
    while (start := _find_tag(folded, "<address", pos)) >= 0:
        open_end = folded.find(">", start)
        close = _find_tag(folded, "</address", open_end + 1) if open_end >= 0 else -1
        close_end = folded.find(">", close) if close >= 0 else -1
        if close_end < 0:
            break  # no later <Address> can have a closing tag either
        out.append(text[pos:start])
        if not drop:
            inner = text[open_end + 1 : close].replace("<", "&lt;").replace(">", "&gt;")
            out.append(text[start : open_end + 1] + inner + text[close : close_end + 1])
        pos = close_end + 1
    out.append(text[pos:])
    return "".join(out)


def _find_tag(folded: str, prefix: str, pos: int) -> int:
    """Index of ``prefix`` as a whole tag name (not ``<AddressCode``) at or after ``pos``."""
    while (found := folded.find(prefix, pos)) >= 0:
        after = folded[found + len(prefix) : found + len(prefix) + 1]
        if after in (">", "/", " ", "\t", "\r", "\n", ""):
            return found
        pos = found + 1
    return -1


def _parse(text: str) -> Element:
    """One parse; only ``ParseError`` is left for the caller to retry.

    Without ``<!`` a document can hold no DTD, hence no entity declarations and
    nothing to expand: such bodies (every real MANSCDP message) go to the C
    parser directly, several times faster than defusedxml's pure-Python
    builder. Anything with ``<!`` (DOCTYPE, ENTITY, comments, CDATA) takes the
    defusedxml path, which refuses DTDs and entities.
    """
    try:
        if "<!" not in text:
            parser = XMLParser()
            parser.feed(text)
            root = parser.close()
        else:
            root = _defused_fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ForbiddenXml(f"forbidden XML construct: {type(exc).__name__}") from None
    except (ValueError, TypeError, LookupError, RecursionError) as exc:  # expat oddities
        raise XmlSyntaxError(f"XML parser failed: {type(exc).__name__}") from None
    if not isinstance(root, Element):
        raise XmlSyntaxError("parser returned no element")
    return root


# --- reading parsed elements ---------------------------------------------------------
# GB/T 28181 tag names are case-sensitive, but WVP relays <info> and devices vary, so
# lookups match exactly first and then case-insensitively; namespaces are ignored.
# Public so that modules parsing other CmdTypes (from UnknownCommand.element) read
# device XML with the same tolerance.


def local_name(tag: object) -> str:
    """Tag without a ``{namespace}`` prefix; "" for comments and processing instructions."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def element_text(element: Element | None) -> str | None:
    """Whitespace-trimmed text; ``None`` when absent or empty (like dom4j ``getTextTrim``)."""
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def children(element: Element | None, tag: str) -> list[Element]:
    """All children named ``tag`` (case-insensitive), in document order."""
    lowered = tag.lower()
    return [c for c in (element if element is not None else ()) if local_name(c.tag).lower() == lowered]


class ChildIndex:
    """First child per tag name of one element: exact match first, then case-insensitive."""

    __slots__ = ("_exact", "_folded")

    def __init__(self, element: Element | None) -> None:
        self._exact: dict[str, Element] = {}
        self._folded: dict[str, Element] | None = None  # built on the first miss only
        for child in element if element is not None else ():
            self._exact.setdefault(local_name(child.tag), child)

    def get(self, tag: str) -> Element | None:
        """The child named ``tag``, or None."""
        found = self._exact.get(tag)
        if found is not None:
            return found
        if self._folded is None:
            self._folded = {}
            for name, child in self._exact.items():
                self._folded.setdefault(name.lower(), child)
        return self._folded.get(tag.lower())

    def text(self, tag: str) -> str | None:
        """Trimmed text of the child named ``tag``; None when absent or empty."""
        return element_text(self.get(tag))


# --- encoding ----------------------------------------------------------------------


def _write_element(root: Element, parts: list[str]) -> None:
    """Append ``root`` one element per line; iterative, so depth cannot hit the recursion limit."""
    stack: list[tuple[Element, bool]] = [(root, False)]
    while stack:
        element, closing = stack.pop()
        tag = _escape_name(element.tag)
        if closing:
            parts.append(f"</{tag}>\r\n")
            continue
        attrs = "".join(f' {_escape_name(k)}="{_escape_attr(v)}"' for k, v in element.attrib.items())
        text = _escape_text(element.text or "")
        kids = list(element)
        if not kids:
            parts.append(f"<{tag}{attrs}>{text}</{tag}>\r\n")
            continue
        parts.append(f"<{tag}{attrs}>{text}\r\n")
        stack.append((element, True))
        stack.extend((kid, False) for kid in reversed(kids))


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_CHECKED_NAMES: set[str] = set()  # MANSCDP uses a few dozen tag names: check each once
_PLAIN_TEXT = re.compile(r"[^&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]*")


def _escape_name(name: object) -> str:
    if isinstance(name, str) and name in _CHECKED_NAMES:
        return name
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise XmlSyntaxError(f"invalid element or attribute name {str(name)[:40]!r}")
    if len(_CHECKED_NAMES) < 1024:
        _CHECKED_NAMES.add(name)
    return name


def _escape_text(text: str) -> str:
    if _PLAIN_TEXT.fullmatch(text):  # nothing to escape or drop: the common case
        return text
    text = _XML_ILLEGAL.sub("", text)
    # '\r' would be normalised to '\n' by the reader (XML 1.0 §2.11): keep it as a reference.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _escape_attr(value: str) -> str:
    value = _escape_text(value).replace('"', "&quot;")
    return value.replace("\n", "&#10;").replace("\t", "&#9;")
