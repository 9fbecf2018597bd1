"""Where keylimit's in-process overhead goes, part by part, by taking each part out.

    python bench/breakdown.py                  # wall time, interleaved rounds (noisy on small machines)
    python bench/breakdown.py --callgrind      # instructions per request under valgrind: the same every run

The subject is ``Protect`` with memory backends on the benchmark's chat request (as
``bench/run.py``'s ``keylimit-mem``). Each variant replaces one part with a constant of
the same shape (the same decision, the same headers, the same token request), so the
difference to the full subject is what that part costs. Two references: the bare app, and
``floor``, a pass-through middleware that does only what any body-reading, header-adding
middleware must (read the body, replay it, add nine headers to the response).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path[0] = str(ROOT)

from bench import _common as c  # noqa: E402

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


@contextmanager
def without(part: str, subject: c.Subject) -> Iterator[None]:
    """``subject`` with ``part`` replaced by a constant of what it produced for the first request."""
    import keylimit._ratelimit as rl
    from keylimit._authenticator import Authenticator
    from keylimit._headers import rate_limit_headers
    from keylimit._tokens import EstimatingTokenCounter
    from keylimit._usage import inspect_request
    from keylimit.backends.memory import MemoryBackend

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, value)

    if part == "-key check":
        principal = subject.info["principal"]

        patch(Authenticator, "recall", lambda self, header: principal)
    elif part == "-prompt estimate":
        fixed = inspect_request(c.BODY, EstimatingTokenCounter())
        patch(rl, "inspect_request", lambda body, counter: fixed)
    elif part == "-admission":
        decision = subject.info["decision"]

        async def acquire(self: Any, *args: Any) -> Any:
            return decision

        patch(MemoryBackend, "acquire", acquire)
        patch(MemoryBackend, "settle", lambda self, *args: None)
    elif part == "-headers":
        headers = rate_limit_headers(subject.info["decision"], time.time())
        patch(rl, "rate_limit_headers", lambda decision, now, ietf=False: list(headers))
    elif part == "-response reading":
        patch(rl, "tap_for", lambda *args: None)
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


async def subjects() -> tuple[dict[str, c.Subject], list[c.Subject]]:
    bare = c.Subject(c.chat_app())
    await c.start(bare)
    protect = await c.protect_subject("memory://")
    # What the constants stand for: the principal and the decision of a real request.
    authenticator = protect.app.authenticator  # type: ignore[attr-defined]
    header = dict(protect.headers)[b"authorization"]
    protect.info["principal"] = await authenticator.authenticate(header, "127.0.0.1")
    from keylimit._plans import Plans
    from keylimit._ratelimit import account_identity

    principal = protect.info["principal"]
    limits = Plans().resolve(principal.plan, principal.limits).as_tuple()
    backend = protect.app.limits  # type: ignore[attr-defined]
    protect.info["decision"] = await backend.peek(account_identity(principal.account_id), limits, time.time())
    floor = c.Subject(c.floor_app())
    await c.start(floor)
    lean = c.Subject(c.lean_app(header), protect.headers)
    await c.start(lean)
    by_name = dict.fromkeys(VARIANTS, protect)
    by_name["bare"], by_name["floor"], by_name["lean"] = bare, floor, lean
    return by_name, [bare, protect, floor, lean]


async def measure(names: list[str], n: int, rounds: int) -> dict[str, float]:
    """Median µs per request of each variant, variants interleaved round by round."""
    by_name, owned = await subjects()
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for r in range(rounds + 1):  # round 0 warms up
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                subject = by_name[name]
                with without(name, subject):
                    gc.collect()
                    t0 = time.perf_counter()
                    for _ in range(n):
                        await c.request(subject.app, subject.headers)
                    elapsed = (time.perf_counter() - t0) / n * 1e6
                if r:
                    times[name].append(elapsed)
    finally:
        for subject in owned:
            await c.close(subject)
    return {name: statistics.median(xs) for name, xs in times.items()}


async def _run_one(name: str, n: int) -> None:
    """For --callgrind: ``n`` requests of one variant after a warm-up (also run with n=0)."""
    by_name, owned = await subjects()
    subject = by_name[name]
    with without(name, subject):
        for _ in range(300 + n):
            await c.request(subject.app, subject.headers)
    for s in owned:
        await c.close(s)


def callgrind(names: list[str], n: int) -> dict[str, float]:
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

    return {name: (instructions(name, n) - instructions(name, 0)) / n for name in names}


def report(figures: dict[str, float], unit: str, digits: int) -> str:
    bare, full = figures["bare"], figures["full"]
    overhead = full - bare
    lines = [f"{'variant':20s} {unit:>14s} {'over bare':>12s}  part's cost  share   what"]
    for name, value in figures.items():
        over = value - bare
        if name.startswith("-"):
            part = full - value
            cost = f"{part:11.{digits}f}  {100 * part / overhead:4.0f}%"
        else:
            cost = " " * 18
        lines.append(f"{name:20s} {value:14.{digits}f} {over:12.{digits}f}  {cost}   {VARIANTS[name]}")
    parts = sum(full - v for k, v in figures.items() if k.startswith("-"))
    lines.append(
        f"\nkeylimit's overhead {overhead:.{digits}f} {unit}: the parts above {parts:.{digits}f}, "
        f"the rest ({overhead - parts:.{digits}f}) is the two layers' own calls, awaits and wrappers."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/breakdown.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3000, help="requests per variant per round (3000; callgrind 2000)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    p.add_argument("--callgrind", action="store_true", help="count instructions under valgrind instead of timing")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    names = list(VARIANTS)
    if a.one:
        asyncio.run(_run_one(a.one, a.n))
        return 0
    if a.callgrind:
        figures = callgrind(names, 2000 if a.n == 3000 else a.n)
        print(report(figures, "instr/request", 0))
    else:
        figures = asyncio.run(measure(names, a.n, a.rounds))
        print(report(figures, "us/request", 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
