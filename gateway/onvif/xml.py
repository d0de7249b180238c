"""Untrusted XML for ONVIF: one guarded parse, and element lookups by local name.

Cameras vary the prefixes and sometimes the namespace versions (WS-Discovery 2005/04
and 2009/01, SOAP 1.1 and 1.2), so lookups match the local name only. The parser
refuses DTDs, entities and external references (defusedxml): a camera's XML is
hostile until proven otherwise. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

__all__ = ["child", "children", "descendants", "escape", "local", "parse", "text_of"]

#: Longest text of one element we keep (names, tokens, URIs are far shorter).
MAX_TEXT = 1024


def escape(text: str) -> str:
    """Text for an element or a double-quoted attribute (``xml.sax.saxutils`` would load urllib.request)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def parse(data: bytes) -> Element | None:
    """The document's root, or None for anything that is not well-formed, safe XML."""
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError, UnicodeError):
        return None
    return root if isinstance(root, Element) else None


def local(tag: object) -> str:
    """``{ns}Name`` → ``Name`` (comments and processing instructions have no string tag)."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def children(element: Element, name: str) -> Iterator[Element]:
    """Direct children called ``name`` (any namespace)."""
    return (c for c in element if local(c.tag) == name)


def child(element: Element | None, name: str) -> Element | None:
    """The first direct child called ``name``, or None."""
    if element is None:
        return None
    return next(children(element, name), None)


def descendants(element: Element, name: str) -> Iterator[Element]:
    """Every element below ``element`` called ``name`` (document order)."""
    return (e for e in element.iter() if e is not element and local(e.tag) == name)


def text_of(element: Element | None, limit: int = MAX_TEXT) -> str:
    """The element's stripped text, cut to ``limit`` characters ("" when absent)."""
    if element is None or element.text is None:
        return ""
    return element.text.strip()[:limit]
