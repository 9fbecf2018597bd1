"""What is stored from a key's secret: an argon2id hash, and a short check value.

The argon2id hash (argon2-cffi) is what proves a key. Synchronous: callers run it in worker
threads, behind a semaphore.

The check value (``key_check``) is the first 4 bytes of a BLAKE2b digest of the whole key,
written beside the hash when the key is created. A token whose check value differs is
refused at once, without argon2, so a flood of wrong secrets costs its sender a lookup
each and costs argon2 nothing: only about one wrong secret in 2**32 gets as far as argon2,
and the verification semaphore bounds even those. The check only ever refuses; a token
is accepted by argon2 alone.

What it reveals: at most its own 32 bits about a key. Someone holding a copy of the store
can test guesses against it at hash speed instead of argon2's, but a key's secret is 32
random base62 characters (about 190 bits): 2**190 guesses stay out of reach at any speed,
and 158 unknown bits remain once the check is known. It is never logged, shown in a
``repr``, nor returned by the management API.

Keys created before check values existed have none: they verify with argon2 as before, and
gain one on their first successful verification.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

CHECK_BYTES = 4
_CHECK_PERSON = b"keylimit.check"


def key_check(token: str) -> str:
    """The check value of ``token``: 8 hex characters."""
    digest = hashlib.blake2b(token.encode("latin-1"), digest_size=CHECK_BYTES, person=_CHECK_PERSON)
    return digest.hexdigest()


def check_refuses(check: str | None, token: str) -> bool:
    """True when ``token`` cannot be the key whose stored check value is ``check``.

    A record without a check value (a key created before them) refuses nothing.
    """
    return check is not None and not hmac.compare_digest(check, key_check(token))


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """argon2id cost. The default is OWASP's recommended argon2id setting (t=2, m=19 MiB, p=1).

    Keys carry about 190 random bits, so no cost makes guessing one from a leaked hash any
    less hopeless; the hash is defence in depth, and its cost is paid on every cold
    verification. Raise it with ``KEYLIMIT_ARGON2_*``; old hashes are upgraded on use.
    """

    time_cost: int = 2
    memory_cost: int = 19456
    parallelism: int = 1

    def __post_init__(self) -> None:
        if self.time_cost < 1:
            raise ValueError("argon2 time_cost must be at least 1")
        if self.parallelism < 1:
            raise ValueError("argon2 parallelism must be at least 1")
        if self.memory_cost < 8 * self.parallelism:
            raise ValueError("argon2 memory_cost must be at least 8 KiB per lane")


PRODUCTION = Argon2Params()
CHEAPEST = Argon2Params(time_cost=1, memory_cost=8, parallelism=1)
"""For tests only: verifies in microseconds."""


class Hasher:
    __slots__ = ("_ph", "params")

    def __init__(self, params: Argon2Params = PRODUCTION) -> None:
        self.params = params
        self._ph = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )

    def hash(self, token: str) -> str:
        return self._ph.hash(token)

    def verify(self, hashed: str, token: str) -> bool:
        try:
            return self._ph.verify(hashed, token)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, hashed: str) -> bool:
        try:
            return self._ph.check_needs_rehash(hashed)
        except (InvalidHashError, ValueError):
            return True

    def __repr__(self) -> str:
        p = self.params
        return f"Hasher(time_cost={p.time_cost}, memory_cost={p.memory_cost}, parallelism={p.parallelism})"
