"""Which tap reads a response, by its content type and coding: ``tap_for``. A response in
``gzip`` or ``deflate`` is read through a decompressor (``_decoders``); one in a coding
keylimit cannot read is charged as much as it may have cost.
"""

from __future__ import annotations

import logging

from ._decoders import DecodeError, Decoder, stages
from ._sse import SSETap
from ._taps import JSONTap, Tap

logger = logging.getLogger("keylimit.limits")


class DecodingTap(Tap):
    """Reads a response in ``gzip`` or ``deflate`` through ``decoder``, with ``inner`` as the
    tap of its content type. The bytes go on as they came, unless ``inner`` rewrites them
    (usage keylimit asked for is stripped): then they go on decoded, the coding undone.

    If the bytes cannot be decoded (corrupt, or a decompression bomb), reading stops there:
    the usage read so far stands, else the response is charged as an unreadable one.
    """

    __slots__ = ("_compressed", "_decoder", "_inner", "_reserve", "_stopped")

    def __init__(self, inner: Tap, decoder: Decoder, reserve: int) -> None:
        super().__init__()
        self._inner = inner
        self._decoder = decoder
        self._reserve = reserve
        self._compressed = 0
        self._stopped = False

    @property
    def rewrites(self) -> bool:
        return self._inner.rewrites

    @property
    def decodes(self) -> bool:
        return self._inner.rewrites

    def feed(self, chunk: bytes, more: bool) -> bytes:
        self._compressed += len(chunk)
        inner = self._inner
        rewrites = inner.rewrites
        out: list[bytes] = []
        if not self._stopped:
            try:
                for piece in self._decoder.decode(chunk):
                    out.append(inner.feed(piece, True))
                    if not rewrites and isinstance(inner, SSETap) and not inner.reading:
                        self._stop(None)  # the tap reads no further: neither does the decoder
                        break
            except DecodeError as exc:
                self._stop(exc)
            if self._stopped or not more:
                out.append(inner.feed(b"", False))
        self.usage = inner.usage
        if self._stopped and self.usage is None:
            self.usage = {"completion_tokens": self._reserve or self._compressed}
        return b"".join(out) if rewrites else chunk

    def _stop(self, error: DecodeError | None) -> None:
        self._stopped = True
        if error is not None and not _warned(b"undecodable"):
            logger.warning(
                "a compressed response could not be read to its end (%s): charged its usage if read, "
                "else max_tokens, else one completion token per compressed byte",
                error,
            )

    def commit(self) -> None:
        self._inner.commit()

    def sent_text(self) -> str:
        return self._inner.sent_text()


class OpaqueTap(Tap):
    """A response in a coding keylimit cannot read, passed on untouched and charged as much
    as it may have cost: ``max_tokens`` when the request set it, else one completion token
    per byte (compressed text rarely holds more tokens than bytes)."""

    __slots__ = ("_reserve", "_size")

    def __init__(self, content_encoding: bytes, reserve: int) -> None:
        super().__init__()
        self._reserve = reserve
        self._size = 0
        self.usage = {"completion_tokens": reserve} if reserve else None
        if not _warned(content_encoding):
            logger.warning(
                "a response in Content-Encoding %r, which keylimit cannot read: charged max_tokens, "
                "else one completion token per byte",
                content_encoding.decode("latin-1"),
            )

    def feed(self, chunk: bytes, more: bool) -> bytes:
        if not self._reserve:
            self._size += len(chunk)
            self.usage = {"completion_tokens": self._size}
        return chunk


def _warned(what: bytes) -> bool:
    """Whether ``what`` was logged already (each once per process), noting it now."""
    if what in _WARNED or len(_WARNED) >= 64:
        return True
    _WARNED.add(what)
    return False


_WARNED: set[bytes] = set()


def tap_for(content_type: bytes, content_encoding: bytes | None, strip: bool, reserve: int = 0) -> Tap | None:
    """The tap for a response of ``content_type`` in ``content_encoding``, or None to read
    nothing. ``reserve``: the request's ``max_tokens``, charged when the coding is unreadable."""
    kind = _KINDS.get(content_type, _UNSEEN)
    if kind is _UNSEEN:
        kind = tap_kind(content_type)
        if len(_KINDS) < 256:  # a server sends few distinct content types: classify each once
            _KINDS[content_type] = kind
    tap: Tap
    if kind is JSONTap:
        tap = JSONTap()
    elif kind is SSETap:
        tap = SSETap(strip)
    else:
        return None
    if content_encoding is None:
        return tap
    kinds = stages(content_encoding)
    if kinds is None:
        return OpaqueTap(content_encoding, reserve)
    return DecodingTap(tap, Decoder(kinds), reserve) if kinds else tap


_UNSEEN = object()
_KINDS: dict[bytes, object] = {}


def tap_kind(content_type: bytes) -> type[Tap] | None:
    """The tap class for a response of ``content_type``, or None to read nothing."""
    if content_type.partition(b";")[0].strip().lower() == b"text/event-stream":
        return SSETap
    if is_json(content_type):
        return JSONTap
    return None


def is_json(content_type: bytes) -> bool:
    """A JSON media type (``application/json``, ``…+json``), parameters aside."""
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")
