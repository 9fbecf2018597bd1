"""A real uvicorn (h11) in a thread with the options under test, and raw-socket HTTP for what httpx won't send."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from keylimit._types import ASGIApp

READY_DEADLINE = 10.0  # a guard against a hung start, not a timing claim


class Server:
    """``app`` served by uvicorn on a free loopback port; ``options`` go to ``uvicorn.Config``."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so (and accepted
        # sockets inherit it); without it every response waits out a 40 ms delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(2048)
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        settings: dict[str, Any] = {
            "lifespan": "on",
            "loop": "asyncio",
            "http": "h11",
            "log_level": "warning",
            "proxy_headers": False,  # the scope's client is the real peer
            "timeout_graceful_shutdown": 5,
            **options,
        }
        self.server = uvicorn.Server(uvicorn.Config(app, **settings))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + READY_DEADLINE
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.01)  # polling a starting thread; no test time passes on it
        return self

    @property
    def connections(self) -> int:
        """Connections uvicorn holds open now."""
        return len(self.server.server_state.connections)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._socket.close()


def client_from(address: str, base_url: str, **options: Any) -> httpx.AsyncClient:
    """An httpx client whose connections come from ``address`` (any 127.x.y.z on Linux)."""
    transport = httpx.AsyncHTTPTransport(local_address=address, limits=options.pop("limits", httpx.Limits()))
    return httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30.0, **options)


class RawResponse:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if self.headers.get("transfer-encoding") == "chunked":
            self.body = _dechunk(self.body)

    def json(self) -> Any:
        return json.loads(self.body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything up to the server's close. A server that refuses a request it has not read to
    the end closes with unread input, which the kernel turns into a reset: keep what came first."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = await reader.read(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One whole response (the server closes, or Content-Length says where it ends); 10 s guard."""

    async def read() -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            None,
        )
        rest = await (reader.readexactly(length) if length is not None else _until_closed(reader))
        return head + rest

    return RawResponse(await asyncio.wait_for(read(), 10))
