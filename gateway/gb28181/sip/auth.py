"""SIP digest authentication, server and client side (RFC 2617, RFC 7616, RFC 3261 §22.4).

Sans-I/O: nothing here reads a clock or a random source. The server takes
``now`` and a secret; the client takes the ``cnonce``.

GB/T 28181 registration uses plain RFC 2617 MD5 digest (docs/gb28181.md §3.3). Devices
disagree on the details, so the server side is liberal in what it verifies:

* it offers ``qop="auth"`` but accepts RFC 2069 style answers without qop
  (camsim ignores qop; some NVRs do too);
* it hashes the ``uri`` *parameter exactly as sent*, never its own idea of the
  Request-URI: Hikvision sends ``sip:<serverId>@<domain>``, sbgb ``sip:<domain>``,
  camsim the platform's ``ip:port`` (docs/gb28181.md §3.3, §19 item 7);
* it hashes ``nc`` exactly as sent (WVP's re-formatting breaks at ``nc`` 10);
* it always names ``algorithm=MD5`` in the challenge, because some Dahua NVRs
  never answer a challenge without it.

Nonces are kept in a bounded table (H2, L4 of issue 10): each is an
unpredictable HMAC of a private counter (it reveals no clock), bound to the
client address it was issued to (``client``: the UDP host:port or the TCP
connection, any hashable the caller passes) and used at most once per ``nc``
(the highest ``nc`` is remembered; an RFC 2069 answer, which has no ``nc``,
uses its nonce up). A sniffed ``Authorization`` therefore cannot be replayed,
neither later nor from another address. The table forgets nonces twice their
lifetime after issue and holds at most ``max_nonces`` (oldest evicted first):
~25k devices, each between its 401 and its answer, fit many times over.

The server verifies against a :class:`Credential`: a password (the config
file's ``[[devices]]`` entries, the shared device password) or stored HA1
values, one per hash (MD5, SHA-256), so that a credential store need not keep
device passwords (gateway/device_credentials.py). ``-sess`` variants derive
from the same HA1 (RFC 7616 §3.4.2).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

from gateway.errors import ConfigError, DigestError

__all__ = [
    "Algorithm",
    "AuthResult",
    "Credential",
    "DigestClient",
    "DigestServer",
    "UnsupportedAlgorithm",
    "build_authorization",
    "compute_ha1",
    "compute_response",
    "compute_response_from_ha1",
    "parse_auth_params",
    "username_of",
]

#: Longest credentials/challenge value we parse; real ones are ~300 characters.
MAX_HEADER_LENGTH = 8192

# RFC 7230 §3.2.6 tchar.
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS = " \t"
# Characters that end an unquoted value. Values are parsed more liberally than
# RFC 7235's token, because devices send e.g. ``uri=sip:3402000000`` unquoted.
_UNQUOTED_END = frozenset(', \t"')
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")

_NONCE_HEX = 32
#: A nonce up to this many seconds "from the future" is still fresh (we truncate
#: the issue time to whole seconds, and callers' clocks may jitter).
_CLOCK_SKEW = 2.0


class UnsupportedAlgorithm(DigestError):
    """An ``algorithm`` token we do not implement (RFC 7616 §3.3 says: ignore the challenge)."""


def _b(text: str) -> bytes:
    """UTF-8 bytes of ``text``; ``surrogatepass`` so that no str can make hashing raise."""
    return text.encode("utf-8", "surrogatepass")


class Algorithm(Enum):
    """Digest ``algorithm`` tokens (RFC 7616 §3.3); a missing token means MD5."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @classmethod
    def _missing_(cls, value: object) -> Algorithm | None:
        # Tokens are case-insensitive (RFC 7616 §3.3 uses "MD5-sess", devices "md5").
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.lower():
                    return member
        return None

    @classmethod
    def from_token(cls, token: str | None) -> Algorithm:
        """The algorithm named by ``token``; None (parameter absent) means MD5 (RFC 2617 §3.2.1)."""
        if token is None:
            return cls.MD5
        try:
            return cls(token)
        except ValueError:
            raise UnsupportedAlgorithm(f"unsupported digest algorithm {token!r:.40}") from None

    @property
    def is_session(self) -> bool:
        """True for the ``-sess`` variants, whose H(A1) also covers nonce and cnonce."""
        return self in (Algorithm.MD5_SESS, Algorithm.SHA256_SESS)

    def hexdigest(self, data: bytes) -> str:
        """Lower-case hex digest of ``data`` with this algorithm's hash."""
        if self in (Algorithm.MD5, Algorithm.MD5_SESS):
            # The protocol mandates MD5; allow it even on FIPS-restricted builds.
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        return hashlib.sha256(data).hexdigest()


