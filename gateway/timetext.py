"""Times as people and scripts type them: epoch seconds or ISO 8601 / RFC 3339 (``Z`` accepted)."""

from __future__ import annotations

from datetime import datetime

__all__ = ["parse_when"]


def parse_when(text: str) -> float:
    """Epoch seconds of ``text`` (local time when an ISO time has no zone); ValueError otherwise."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"expected epoch seconds or an ISO 8601 time, got {text[:40]!r}") from None
