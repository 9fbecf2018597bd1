"""The ``Authorization`` header to a well-formed key, with no I/O.

The scheme is matched case-insensitively (``bearer`` works, as RFC 7235 says it should);
between scheme and token there is exactly one space, and the token must be a well-formed
key of this prefix with a valid checksum. A missing key (no header, an empty one, or a bare
``Bearer``) is ``MissingKey``; everything else that is not such a key is ``InvalidKey``.
"""

from __future__ import annotations

from .._errors import InvalidKey, MissingKey
from ._keys import KeyFormat, ParsedKey

MAX_HEADER = 256
"""Longer ``Authorization`` headers are refused unread (a key is about 60 bytes)."""


def parse_bearer(header: bytes | None, key_format: KeyFormat) -> ParsedKey:
    """The key in ``Bearer <key>``; raises ``MissingKey`` or ``InvalidKey``."""
    if header is None:
        raise MissingKey()
    if not header.strip():
        raise MissingKey()  # blank, however long: the same answer as no header
    if len(header) > MAX_HEADER:
        raise InvalidKey()
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        raise InvalidKey()
    if not token.strip():
        raise MissingKey()
    parsed = key_format.parse(token.decode("latin-1"))
    if parsed is None:
        raise InvalidKey()
    return parsed