# --- parsing ------------------------------------------------------------------


def _skip_ws(s: str, pos: int) -> int:
    while pos < len(s) and s[pos] in _WS:
        pos += 1
    return pos


def _scan_token(s: str, pos: int) -> int:
    while pos < len(s) and s[pos] in _TOKEN_CHARS:
        pos += 1
    return pos


def _scan_quoted(s: str, pos: int) -> tuple[str, int]:
    """Read the quoted-string starting at ``s[pos] == '"'`` (RFC 7230 §3.2.6, with quoted-pair)."""
    out: list[str] = []
    i = pos + 1
    while i < len(s):
        ch = s[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(s):
                break
            out.append(s[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise DigestError("unterminated quoted string in digest parameters")


def _scan_value(s: str, pos: int) -> tuple[str, int]:
    """Read a parameter value at ``pos``: a quoted-string or a liberal unquoted run."""
    if pos < len(s) and s[pos] == '"':
        return _scan_quoted(s, pos)
    end = pos
    while end < len(s) and s[end] not in _UNQUOTED_END:
        end += 1
    if end == pos:
        raise DigestError("empty digest parameter value")
    return s[pos:end], end


_PLAIN_SCHEME = re.compile(r"[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)(?:[ \t]+|$)")
_PLAIN_PARAM = re.compile(
    r"[ \t,]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)[ \t]*=[ \t]*(?:\"([^\"\\\\]*)\"|([^, \t\"]+))[ \t]*(?:,|$)"
)
_PLAIN_END = re.compile(r"[ \t,]*$")
# The last value parsed and its result, as one tuple so a reader on another thread sees a pair.
_last_parsed: list[tuple[str, str, dict[str, str]]] = [("", "", {})]


def _parse_plain(value: str) -> tuple[str, dict[str, str]] | None:
    """The common shape of credentials (no quoted-pairs, no duplicates), by regular expressions.

    None when the value has any other shape: the scanner of :func:`parse_auth_params`
    then reads it (or raises), so both paths agree on everything this one accepts.
    """
    match = _PLAIN_SCHEME.match(value)
    if match is None:
        return None
    scheme = match.group(1).lower()
    params: dict[str, str] = {}
    pos = match.end()
    while not _PLAIN_END.match(value, pos):
        match = _PLAIN_PARAM.match(value, pos)
        if match is None:
            return None
        key = match.group(1).lower()
        if key in params:
            return None
        quoted = match.group(2)
        params[key] = quoted if quoted is not None else match.group(3)
        pos = match.end()
    return scheme, params


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a challenge or credentials value into ``(scheme, params)`` (RFC 7235 §2.1).

    The scheme and parameter names are returned lower-cased; values are
    unquoted and unescaped. Empty list elements and trailing commas are
    allowed (RFC 7230 §7). Raises :class:`DigestError`, and nothing else, for
    any input it cannot read: control characters, unterminated quotes,
    duplicate parameters (an ambiguity an attacker could exploit), overlong input.
    """
    if not isinstance(value, str):
        raise DigestError("digest parameters must be text")
    if len(value) > MAX_HEADER_LENGTH:
        raise DigestError("digest parameters too long")
    if _CTL_RE.search(value):
        raise DigestError("control character in digest parameters")
    last = _last_parsed[0]
    if value == last[0]:  # the registrar asks for the username, then verifies: one parse
        return last[1], dict(last[2])
    fast = _parse_plain(value)
    if fast is not None:
        _last_parsed[0] = (value, fast[0], dict(fast[1]))
        return fast
    pos = _skip_ws(value, 0)
    end = _scan_token(value, pos)
    if end == pos:
        raise DigestError("missing authentication scheme")
    scheme = value[pos:end].lower()
    if end < len(value) and value[end] not in _WS:
        raise DigestError("authentication scheme not followed by whitespace")
    params: dict[str, str] = {}
    pos = end
    while True:
        pos = _skip_ws(value, pos)
        if pos >= len(value):
            return scheme, params
        if value[pos] == ",":
            pos += 1
            continue
        key_end = _scan_token(value, pos)
        if key_end == pos:
            raise DigestError("expected a digest parameter name")
        key = value[pos:key_end].lower()
        pos = _skip_ws(value, key_end)
        if pos >= len(value) or value[pos] != "=":
            raise DigestError("expected '=' after a digest parameter name")
        param, pos = _scan_value(value, _skip_ws(value, pos + 1))
        if key in params:
            raise DigestError("duplicate digest parameter")
        params[key] = param
        pos = _skip_ws(value, pos)
        if pos < len(value) and value[pos] != ",":
            raise DigestError("expected ',' between digest parameters")


_USERNAME_RE = re.compile(r'(?:^|[\s,])username[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))', re.I)


def username_of(authorization: str) -> str | None:
    """The ``username`` in credentials, or None; never raises.

    Falls back to a pattern search when the header does not parse, so that a
    malformed REGISTER can still be attributed to a device for throttling and logs.
    """
    try:
        _, params = parse_auth_params(authorization)
    except DigestError:
        pass
    else:
        return params.get("username")
    if not isinstance(authorization, str):
        return None
    match = _USERNAME_RE.search(authorization[:MAX_HEADER_LENGTH])
    if match is None:
        return None
    if match.group(1) is not None:
        return re.sub(r"\\(.)", r"\1", match.group(1), flags=re.S)
    return match.group(2)


# --- computing ------------------------------------------------------------------


def _quote(value: str) -> str:
    """A quoted-string for ``value``; refuses control characters (header injection)."""
    if _CTL_RE.search(value):
        raise DigestError("control character in a digest parameter value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compute_ha1(algorithm: Algorithm | str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), the storable secret of RFC 2617 §3.2.2.2."""
    alg = algorithm if isinstance(algorithm, Algorithm) else Algorithm.from_token(algorithm)
    return alg.hexdigest(_b(f"{username}:{realm}:{password}"))


def compute_response(
    algorithm: Algorithm | str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes = b"",
) -> str:
    """The digest ``response`` value (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1).

    ``qop`` None gives the RFC 2069 form ``H(HA1:nonce:HA2)``; ``"auth"`` and
    ``"auth-int"`` (which also hashes ``body``) give the qop form. ``nc`` and
    ``qop`` are hashed exactly as given. Raises :class:`DigestError` when a
    value the chosen form needs (``nc``, ``cnonce``) is missing, or for an
    unknown qop or algorithm.
    """
    alg = algorithm if isinstance(algorithm, Algorithm) else Algorithm.from_token(algorithm)
    ha1 = compute_ha1(alg, username, realm, password)
    return compute_response_from_ha1(alg, ha1, method, uri, nonce, qop, nc, cnonce, body)


def compute_response_from_ha1(
    algorithm: Algorithm,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes = b"",
) -> str:
    """:func:`compute_response` from a stored ``ha1`` = H(username:realm:password) of ``algorithm``'s hash."""
    digest = algorithm.hexdigest
    if algorithm.is_session:
        if cnonce is None:
            raise DigestError("a -sess algorithm needs a cnonce")
        ha1 = digest(_b(f"{ha1}:{nonce}:{cnonce}"))  # RFC 7616 §3.4.2
    if qop is None:
        return digest(_b(f"{ha1}:{nonce}:{digest(_b(f'{method}:{uri}'))}"))
    kind = qop.lower()
    if kind == "auth":
        ha2 = digest(_b(f"{method}:{uri}"))
    elif kind == "auth-int":
        ha2 = digest(_b(f"{method}:{uri}:") + digest(body).encode("ascii"))  # RFC 7616 §3.4.3
    else:
        raise DigestError(f"unsupported qop {qop!r:.40}")
    if nc is None or cnonce is None:
        raise DigestError("qop needs nc and cnonce")
    return digest(_b(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))


_HA1_LENGTH = {Algorithm.MD5: 32, Algorithm.SHA256: 64}


@dataclass(frozen=True, slots=True)
class Credential:
    """What :meth:`DigestServer.verify` checks a response against: a password, or stored HA1s.

    ``ha1_md5``/``ha1_sha256`` are H(username:realm:password) with MD5 and
    SHA-256 (:meth:`hashed` computes both). They bind the credential to one
    username and realm: they verify only responses of that device in that
    realm. They are not the password, but whoever holds them can answer
    challenges of this realm as that device, so they are still secrets.
    An HA1 missing for the algorithm a client used fails like a wrong password.
    """

    password: str | None = None
    ha1_md5: str | None = None
    ha1_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.password is not None and (self.ha1_md5 is not None or self.ha1_sha256 is not None):
            raise ConfigError("a credential holds a password or HA1 values, not both")
        for value, alg in ((self.ha1_md5, Algorithm.MD5), (self.ha1_sha256, Algorithm.SHA256)):
            if value is not None and (len(value) != _HA1_LENGTH[alg] or _HEX_RE.fullmatch(value) is None):
                raise ConfigError(f"HA1 for {alg.value} must be {_HA1_LENGTH[alg]} hex digits")

    @classmethod
    def hashed(cls, username: str, realm: str, password: str) -> Credential:
        """The HA1s of ``password`` for ``username`` in ``realm`` (the password itself is not kept)."""
        return cls(
            ha1_md5=compute_ha1(Algorithm.MD5, username, realm, password),
            ha1_sha256=compute_ha1(Algorithm.SHA256, username, realm, password),
        )

    def ha1(self, algorithm: Algorithm, username: str, realm: str) -> str | None:
        """HA1 for ``algorithm`` (its ``-sess`` variant uses the plain one), or None when not held."""
        if self.password is not None:
            return compute_ha1(algorithm, username, realm, self.password)
        if algorithm in (Algorithm.MD5, Algorithm.MD5_SESS):
            stored = self.ha1_md5
        else:
            stored = self.ha1_sha256
        return stored.lower() if stored is not None else None


# --- server side ------------------------------------------------------------------


class AuthResult(Enum):
    """Outcome of :meth:`DigestServer.verify`, with the answer the registrar should give."""

    #: Credentials are right and the nonce is fresh: accept.
    OK = "ok"
    #: Our nonce, but the response does not match: wrong password (docs/gb28181.md §3.4: 403, not 401).
    BAD_PASSWORD = "bad_password"
    #: Our nonce and a correct response, but the nonce expired: re-challenge with ``stale=true``.
    STALE_NONCE = "stale_nonce"
    #: A nonce we never issued (forged, tampered, or from before a secret change): fresh 401.
    FOREIGN_NONCE = "foreign_nonce"
    #: Credentials that do not parse or lack required fields: 400, or a fresh 401.
    MALFORMED = "malformed"
    #: The credentials name another realm: fresh 401.
    WRONG_REALM = "wrong_realm"
    #: An algorithm we do not implement or do not offer: fresh 401.
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    #: Our nonce, issued to another client address or connection: fresh 401, nothing counted.
    WRONG_CLIENT = "wrong_client"
    #: Our nonce with an ``nc`` already used (or an RFC 2069 nonce used before): fresh 401.
    REPLAYED = "replayed"


_REQUIRED = ("username", "realm", "nonce", "uri", "response")


@dataclass(slots=True)
class _Nonce:
    """What the server remembers about one nonce it issued."""

    issued: float
    client: Hashable | None
    highest_nc: int = 0  # the highest nc accepted so far (0: none yet)
    used: bool = False  # an answer without a usable nc was accepted: the nonce is spent


class DigestServer:
    """Issues challenges and verifies credentials for one realm.

    ``secret`` keys the nonce HMAC; use 32 random bytes. ``now`` may come from
    any clock the caller uses consistently (nonces never carry it).
    ``algorithms`` lists what is accepted; the first is the default challenge.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        algorithms: tuple[Algorithm, ...] = (Algorithm.MD5,),
        offer_qop: bool = True,
        max_nonces: int = 100_000,
    ) -> None:
        if not isinstance(realm, str) or not realm or _CTL_RE.search(realm):
            raise ConfigError("digest realm must be non-empty text without control characters")
        if not isinstance(secret, bytes) or not secret:
            raise ConfigError("digest nonce secret must be non-empty bytes")
        if not (isinstance(nonce_ttl, (int, float)) and math.isfinite(nonce_ttl) and nonce_ttl > 0):
            raise ConfigError("nonce_ttl must be a positive number of seconds")
        if not algorithms or not all(isinstance(a, Algorithm) for a in algorithms):
            raise ConfigError("algorithms must be a non-empty tuple of Algorithm")
        if isinstance(max_nonces, bool) or not isinstance(max_nonces, int) or max_nonces < 1:
            raise ConfigError("max_nonces must be an int >= 1")
        self.realm = realm
        self.nonce_ttl = float(nonce_ttl)
        self.algorithms = tuple(algorithms)
        self.offer_qop = offer_qop
        self.max_nonces = max_nonces
        self._secret = secret
        self._counter = 0
        # Issue order: the first entry is the oldest (expiry and eviction both start there).
        self._nonces: OrderedDict[str, _Nonce] = OrderedDict()

    def __len__(self) -> int:
        """Nonces remembered (for metrics and tests)."""
        return len(self._nonces)

    # nonces

    def make_nonce(self, now: float, client: Hashable | None = None) -> str:
        """Issue a fresh nonce for ``client``: 32 hex digits that no one can predict or date."""
        if not math.isfinite(now):
            raise ConfigError("now must be a finite time in seconds")
        self._counter += 1
        msg = _b(f"{self._counter}|{self.realm}")
        nonce = hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:_NONCE_HEX]
        self._prune(now)
        self._nonces[nonce] = _Nonce(now, client)
        while len(self._nonces) > self.max_nonces:
            self._nonces.popitem(last=False)
        return nonce

    def nonce_issued_at(self, nonce: str) -> float | None:
        """When a nonce we still remember was issued, or None for any other string."""
        entry = self._nonces.get(nonce) if isinstance(nonce, str) else None
        return entry.issued if entry is not None else None

    def _prune(self, now: float) -> None:
        """Forget nonces older than twice their lifetime (between one and two lifetimes: stale)."""
        horizon = now - 2 * self.nonce_ttl
        nonces = self._nonces
        while nonces:
            oldest = next(iter(nonces.values()))
            if oldest.issued >= horizon:
                break
            nonces.popitem(last=False)

    def is_stale(self, issued: float, now: float) -> bool:
        """True when a nonce issued at ``issued`` may no longer be used at ``now``.

        A nonce from the future (the caller's clock went back) counts as stale:
        a re-challenge is the right answer.
        """
        age = now - issued
        return not -_CLOCK_SKEW <= age <= self.nonce_ttl

    def issued_to(self, authorization: str, client: Hashable | None) -> bool:
        """Whether the credentials carry a nonce we issued to ``client`` (it could have received it)."""
        try:
            _, params = parse_auth_params(authorization)
        except DigestError:
            return False
        entry = self._nonces.get(params.get("nonce", ""))
        return entry is not None and entry.client == client

    # challenges

    def challenge(
        self,
        now: float,
        *,
        stale: bool = False,
        algorithm: Algorithm = Algorithm.MD5,
        client: Hashable | None = None,
    ) -> str:
        """A ``WWW-Authenticate`` value, e.g. ``Digest realm="…",nonce="…",algorithm=MD5,qop="auth"``.

        ``algorithm`` is always named (Dahua, docs/gb28181.md §3.3); ``stale=true`` tells
        the client its password was right and only the nonce expired (RFC 2617 §3.2.1).
        The nonce is bound to ``client`` (see the module docstring).
        """
        if algorithm not in self.algorithms:
            raise ConfigError(f"algorithm {algorithm.value} is not enabled on this server")
        parts = [
            f"realm={_quote(self.realm)}",
            f'nonce="{self.make_nonce(now, client)}"',
            f"algorithm={algorithm.value}",
        ]
        if self.offer_qop:
            parts.append('qop="auth"')
        if stale:
            parts.append("stale=true")
        return "Digest " + ",".join(parts)

    def challenges(self, now: float, *, stale: bool = False, client: Hashable | None = None) -> list[str]:
        """One challenge per enabled algorithm, most preferred first (RFC 7616 §3.7)."""
        return [self.challenge(now, stale=stale, algorithm=a, client=client) for a in self.algorithms]

    # verification

    def verify(
        self,
        authorization: str,
        method: str,
        password: str | Credential,
        now: float,
        body: bytes = b"",
        client: Hashable | None = None,
    ) -> AuthResult:
        """Check ``Authorization`` credentials from ``client`` against ``password``; never raises for bad input.

        ``password`` is the password or a :class:`Credential` (a password or
        stored HA1s); a credential without an HA1 for the client's algorithm
        verifies nothing (``BAD_PASSWORD``).

        The caller must also check that ``username`` is the device it expects
        (the From user), since the password is looked up by it. A nonce of
        another client is refused before any hashing (``WRONG_CLIENT``), so
        such an attempt is no password guess; a wrong password spends the
        nonce, so every guess costs a round trip for a fresh challenge.
        """
        try:
            scheme, params = parse_auth_params(authorization)
        except DigestError:
            return AuthResult.MALFORMED
        if scheme != "digest" or any(key not in params for key in _REQUIRED):
            return AuthResult.MALFORMED
        qop, nc, cnonce = params.get("qop"), params.get("nc"), params.get("cnonce")
        if qop is not None and (qop.lower() not in ("auth", "auth-int") or nc is None or cnonce is None):
            return AuthResult.MALFORMED
        if _HEX_RE.fullmatch(params["response"]) is None:
            return AuthResult.MALFORMED
        try:
            algorithm = Algorithm.from_token(params.get("algorithm"))
        except UnsupportedAlgorithm:
            return AuthResult.UNSUPPORTED_ALGORITHM
        if algorithm not in self.algorithms:
            return AuthResult.UNSUPPORTED_ALGORITHM
        if algorithm.is_session and cnonce is None:
            return AuthResult.MALFORMED
        if params["realm"] != self.realm:
            return AuthResult.WRONG_REALM
        nonce = params["nonce"]
        entry = self._nonces.get(nonce)
        if entry is None:
            return AuthResult.FOREIGN_NONCE
        if entry.client != client:
            return AuthResult.WRONG_CLIENT
        # Verify in the form the client used (qop or RFC 2069), with its uri and nc as sent.
        credential = password if isinstance(password, Credential) else Credential(password)
        ha1 = credential.ha1(algorithm, params["username"], self.realm)
        expected = (
            compute_response_from_ha1(algorithm, ha1, method, params["uri"], nonce, qop, nc, cnonce, body)
            if ha1 is not None
            else ""
        )
        if not hmac.compare_digest(_b(expected), _b(params["response"].lower())):
            del self._nonces[nonce]
            return AuthResult.BAD_PASSWORD
        if self.is_stale(entry.issued, now):
            return AuthResult.STALE_NONCE
        count = _nonce_count(nc) if qop is not None else None
        if entry.used or (count is not None and count <= entry.highest_nc):
            return AuthResult.REPLAYED
        if count is None:
            entry.used = True  # RFC 2069 (or an nc we cannot read): single use altogether
        else:
            entry.highest_nc = count
        return AuthResult.OK

    @staticmethod
    def username_of(authorization: str) -> str | None:
        """The ``username`` in credentials, or None; see the module-level :func:`username_of`."""
        return username_of(authorization)


def _nonce_count(nc: str | None) -> int | None:
    """``nc`` as a number (8LHEX, RFC 2617 §3.2.2), or None when it is absent or unreadable."""
    if nc is None or not 0 < len(nc) <= 16 or _HEX_RE.fullmatch(nc) is None:
        return None
    return int(nc, 16)


# --- client side ------------------------------------------------------------------


def _choose_qop(offer: str | None) -> str | None:
    """Pick ``auth`` from a qop-options list such as ``"auth,auth-int"`` (RFC 2617 §3.2.1)."""
    if offer is None:
        return None
    options = [o.strip().lower() for o in offer.split(",") if o.strip()]
    if not options:
        return None
    for wanted in ("auth", "auth-int"):
        if wanted in options:
            return wanted
    raise DigestError(f"no supported qop in {offer!r:.40}")


def build_authorization(
    challenge: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """An ``Authorization`` value answering ``challenge`` (a ``WWW-Authenticate`` value).

    Uses qop ``auth`` when offered (even as ``"auth,auth-int"``), MD5 when the
    challenge names no algorithm (docs/gb28181.md §3.3, media-server#90), and echoes
    ``opaque``. Raises :class:`DigestError` for an unusable challenge and
    :class:`UnsupportedAlgorithm` for an algorithm we lack.
    """
    scheme, params = parse_auth_params(challenge)
    if scheme != "digest":
        raise DigestError(f"not a digest challenge: {scheme!r:.20}")
    realm, nonce = params.get("realm"), params.get("nonce")
    if realm is None or nonce is None:
        raise DigestError("digest challenge without realm or nonce")
    algorithm = Algorithm.from_token(params.get("algorithm"))
    qop = _choose_qop(params.get("qop"))
    if not 1 <= nc <= 0xFFFFFFFF:
        raise DigestError("nonce count out of range")
    needs_cnonce = qop is not None or algorithm.is_session
    if needs_cnonce and not cnonce:
        raise DigestError("an empty cnonce cannot be used")
    nc_text = f"{nc:08x}"  # RFC 2617 §3.2.2: 8LHEX
    response = compute_response(
        algorithm,
        username,
        realm,
        password,
        method,
        uri,
        nonce,
        qop,
        nc_text if qop else None,
        cnonce if needs_cnonce else None,
        body,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f'response="{response}"',
        f"algorithm={algorithm.value}",
    ]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce)}"]
    elif algorithm.is_session:
        parts.append(f"cnonce={_quote(cnonce)}")
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    return "Digest " + ",".join(parts)


class DigestClient:
    """Credentials of one account that answer challenges, counting ``nc`` per nonce.

    Used by the cascade role toward an upper platform. Reusing a nonce (e.g.
    for a refresh before the server sends a new one) increments ``nc``; a new
    nonce restarts it at 1 (RFC 2617 §3.2.2).
    """

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._nonce: str | None = None
        self._nc = 0

    def authorization(self, challenge: str, method: str, uri: str, cnonce: str, body: bytes = b"") -> str:
        """An ``Authorization`` value for ``challenge``; see :func:`build_authorization`."""
        _, params = parse_auth_params(challenge)
        nonce = params.get("nonce")
        nc = self._nc + 1 if nonce is not None and nonce == self._nonce else 1
        value = build_authorization(challenge, method, uri, self.username, self._password, cnonce, nc, body)
        self._nonce, self._nc = nonce, nc
        return value
