"""Password hashing: argon2id (``argon2-cffi``, RFC 9106 parameters) and the minimum length.

A login for an unknown user still verifies a password against a fixed dummy
hash, so that the answer takes as long as for a known user with a wrong
password and nobody can tell user names apart by timing.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.security.accounts import AccountError

__all__ = ["MIN_PASSWORD_LENGTH", "WeakPassword", "check_strength", "hash_password", "needs_rehash", "verify_password"]

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # hashing is the cost; a megabyte "password" must not buy more of it

_HASHER = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4 (argon2-cffi's RFC 9106 low-memory profile)
_DUMMY_HASH = _HASHER.hash("kgw dummy password for unknown users")


class WeakPassword(AccountError):
    """A password shorter than :data:`MIN_PASSWORD_LENGTH` (or absurdly long)."""


def check_strength(password: str) -> str:
    """The password, or WeakPassword when it is too short to resist guessing."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    """An argon2id hash string (salt and parameters included) of a password that passed the check."""
    return _HASHER.hash(check_strength(password))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``stored_hash=None`` (no such user) does the same work and says no."""
    candidate = password[:MAX_PASSWORD_LENGTH]
    try:
        ok = _HASHER.verify(stored_hash or _DUMMY_HASH, candidate)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and stored_hash is not None


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
