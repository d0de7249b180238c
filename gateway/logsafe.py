"""Network text made safe for log lines (issue 10, L3).

A From user, User-Agent or reason phrase comes from whoever sent the packet.
Written to a log as is, a CR/LF forges whole log lines, an ESC sequence
rewrites an operator's terminal, and a NUL or a bidi override hides what
follows. :func:`printable` escapes every control, format and other
non-printable character the way Python writes it in a literal (``\\r``,
``\\x1b``, ``\\u202e``) and cuts overlong values, keeping printable text —
Chinese names included — readable.
"""

from __future__ import annotations

__all__ = ["printable"]

#: Longest network value written to a log line (a real one is far shorter).
MAX_LOGGED = 200


def printable(value: object, limit: int = MAX_LOGGED) -> str:
    """``value`` as one printable line: non-printables escaped, at most ``limit`` characters (then ``…``)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text  # the common case costs one scan
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
