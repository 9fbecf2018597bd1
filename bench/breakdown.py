"""Where keylimit's in-process overhead goes, part by part, by taking each part out.

    python bench/breakdown.py                  # wall time, interleaved rounds (noisy on small machines)
    python bench/breakdown.py --callgrind      # instructions per request under valgrind: the same every run

The subject is ``Protect`` with memory backends on the benchmark's chat request (as
``bench/run.py``'s ``keylimit-mem``). Each variant replaces one part with a constant of
the same shape (the same decision, the same headers, the same token request), so the
difference to the full subject is what that part costs. Two references: the bare app, and
``floor``, a pass-through middleware that does only what any body-reading, header-adding
middleware must (read the body, replay it, add nine headers to the response).

Streams: the same two apps answer a streamed chat request of ``--chunks`` SSE chunks. The
client asks for no usage, so keylimit asks the app for it (``stream_options.include_usage``:
every chunk then carries ``"usage":null`` and a usage-only chunk comes last) and strips it
again; both deliver the same bytes. The cost per chunk is (keylimit's stream - the bare
app's stream) / chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path[0] = str(ROOT)

from bench import _common as c  # noqa: E402
from bench import _streaming  # noqa: E402

VARIANTS = {
    "bare": "the Starlette app alone",
    "floor": "a middleware that reads and replays the body and adds nine headers, nothing else",
    "lean": "the allowed path's work written straight in one function: what the leanest keylimit could cost",
    "full": "Protect, memory backends: everything",
    "-key check": "the Authorization header looked up in the verified-key cache",
    "-prompt estimate": "the body parsed (orjson) and its prompt tokens estimated",
    "-admission": "the memory backend: sliding-window check and charge, then the settlement",
    "-headers": "the X-Ratelimit-* values built",
    "-response reading": "the response's usage read (and the settlement computed from it)",
}
STREAMS = {
    "bare stream": "the bare app: one SSE stream of --chunks chunks, no usage asked for",
    "full stream": "Protect: the same stream, usage asked of the app, read from every chunk and stripped",
    "-chunk stripping": "the chunks read but sent on as they came (the usage asked for left in)",
    "-chunk reading": "the chunks passed on unread (no tap)",
}


@contextmanager
def without(part: str, subject: c.Subject) -> Iterator[None]:
    """``subject`` with ``part`` replaced by a constant of what it produced for the first request."""
    import keylimit.ratelimit._middleware as rl
    from keylimit.auth._authenticator import Authenticator
    from keylimit.backends.memory import MemoryBackend
    from keylimit.http._request import inspect_request
    from keylimit.ratelimit._headers import rate_limit_headers
    from keylimit.ratelimit._tokens import EstimatingTokenCounter

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, value)

    if part == "-key check":
        principal = subject.info["principal"]

        patch(Authenticator, "recall", lambda self, *args: principal)
    elif part == "-prompt estimate":
        fixed = inspect_request(c.BODY, EstimatingTokenCounter())
        patch(rl, "inspect_request", lambda *args: fixed)
    elif part == "-admission":
        decision = subject.info["decision"]

        async def acquire(self: Any, *args: Any) -> Any:
            return decision

        patch(MemoryBackend, "acquire", acquire)
        patch(MemoryBackend, "settle", lambda self, *args: None)
    elif part == "-headers":
        headers = rate_limit_headers(subject.info["decision"], time.time())
        patch(rl, "rate_limit_headers", lambda *args, **kwargs: list(headers))
    elif part in ("-response reading", "-chunk reading"):
        patch(rl, "tap_for", lambda *args: None)
    elif part == "-chunk stripping":
        tap_for: Any = rl.__dict__["tap_for"]
        at = list(inspect.signature(tap_for).parameters).index("strip")
        patch(rl, "tap_for", lambda *args: tap_for(*args[:at], False, *args[at + 1 :]))
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


async def subjects(chunks: int) -> tuple[dict[str, c.Subject], list[c.Subject]]:
    bare = c.Subject(c.chat_app(chunks))
    await c.start(bare)
    protect = await c.protect_subject("memory://", chunks=chunks)
    # What the constants stand for: the principal and the decision of a real request.
    authenticator = protect.app.authenticator  # type: ignore[attr-defined]
    header = dict(protect.headers)[b"authorization"]
    protect.info["principal"] = await authenticator.authenticate(header, "127.0.0.1")
    from keylimit.ratelimit._middleware import account_identity
    from keylimit.ratelimit._plans import Plans

    principal = protect.info["principal"]
    limits = Plans().resolve(principal.plan, principal.limits).as_tuple()
    backend = protect.app.limits  # type: ignore[attr-defined]
    protect.info["decision"] = await backend.peek(account_identity(principal.account_id), limits, time.time())
    await same_stream(bare, protect)
    floor = c.Subject(c.floor_app())
    await c.start(floor)
    lean = c.Subject(c.lean_app(header), protect.headers)
    await c.start(lean)
    by_name = dict.fromkeys(VARIANTS, protect)
    by_name["bare"], by_name["floor"], by_name["lean"] = bare, floor, lean
    by_name.update(dict.fromkeys(STREAMS, protect))
    by_name["bare stream"] = bare
    return by_name, [bare, protect, floor, lean]


async def same_stream(bare: c.Subject, protect: c.Subject) -> None:
    """Both subjects deliver the same bytes: keylimit strips all the usage it asked for."""
    sent: dict[str, list[bytes]] = {"bare": [], "keylimit": []}
    await _streaming.stream_once(bare.app, bare.headers, sent["bare"])
    await _streaming.stream_once(protect.app, protect.headers, sent["keylimit"])
    if b"".join(sent["bare"]) != b"".join(sent["keylimit"]) or b'"usage"' in b"".join(sent["keylimit"]):
        raise SystemExit(f"the streams differ:\n{sent['bare'][-3:]}\n{sent['keylimit'][-3:]}")


def call(name: str, subject: c.Subject) -> c.Call:
    """One request of variant ``name`` (a whole stream for the stream variants)."""
    if name in STREAMS:
        return lambda: _streaming.stream_once(subject.app, subject.headers)
    return lambda: c.request(subject.app, subject.headers)


async def measure(names: list[str], n: int, streams: int, rounds: int, chunks: int) -> dict[str, float]:
    """Median µs per request (per stream) of each variant, variants interleaved round by round."""
    by_name, owned = await subjects(chunks)
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for r in range(rounds + 1):  # round 0 warms up
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                one, count = call(name, by_name[name]), streams if name in STREAMS else n
                with without(name, by_name[name]):
                    gc.collect()
                    t0 = time.perf_counter()
                    for _ in range(count):
                        await one()
                    elapsed = (time.perf_counter() - t0) / count * 1e6
                if r:
                    times[name].append(elapsed)
    finally:
        for subject in owned:
            await c.close(subject)
    return {name: statistics.median(xs) for name, xs in times.items()}


async def _run_one(name: str, n: int, chunks: int) -> None:
    """For --callgrind: ``n`` requests (streams) of one variant after a warm-up (also run with n=0)."""
    by_name, owned = await subjects(chunks)
    one = call(name, by_name[name])
    with without(name, by_name[name]):
        for _ in range((10 if name in STREAMS else 300) + n):
            await one()
    for s in owned:
        await c.close(s)


def callgrind(names: list[str], n: int, streams: int, chunks: int, jobs: int) -> dict[str, float]:
    if not shutil.which("valgrind"):
        raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")

    def instructions(name: str, count: int) -> int:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
                f"--one={name}",
                "--n",
                str(count),
                "--chunks",
                str(chunks),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        ).stderr
        found = re.search(r"Collected : (\d+)", out)
        if found is None:
            raise SystemExit(f"no instruction count from valgrind:\n{out[-2000:]}")
        return int(found.group(1))

    counts = {name: streams if name in STREAMS else n for name in names}
    runs = [(name, count) for name in names for count in (counts[name], 0)]
    with ThreadPoolExecutor(jobs) as pool:  # counts do not depend on what else runs
        found = dict(zip(runs, pool.map(lambda run: instructions(*run), runs), strict=True))
    return {name: (found[name, counts[name]] - found[name, 0]) / counts[name] for name in names}


def report(figures: dict[str, float], unit: str, digits: int, chunks: int) -> str:
    bare, full = figures["bare"], figures["full"]
    overhead = full - bare
    lines = [f"{'variant':20s} {unit + '/request':>16s} {'over bare':>12s}  part's cost  share   what"]
    for name, value in figures.items():
        if name in STREAMS:
            continue
        over = value - bare
        if name.startswith("-"):
            part = full - value
            cost = f"{part:11.{digits}f}  {100 * part / overhead:4.0f}%"
        else:
            cost = " " * 18
        lines.append(f"{name:20s} {value:16.{digits}f} {over:12.{digits}f}  {cost}   {VARIANTS[name]}")
    parts = sum(full - v for k, v in figures.items() if k.startswith("-") and k in VARIANTS)
    lines.append(
        f"\nkeylimit's overhead {overhead:.{digits}f} {unit}: the parts above {parts:.{digits}f}, "
        f"the rest ({overhead - parts:.{digits}f}) is the two layers' own calls, awaits and wrappers."
    )
    if "lean" in figures:
        lean = figures["lean"] - bare
        lines.append(f"keylimit's overhead / lean's overhead: {overhead / lean:.2f} (the goal: at most 1.5)")
    if "bare stream" in figures and "full stream" in figures:
        lines.append(stream_report(figures, unit, digits, chunks))
    return "\n".join(lines)


def stream_report(figures: dict[str, float], unit: str, digits: int, chunks: int) -> str:
    bare, full = figures["bare stream"], figures["full stream"]
    lines = [f"\n{'stream variant':20s} {unit + '/stream':>16s} {'over bare':>12s} {'per chunk':>10s}  part's cost"]
    for name, what in STREAMS.items():
        value = figures.get(name)
        if value is None:
            continue
        over = value - bare
        part = f"{(full - value) / chunks:11.{digits}f}" if name.startswith("-") else " " * 11
        lines.append(
            f"{name:20s} {value:16.{digits}f} {over:12.{digits}f} {over / chunks:10.{digits}f}  {part}   {what}"
        )
    request = figures["full"] - figures["bare"]
    lines.append(
        f"\nkeylimit per SSE chunk: (full stream - bare stream) / {chunks} = {(full - bare) / chunks:.{digits}f} "
        f"{unit} (the request's own overhead / {chunks}: {request / chunks:.{digits}f})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/breakdown.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3000, help="requests per variant per round (3000; callgrind 2000)")
    p.add_argument("--streams", type=int, default=60, help="streams per stream variant per round (60; callgrind 40)")
    p.add_argument("--chunks", type=int, default=200, help="SSE chunks per stream (200)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    p.add_argument("--callgrind", action="store_true", help="count instructions under valgrind instead of timing")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="valgrind runs at once (one per CPU)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    names = [*VARIANTS, *STREAMS]
    if a.one:
        asyncio.run(_run_one(a.one, a.n, a.chunks))
        return 0
    if a.callgrind:
        n, streams = 2000 if a.n == 3000 else a.n, 40 if a.streams == 60 else a.streams
        figures = callgrind(names, n, streams, a.chunks, a.jobs)
        print(report(figures, "instr", 0, a.chunks))
    else:
        figures = asyncio.run(measure(names, a.n, a.streams, a.rounds, a.chunks))
        print(report(figures, "us", 2, a.chunks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
