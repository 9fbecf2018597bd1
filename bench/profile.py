"""Where keylimit's time goes: cProfile over N in-process requests through ``Protect``.

    python bench/profile.py                     # memory backends, 20000 requests
    python bench/profile.py --limits redis      # a throwaway redis-server as the limit backend
    python bench/profile.py --stream            # SSE requests (64 events each)
    python bench/profile.py --sort cumulative --top 40 --out /tmp/kl.prof   # then: snakeviz /tmp/kl.prof

The same request and app as ``bench/run.py``'s in-process section, after a warm-up;
the bare app is profiled too (``--bare``) to tell its share from keylimit's.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    # This file's folder comes first on sys.path when it is run as a script, and its name
    # would hide the stdlib ``profile`` that cProfile imports: import from the root instead.
    sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402

from bench import _common as c  # noqa: E402
from bench import _streaming  # noqa: E402


async def build(limits: str, bare: bool, chunks: int) -> c.Subject:
    if bare:
        subject = c.Subject(c.chat_app(chunks))
        await c.start(subject)
        return subject
    url = "memory://" if limits == "memory" else c.RedisServer().url
    return await c.protect_subject(url, chunks=chunks)


async def profile(args: argparse.Namespace) -> pstats.Stats:
    subject = await build(args.limits, args.bare, args.chunks)
    app, headers = subject.app, subject.headers

    async def one() -> None:
        if args.stream:
            await _streaming.stream_once(app, headers)
        else:
            await c.request(app, headers)

    try:
        await c.check(subject, "profiled subject")
        for _ in range(500):
            await one()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.n):
            await one()
        profiler.disable()
    finally:
        await c.close(subject)
    if args.out:
        profiler.dump_stats(args.out)
    return pstats.Stats(profiler, stream=io.StringIO())


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/profile.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="profiled requests (20000)")
    p.add_argument("--limits", choices=["memory", "redis"], default="memory", help="limit backend (memory)")
    p.add_argument("--stream", action="store_true", help="SSE streaming requests instead of JSON")
    p.add_argument("--chunks", type=int, default=64, help="SSE events per stream (64)")
    p.add_argument("--bare", action="store_true", help="profile the bare app instead, for comparison")
    p.add_argument("--sort", default="tottime", help="pstats sort key: tottime (default), cumulative, ncalls")
    p.add_argument("--top", type=int, default=30, help="rows to print (30)")
    p.add_argument("--match", help="only rows whose file:function matches this regex (e.g. keylimit)")
    p.add_argument("--out", help="also write the raw profile here (for snakeviz, gprof2dot)")
    args = p.parse_args()
    stats = asyncio.run(profile(args))
    restrictions: list[str | int] = [args.match] if args.match else []
    stats.sort_stats(args.sort).print_stats(*restrictions, args.top)
    text = stats.stream.getvalue()  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"{args.n} requests, {total / args.n * 1e6:.1f} us per request under the profiler")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
