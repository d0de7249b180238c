"""Who a lower-side client is and how its role behaves (the real differences between roles).

A simulated device and the gateway as a lower platform speak the same lower
side of GB/T 28181 (docs/gb28181.md §3, §4, §6, §16.2); what differs between them is
data, collected here so that :class:`~gateway.gb28181.lower.client.LowerClient`
has no ``if role == ...`` anywhere. :func:`device_policy` and
:func:`upper_policy` in the role modules fill these in from their own
configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LowerIdentity", "LowerPolicy"]


@dataclass(frozen=True, slots=True)
class LowerIdentity:
    """The names on the wire: who we are and whom we register with.

    ``local_domain`` is the host of our From/To URIs (a device uses the
    server's domain there, docs/gb28181.md §3.2; the gateway its own, docs/gb28181.md §16.2).
    ``server_uri`` is the Request-URI of REGISTER and MESSAGE and the digest
    ``uri``: ``sip:<server id>@<domain>`` for a device, ``sip:<server id>@<host>:<port>``
    towards an upper platform.
    """

    name: str
    local_id: str
    local_domain: str
    server_id: str
    server_domain: str
    server_uri: str
    username: str
    password: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LowerPolicy:
    """What one role does differently from the other; times are seconds.

    Registration: ``expires`` asked for, refreshed at ``refresh_ratio`` of what
    was granted. A failed attempt waits ``retry_delay``; with ``retry_doubles``
    the wait doubles per failure in a row up to ``retry_max`` (the upper link's
    2 → 60 s), without it stays fixed (a device's 5 s). A 403 waits at least
    ``retry_after_forbidden`` (a device's 30 s: a wrong password must not hammer
    the registrar's throttle). ``relogin_delay`` is the wait after the server
    was lost or forgot us (keepalives), which is not a registration failure.

    Keepalive (docs/gb28181.md §4.2): ``keepalive_missed`` failures in a row take the
    server offline and we register again (None: failures are only counted);
    with ``unanswered_is_missed`` a keepalive still unanswered when the next is
    due counts as missed. ``forgotten_statuses`` answered to a keepalive mean
    the server lost our registration: register again after ``relogin_delay``.

    Serving: ``methods`` are the non-call methods served (others get 405, with
    ``allow`` as Allow header when set); ``refuse_when_off`` answers every
    non-call request while idle or stopped (None: serve anyway).

    Redirects (GB/T 28181-2022 §9.1.2.3): a 302 to REGISTER is followed only to
    an address in ``redirect_allow`` (``host`` for any port, or ``host:port``;
    empty: never follow), at most ``max_redirects`` in a row. A forged 302 can
    therefore not send a device to a server outside its configured city. A
    failure at the redirected server sends the next attempt home again.
    """

    expires: int
    refresh_ratio: float = 0.8
    retry_delay: float
    retry_max: float
    retry_doubles: bool
    retry_after_forbidden: float = 0.0
    relogin_delay: float
    keepalive_interval: float
    keepalive_missed: int | None
    unanswered_is_missed: bool
    forgotten_statuses: frozenset[int] = frozenset()
    catalog_per_message: int
    user_agent: str | None = None  # None: the endpoint's
    cnonce_bytes: int = 8
    random_sn_start: bool = False
    methods: frozenset[str] = frozenset({"MESSAGE"})
    allow: str | None = None
    refuse_when_off: int | None = None
    redirect_allow: frozenset[str] = frozenset()
    max_redirects: int = 3

    def may_follow(self, host: str, port: int) -> bool:
        """Whether a redirect to ``host:port`` stays inside the configured city."""
        return host in self.redirect_allow or f"{host}:{port}" in self.redirect_allow

    def retry_wait(self, failures: int, status: int | None) -> float:
        """How long to wait after the ``failures``-th failed attempt in a row (answered ``status``)."""
        delay = self.retry_delay
        if self.retry_doubles:
            delay = min(self.retry_max, self.retry_delay * 2 ** min(max(failures, 1) - 1, 32))
        if status == 403:
            delay = max(delay, self.retry_after_forbidden)
        return delay
