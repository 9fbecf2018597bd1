"""The key format: generation, parsing and checksum.

    SDK key:  {prefix}_sk_{kid}_{secret}{crc}
    API key:  {prefix}_{kid}_{secret}{crc}

``kid`` is 12 base62 characters (public; the key's id is ``key_{kid}``), ``secret`` 32
base62 characters (about 190 bits from ``secrets``), ``crc`` the CRC-32 of the text
between ``{prefix}_`` and the checksum (``sk_{kid}_{secret}`` or ``{kid}_{secret}``),
as 6 base62 characters, zero-padded. A token is parsed and its checksum checked before
anything is looked up, so that typos and garbage never reach storage or argon2.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass, field

from .._models import KeyType

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KID_LEN = 12
SECRET_LEN = 32
CRC_LEN = 6
DEFAULT_PREFIX = "forii"
_PREFIX_RE = re.compile(r"[A-Za-z0-9]{1,32}")
_BASE62_SET = frozenset(ALPHABET)
_TAIL_LEN = KID_LEN + 1 + SECRET_LEN + CRC_LEN


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError("key prefix must be 1 to 32 ASCII letters or digits")
    return prefix


def base62(n: int, width: int) -> str:
    chars = []
    while n:
        n, r = divmod(n, 62)
        chars.append(ALPHABET[r])
    return "".join(reversed(chars)).rjust(width, "0")


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def checksum(body: str) -> str:
    return base62(zlib.crc32(body.encode("ascii")), CRC_LEN)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A well-formed token with a valid checksum. ``token`` is secret and stays out of repr."""

    kid: str
    key_type: KeyType
    token: str = field(repr=False)

    @property
    def key_id(self) -> str:
        return f"key_{self.kid}"


class KeyFormat:
    """Generates and parses tokens for one prefix."""

    __slots__ = ("_api_len", "_api_start", "_sdk_len", "_sdk_start", "prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = validate_prefix(prefix)
        self._sdk_start = f"{prefix}_sk_"
        self._api_start = f"{prefix}_"
        self._sdk_len = len(self._sdk_start) + _TAIL_LEN
        self._api_len = len(self._api_start) + _TAIL_LEN

    def generate(self, key_type: KeyType = KeyType.SDK) -> ParsedKey:
        kid = _random_base62(KID_LEN)
        secret = _random_base62(SECRET_LEN)
        body = f"sk_{kid}_{secret}" if key_type is KeyType.SDK else f"{kid}_{secret}"
        token = f"{self.prefix}_{body}{checksum(body)}"
        return ParsedKey(kid=kid, key_type=key_type, token=token)

    def parse(self, token: str) -> ParsedKey | None:
        """The parsed key, or None when the token is not a well-formed key of this prefix."""
        n = len(token)
        if n == self._sdk_len and token.startswith(self._sdk_start):
            key_type, start = KeyType.SDK, len(self._sdk_start)
        elif n == self._api_len and token.startswith(self._api_start):
            key_type, start = KeyType.API, len(self._api_start)
        else:
            return None
        tail = token[start:]
        if tail[KID_LEN] != "_":
            return None
        kid = tail[:KID_LEN]
        rest = tail[KID_LEN + 1 :]
        if not (_BASE62_SET.issuperset(kid) and _BASE62_SET.issuperset(rest)):
            return None
        body = token[len(self._api_start) : -CRC_LEN]
        if checksum(body) != token[-CRC_LEN:]:
            return None
        return ParsedKey(kid=kid, key_type=key_type, token=token)

    def hint(self, token: str, key_type: KeyType, kid: str) -> str:
        start = self._sdk_start if key_type is KeyType.SDK else self._api_start
        return f"{start}{kid}\u2026{token[-4:]}"


def is_valid_kid(kid: str) -> bool:
    return len(kid) == KID_LEN and _BASE62_SET.issuperset(kid)
