"""What a response reports, read as it passes: a tap keeps ``usage`` (here from a JSON
body; from Server-Sent Events in ``_sse``) and the text sent, for when no usage comes.
``_reading.tap_for`` picks the tap of a response.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from . import _json

JSON_COPY_BYTES = 4 * 1024 * 1024
"""A JSON response body is parsed whole up to this size; past it, ``usage`` is read from its tail."""
JSON_TAIL_BYTES = 64 * 1024
JSON_PARSE_BYTES = 4 * 1024
"""A JSON response body up to this size is parsed for ``usage``; a larger one is searched for it."""


class Tap:
    """A reader of one response body. ``feed`` returns what to send on; after the send
    succeeded, ``commit`` marks the text it carried as sent."""

    __slots__ = ("_pending", "_sent", "usage")

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self._pending: list[str] = []
        self._sent: list[str] = []

    @property
    def rewrites(self) -> bool:
        """Whether ``feed`` may return other bytes than it was given."""
        return False

    @property
    def decodes(self) -> bool:
        """Whether ``feed`` returns the body with its content codings undone."""
        return False

    def feed(self, chunk: bytes, more: bool) -> bytes:
        raise NotImplementedError

    def commit(self) -> None:
        if self._pending:
            self._sent += self._pending
            self._pending.clear()

    def sent_text(self) -> str:
        return "".join(self._sent)

    def _read(self, obj: object) -> None:
        if not isinstance(obj, dict):
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    choice_text(choice, self._pending)


def choice_text(choice: dict[str, Any], out: list[str]) -> None:
    text = choice.get("text")
    if isinstance(text, str) and text:
        out.append(text)
    for holder in (choice.get("delta"), choice.get("message")):
        if not isinstance(holder, dict):
            continue
        # A delta holds a member or two: going through them beats looking up every name.
        for key, value in holder.items():
            if key in _TEXT_KEYS:
                if isinstance(value, str) and value:
                    out.append(value)
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        out.extend(v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str))


_TEXT_KEYS = frozenset({"content", "reasoning_content", "refusal"})


class JSONTap(Tap):
    """Keeps a bounded copy of a JSON body and reads it when the body ends."""

    __slots__ = ("_parts", "_size", "_tail")

    def __init__(self) -> None:
        self.usage = None
        self._pending = []
        self._sent = []
        self._parts: list[bytes] = []
        self._size = 0
        self._tail = b""

    def feed(self, chunk: bytes, more: bool) -> bytes:
        if not more and not self._size:  # the whole body in one chunk, the common case: no copy
            self._size = len(chunk)
            self._finish(chunk)
            return chunk
        self._size += len(chunk)
        if self._size <= JSON_COPY_BYTES:
            self._parts.append(chunk)
        else:
            if self._parts:
                self._tail, self._parts = b"".join(self._parts), []
            self._tail = (self._tail + chunk)[-JSON_TAIL_BYTES:]
        if not more:
            self._finish(b"".join(self._parts) if self._parts else self._tail, whole=bool(self._parts))
        return chunk

    def _finish(self, body: bytes, *, whole: bool = True) -> None:
        if whole and len(body) <= JSON_PARSE_BYTES:
            try:  # not contextlib.suppress: this runs on every JSON answer
                obj = _json.loads(body)
            except ValueError:
                return
            usage = obj.get("usage") if isinstance(obj, dict) else None
            if isinstance(usage, dict):
                self.usage = usage
            else:
                self._read(obj)  # no usage: the text, to count
            return
        # Reading usage from the text of a large body is cheaper than parsing it; the
        # whole body is parsed only when there is none, for the text to count.
        self.usage = _usage_after_key(body)
        if self.usage is None and whole:
            with contextlib.suppress(ValueError):
                self._read(_json.loads(body))


_USAGE_FIELD = re.compile(rb'"(prompt_tokens|completion_tokens)"\s*:\s*(\d{1,18})')


def _usage_after_key(body: bytes) -> dict[str, Any] | None:
    """The token counts after the last ``"usage"`` key of a JSON text (keys, not strings:
    a quote inside a JSON string is escaped)."""
    at = body.rfind(b'"usage"')
    if at < 0:
        return None
    found = {name.decode(): int(value) for name, value in _USAGE_FIELD.findall(body, at)}
    return found or None
