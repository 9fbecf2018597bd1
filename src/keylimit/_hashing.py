"""argon2id at rest, through argon2-cffi. Synchronous: callers run it in worker threads."""

from __future__ import annotations

from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """argon2id cost. The default is OWASP's recommended argon2id setting (t=2, m=19 MiB, p=1).

    Keys carry about 190 random bits, so no cost makes guessing one from a leaked hash any
    less hopeless; the hash is defence in depth, and its cost is paid on every cold
    verification (about 20 ms on one core here, against about 145 ms for RFC 9106's
    64 MiB profile). Raise it with ``KEYLIMIT_ARGON2_*``; old hashes are upgraded on use.
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
