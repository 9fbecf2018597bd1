"""What a response reports, read as it passes: a tap keeps ``usage`` from a JSON body or
from Server-Sent Events, and the text sent (for when no usage comes). When keylimit asked
the server for usage (``_usage.inspect_request``), the SSE tap also takes it out again:
the usage-only event and the ``"usage"`` field of every other event.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from . import _json
from ._usage import is_json

JSON_COPY_BYTES = 4 * 1024 * 1024
"""A JSON response body is parsed whole up to this size; past it, ``usage`` is read from its tail."""
JSON_TAIL_BYTES = 64 * 1024
JSON_PARSE_BYTES = 4 * 1024
"""A JSON response body up to this size is parsed for ``usage``; a larger one is searched for it."""
MAX_EVENT_BYTES = 1024 * 1024
"""An SSE event longer than this is passed on unread (and the tap stops reading the stream)."""


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
                    _choice_text(choice, self._pending)


def _choice_text(choice: dict[str, Any], out: list[str]) -> None:
    text = choice.get("text")
    if isinstance(text, str) and text:
        out.append(text)
    for holder in (choice.get("delta"), choice.get("message")):
        if not isinstance(holder, dict):
            continue
        for key in ("content", "reasoning_content", "refusal"):
            value = holder.get(key)
            if isinstance(value, str) and value:
                out.append(value)
        calls = holder.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    out.extend(v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str))


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
            with contextlib.suppress(ValueError, RecursionError):
                obj = _json.loads(body)
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
            with contextlib.suppress(ValueError, RecursionError):
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


class SSETap(Tap):
    """Reads Server-Sent Events as they pass; with ``strip``, also rewrites them.

    Without ``strip`` every chunk goes on untouched as it comes. With it, only complete
    events go on (a partial event waits for its end), without the usage we asked for.
    """

    __slots__ = ("_buffer", "_reading", "_strip")

    def __init__(self, strip: bool) -> None:
        super().__init__()
        self._strip = strip
        self._buffer = b""
        self._reading = True

    @property
    def rewrites(self) -> bool:
        return self._strip

    def feed(self, chunk: bytes, more: bool) -> bytes:
        if not self._reading:
            return chunk
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            # Normalise line ends; a trailing "\r" waits for a possible "\n".
            buffer = buffer.replace(b"\r\n", b"\n")
        *events, self._buffer = buffer.split(b"\n\n")
        out = [self._event(e) for e in events if e]
        if len(self._buffer) > MAX_EVENT_BYTES:
            self._reading = False
            out.append(self._buffer)
            self._buffer = b""
        if not more and self._buffer:
            out.append(self._buffer)
            self._buffer = b""
        if not self._strip:
            return chunk
        return b"".join(out)

    def _event(self, event: bytes) -> bytes:
        lines = event.split(b"\n")
        data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
        if not data or data[0] == b"[DONE]":
            return event + b"\n\n"
        try:
            obj = _json.loads(b"\n".join(data))
        except (ValueError, RecursionError):
            return event + b"\n\n"
        self._read(obj)
        if not self._strip or not isinstance(obj, dict) or "usage" not in obj:
            return event + b"\n\n"
        if obj.get("choices") == []:
            return b""  # the usage-only event we asked for
        if obj["usage"] is None and len(data) == 1 and data[0].count(b'"usage"') == 1:
            # The common case, ``"usage": null`` on every chunk: cut it out of the text. The
            # one ``"usage"`` in the text is the member's name (a quote inside a string is
            # escaped), so the match is that member; every other byte stays as it was.
            cut = _NULL_USAGE.sub(b"", data[0], count=1)
            if len(cut) < len(data[0]):
                kept = [line for line in lines if not line.startswith(b"data:")]
                kept.append(b"data: " + cut)
                return b"\n".join(kept) + b"\n\n"
        exact = json.loads(b"\n".join(data))  # the event is written anew: every number as it was
        del exact["usage"]
        kept = [line for line in lines if not line.startswith(b"data:")]
        kept.append(b"data: " + json.dumps(exact, separators=(",", ":")).encode())
        return b"\n".join(kept) + b"\n\n"


_NULL_USAGE = re.compile(rb'\s*,\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*')
"""A ``"usage": null`` member with the comma that joins it to a neighbour."""


def tap_kind(content_type: bytes) -> type[Tap] | None:
    """The tap class for a response of ``content_type``, or None to read nothing."""
    if content_type.partition(b";")[0].strip().lower() == b"text/event-stream":
        return SSETap
    if is_json(content_type):
        return JSONTap
    return None
