"""keylimit's benchmark suite: every measurement of issue 5 side by side in one run.

    python bench/run.py                      # everything, full sizes (about 4-6 minutes on 2 cores)
    python bench/run.py --quick              # a smoke run with small sizes (about 1-2 minutes)
    python bench/run.py --only inprocess,redis --n 5000 --rounds 9
    python bench/run.py --skip http,cold --keys 1000000 --accounts 100000

Prints a table per section and the issue's targets with PASS/FAIL, and writes the whole
result as JSON (``--out``, default bench/results/latest.json). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    # Run as a script: import this folder as the package ``bench`` from the repository root.
    sys.path[0] = str(ROOT)

from bench import _cold, _http, _inprocess, _redis_cost, _report, _scale, _streaming  # noqa: E402

SECTIONS = ("inprocess", "redis", "streaming", "scale", "http", "cold")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few rounds: a smoke run")
    p.add_argument("--only", help=f"comma-separated sections to run ({', '.join(SECTIONS)})")
    p.add_argument("--skip", help="comma-separated sections to leave out")
    p.add_argument("--subjects", help=f"in-process subjects (default all: {', '.join(_inprocess.SUBJECTS)})")
    p.add_argument("--n", type=int, help="requests per subject per round, in-process (3000; quick 1000)")
    p.add_argument("--rounds", type=int, help="interleaved rounds, in-process and scale (7; quick 3)")
    p.add_argument("--redis-requests", type=int, help="requests counted in the Redis section (3000; quick 500)")
    p.add_argument("--keys", type=int, help="keys in the big key store (1000000; quick 100000)")
    p.add_argument("--accounts", type=int, help="active accounts in the big limit backend (100000; quick 10000)")
    p.add_argument("--chunks", type=int, default=64, help="SSE events per stream (64)")
    p.add_argument("--streams", type=int, help="streams per subject (1000; quick 200)")
    p.add_argument("--http-seconds", type=int, help="seconds per wrk run (10; quick 2)")
    p.add_argument("--http-rounds", type=int, help="wrk runs per subject, alternating (3; quick 1)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--cold", type=int, help="cold verifications run at once (100; quick 20)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json", help="JSON results file")
    a = p.parse_args(argv)
    full = {
        "n": 3000,
        "rounds": 7,
        "redis_requests": 3000,
        "keys": 1_000_000,
        "accounts": 100_000,
        "streams": 1000,
        "http_seconds": 10,
        "http_rounds": 3,
        "cold": 100,
    }
    quick = {
        "n": 1000,
        "rounds": 3,
        "redis_requests": 500,
        "keys": 100_000,
        "accounts": 10_000,
        "streams": 200,
        "http_seconds": 2,
        "http_rounds": 1,
        "cold": 20,
    }
    for name, value in (quick if a.quick else full).items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    chosen = set(_names(a.only, SECTIONS)) if a.only else set(SECTIONS)
    chosen -= set(_names(a.skip, SECTIONS)) if a.skip else set()
    a.sections = [s for s in SECTIONS if s in chosen]
    a.subject_list = _names(a.subjects, _inprocess.SUBJECTS) if a.subjects else list(_inprocess.SUBJECTS)
    return a


def _names(text: str, known: tuple[str, ...]) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


async def measure(a: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for section in a.sections:
        t0 = time.perf_counter()
        print(f"[{section}] ...", file=sys.stderr, flush=True)
        if section == "inprocess":
            results[section] = await _inprocess.run(a.subject_list, a.n, a.rounds)
        elif section == "redis":
            results[section] = await _redis_cost.run(a.redis_requests)
        elif section == "streaming":
            results[section] = await _streaming.run(a.chunks, a.streams)
        elif section == "scale":
            results[section] = await _scale.run(a.keys, a.accounts, a.n, a.rounds)
        elif section == "http":
            results[section] = await _http.run(a.http_seconds, a.http_rounds, a.connections)
        elif section == "cold":
            results[section] = await _cold.run(a.cold, 3 if a.quick else 10)
        results[section]["section_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[{section}] done in {results[section]['section_seconds']} s", file=sys.stderr, flush=True)
    return results


def meta(a: argparse.Namespace) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in (
        "keylimit",
        "starlette",
        "redis",
        "limits",
        "slowapi",
        "argon2-cffi",
        "uvicorn",
        "httptools",
        "uvloop",
        "httpx",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
        "quick": a.quick,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {_cpus()} CPUs",
        "redis_server": _output(["redis-server", "--version"]),
        "wrk": next(iter(_output(["wrk", "--version"]).splitlines()), None),
        "versions": versions,
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def _output(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip()


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    started = time.perf_counter()
    results = asyncio.run(measure(a))
    document: dict[str, Any] = {"meta": meta(a), "results": results, "targets": _report.targets(results)}
    document["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    print(_report.render(document))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
