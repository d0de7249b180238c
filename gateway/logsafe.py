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

import logging

__all__ = ["EscapingFilter", "printable"]

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


class EscapingFilter(logging.Filter):
    """A handler filter escaping every string argument of every record (see :func:`printable`).

    Call sites that print network text escape it themselves; this is the net under
    all of them, so a log call added later cannot forge a line either. Only the
    arguments are touched: the format string is code, not network text. Long
    arguments are not cut here (a path or a query may be long and is not forged).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and not a.isprintable() for a in args):
            record.args = tuple(printable(a, limit=10_000) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict) and any(isinstance(a, str) and not a.isprintable() for a in args.values()):
            record.args = {k: printable(a, limit=10_000) if isinstance(a, str) else a for k, a in args.items()}
        return True
