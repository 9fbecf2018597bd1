"""Streaming overhead, in-process: an SSE app streams ``chunks`` events with no delay; the
timestamps of the ``send()`` calls give the time to the first body byte and the time per
chunk after it. keylimit rewrites the request to ask for ``usage`` and strips it from the
stream again, so both subjects deliver the same events."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from typing import Any

from . import _common as c


async def stream_once(
    app: c.ASGIApp, headers: c.Headers, received: list[bytes] | None = None
) -> tuple[float, float, int]:
    """(µs to the first body byte, µs per later chunk, chunks with content) of one stream;
    the body chunks are appended to ``received`` if given."""
    stamps: list[float] = []
    status = 0
    body = c.STREAM_BODY
    sent = False
    done = asyncio.get_running_loop().create_future()

    async def receive() -> c.Message:
        # The body once; then, as a server does, wait for the client to go (after the end).
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done
        return {"type": "http.disconnect"}

    async def send(message: c.Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            if message.get("body"):
                stamps.append(time.perf_counter())
                if received is not None:
                    received.append(message["body"])
            if not message.get("more_body", False) and not done.done():
                done.set_result(None)

    t0 = time.perf_counter()
    await app(c.scope(headers, body), receive, send)
    if status != 200 or len(stamps) < 2:
        raise SystemExit(f"streaming subject answered {status} with {len(stamps)} chunks")
    return (stamps[0] - t0) * 1e6, (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e6, len(stamps)


async def run(chunks: int, streams: int) -> dict[str, Any]:
    bare = c.Subject(c.chat_app(chunks))
    await c.start(bare)
    keylimit = await c.protect_subject("memory://", chunks=chunks)
    subjects = {"bare": bare, "keylimit-mem": keylimit}
    samples: dict[str, dict[str, list[float]]] = {name: {"ttfb": [], "chunk": []} for name in subjects}
    counts: dict[str, int] = {}
    try:
        for s in subjects.values():
            for _ in range(50):
                await stream_once(s.app, s.headers)
        gc.collect()
        for _ in range(streams):
            for name, s in subjects.items():
                ttfb, per_chunk, count = await stream_once(s.app, s.headers)
                samples[name]["ttfb"].append(ttfb)
                samples[name]["chunk"].append(per_chunk)
                counts[name] = count
    finally:
        for s in subjects.values():
            await c.close(s)
    out: dict[str, Any] = {"chunks": chunks, "streams": streams}
    for name, xs in samples.items():
        out[name] = {
            "ttfb_us": round(statistics.median(xs["ttfb"]), 2),
            "per_chunk_us": round(statistics.median(xs["chunk"]), 2),
            "chunks_sent": counts[name],
        }
    out["added_ttfb_us"] = round(out["keylimit-mem"]["ttfb_us"] - out["bare"]["ttfb_us"], 2)
    out["added_per_chunk_us"] = round(out["keylimit-mem"]["per_chunk_us"] - out["bare"]["per_chunk_us"], 2)
    return out
