"""The one JSON parser of keylimit's request path: orjson, with its nesting limit (1024).

Request bodies, JSON responses, Server-Sent Events and management bodies are all parsed
here, so that every layer agrees on what is JSON. What orjson refuses (invalid UTF-8, a
BOM, lone surrogates, ``NaN``, nesting past its limit) is not JSON to keylimit: the
caller decides what such a body costs (``_request``) or answers 400. orjson reads an
integer beyond 64 bits as a float; no token count is that large (``_request.token_count``
ignores any non-integer), and a body is never written anew from such a reading.
"""

from __future__ import annotations

from typing import Any

import orjson

loads: Any = orjson.loads
"""``loads(raw: bytes | str) -> Any``; ``ValueError`` (``orjson.JSONDecodeError``) when it is not JSON."""

dumps = orjson.dumps
"""``dumps(value) -> bytes``, compact; ``TypeError`` for what it cannot write (nesting past 254 levels)."""
