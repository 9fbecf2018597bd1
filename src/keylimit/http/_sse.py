"""Server-Sent Events read as they pass (``SSETap``). When keylimit asked the server for
usage (``_request.inspect_request``), the tap also takes it out again: the usage-only event
and the ``"usage"`` field of every other event.
"""

from __future__ import annotations

import json

from . import _json
from ._taps import Tap, choice_text

MAX_EVENT_BYTES = 1024 * 1024
"""An SSE event longer than this is passed on unread (and the tap stops reading the stream)."""


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

    @property
    def reading(self) -> bool:
        """False once an event past ``MAX_EVENT_BYTES`` came: the rest passes unread."""
        return self._reading

    def feed(self, chunk: bytes, more: bool) -> bytes:
        if not self._reading:
            return chunk
        if (
            chunk.endswith(_NULL_USAGE_END)
            and not self._buffer
            and chunk.startswith(b"data: {")
            and chunk.find(b"\n", 7) == len(chunk) - 2
        ):
            # The common chunk: one whole event whose last member is ``"usage":null``, read
            # (and that member cut off) without parsing more than the choices.
            cut = self._null_usage_event(chunk)
            if cut is not None:
                return cut
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
        if len(out) == 1 and out[0] == chunk:
            return chunk  # nothing changed: the caller sends the message it has
        return b"".join(out)

    def _null_usage_event(self, chunk: bytes) -> bytes | None:
        """``chunk`` (``data: {...,"choices":[...],"usage":null}``, one event) with its
        choices read for their text, and without its usage when stripping; None to take
        the general way.

        The ``"usage"`` before the closing brace is the object's own member: a quote inside
        a string is escaped, and the brace is the object's last byte. When what lies between
        the first ``"choices":`` and that member is one JSON value, that key is the object's
        own too (a value that ends at the object's depth began at it): only it is parsed.
        """
        at = chunk.find(b'"choices":')
        if at < 0:
            return None
        if chunk.startswith(_DELTA_HEAD, at) and chunk.endswith(_DELTA_TAIL):
            # One choice of a content delta, as OpenAI and vLLM write it: a text without
            # quote or escape is its own JSON string.
            start, end = at + len(_DELTA_HEAD), len(chunk) - len(_DELTA_TAIL)
            if chunk.find(b'"', start, end) < 0 and chunk.find(b"\\", start, end) < 0:
                try:
                    text = chunk[start:end].decode()
                except UnicodeDecodeError:
                    return None
                if text:
                    self._pending.append(text)
                return chunk[: -len(_NULL_USAGE_END)] + b"}\n\n" if self._strip else chunk
        try:
            choices = _json.loads(chunk[at + 10 : -len(_NULL_USAGE_END)])
        except (ValueError, RecursionError):
            return None
        if not isinstance(choices, list) or not choices:
            return None
        pending = self._pending
        for choice in choices:
            if isinstance(choice, dict):
                choice_text(choice, pending)
        return chunk[: -len(_NULL_USAGE_END)] + b"}\n\n" if self._strip else chunk

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
            cut = _without_null_usage(data[0])
            if cut is not None:
                kept = [line for line in lines if not line.startswith(b"data:")]
                kept.append(b"data: " + cut)
                return b"\n".join(kept) + b"\n\n"
        try:  # the event is written anew by the standard library: every number as it was
            exact = json.loads(b"\n".join(data))
            del exact["usage"]
            text = json.dumps(exact, separators=(",", ":")).encode()
        except (ValueError, RecursionError):  # nested deeper than it can go: passed on as it came
            return event + b"\n\n"
        kept = [line for line in lines if not line.startswith(b"data:")]
        kept.append(b"data: " + text)
        return b"\n".join(kept) + b"\n\n"


_NULL_USAGE_END = b',"usage":null}\n\n'
_DELTA_HEAD = b'"choices":[{"index":0,"delta":{"content":"'
_DELTA_TAIL = b'"},"logprobs":null,"finish_reason":null}]' + _NULL_USAGE_END
_SPACE = b" \t\n\r"


def _without_null_usage(text: bytes) -> bytes | None:
    """``text`` (a JSON object whose one ``"usage"`` is a member's name) without that
    member, if it is ``null``, and the comma that joins it to a neighbour; else None."""
    at = text.find(b'"usage"')
    end = _skip(text, at + 7)
    if text[end : end + 1] != b":":
        return None
    end = _skip(text, end + 1)
    if text[end : end + 4] != b"null":
        return None
    end += 4
    follows = _skip(text, end)
    before = len(text[:at].rstrip(_SPACE))
    if text[before - 1 : before] == b"," and text[follows : follows + 1] in (b",", b"}"):
        return text[: len(text[: before - 1].rstrip(_SPACE))] + text[end:]
    if text[follows : follows + 1] == b",":
        return text[:at] + text[_skip(text, follows + 1) :]
    return None


def _skip(text: bytes, at: int) -> int:
    """The index of the first byte from ``at`` that is not JSON whitespace."""
    while text[at : at + 1] in (b" ", b"\t", b"\n", b"\r"):
        at += 1
    return at
