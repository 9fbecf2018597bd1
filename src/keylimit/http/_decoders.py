"""Undoing a response's content codings as it passes, in bounded pieces: ``gzip`` (several
members too) and ``deflate`` (zlib-wrapped or raw, as browsers accept), one after another
when several are listed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from ._encodings import READABLE

SLICE_BYTES = 64 * 1024
"""A decompressor returns at most this much at a time (a small input may expand a thousandfold)."""
MAX_DECODED_BYTES = 64 * 1024 * 1024
"""A response that decodes to more than this is read no further (a decompression bomb)."""


class DecodeError(Exception):
    """The coded bytes are corrupt, or decode to more than ``MAX_DECODED_BYTES``."""


def stages(content_encoding: bytes) -> tuple[bool, ...] | None:
    """The decoders ``content_encoding`` needs, last coding first (True: gzip, False:
    deflate; identity needs none), or None when one of its codings cannot be read."""
    codings = [c.strip().lower() for c in content_encoding.split(b",")]
    if not all(c in READABLE for c in codings if c):
        return None
    return tuple(c != b"deflate" for c in reversed(codings) if c and c != b"identity")


class Decoder:
    """Undoes ``stages`` incrementally; ``decode`` yields the decoded bytes of each chunk."""

    __slots__ = ("_stages", "decoded")

    def __init__(self, kinds: tuple[bool, ...]) -> None:
        self._stages = [_Stage(gzip) for gzip in kinds]
        self.decoded = 0

    @property
    def complete(self) -> bool:
        """Whether every coded stream fed so far has ended (nothing cut off)."""
        return all(stage.complete for stage in self._stages)

    def decode(self, chunk: bytes) -> Iterator[bytes]:
        pieces: Iterable[bytes] = (chunk,)
        for stage in self._stages:
            pieces = _through(stage, pieces)
        for piece in pieces:
            self.decoded += len(piece)
            if self.decoded > MAX_DECODED_BYTES:
                raise DecodeError("the response decodes to more than the bound")
            yield piece


def _through(stage: _Stage, pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from stage.decode(piece)


class _Stage:
    __slots__ = ("_d", "_done", "_gzip", "_head")

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._d: zlib._Decompress | None = None
        self._head = b""
        self._done = False

    @property
    def complete(self) -> bool:
        return self._done or (self._d is None and not self._head)

    def decode(self, data: bytes) -> Iterator[bytes]:
        while not self._done:
            d = self._d
            if d is None:
                d = self._d = self._start(data)
                if d is None:
                    return
                data, self._head = self._head, b""
            try:
                out = d.decompress(data, SLICE_BYTES)
            except zlib.error as exc:
                raise DecodeError(str(exc)) from None
            if out:
                yield out
            if d.eof:
                # gzip: the next member may follow (after zero padding); deflate ends here.
                data, self._d = d.unused_data, None
                self._done = not self._gzip
            elif len(out) == SLICE_BYTES:
                data = d.unconsumed_tail  # more output may wait even when all input was taken
            elif d.unconsumed_tail:
                data = d.unconsumed_tail
            else:
                return

    def _start(self, data: bytes) -> zlib._Decompress | None:
        """A decompressor for the next stream, once its first bytes tell which; None: wait for more."""
        data = self._head + data
        if self._gzip:
            data = data.lstrip(b"\0")
            self._head = data
            return zlib.decompressobj(16 + zlib.MAX_WBITS) if data else None
        self._head = data
        if len(data) < 2:
            return None
        zlib_wrapped = data[0] & 0x0F == 8 and data[0] >> 4 <= 7 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
