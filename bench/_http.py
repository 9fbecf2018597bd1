"""Over HTTP: uvicorn with one worker in a subprocess on a loopback port, loaded by ``wrk``
(C, one thread: not the bottleneck; its CPU use is recorded to show it) with a Lua script
that POSTs the chat body with the key. Throughput and latency, bare vs keylimit (memory),
in two uvicorn configurations (``CONFIGS``), all four servers' runs interleaved."""

from __future__ import annotations

import importlib.util
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import _common as c

ROOT = Path(__file__).resolve().parent.parent
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}

CONFIGS: dict[str, tuple[str, ...]] = {
    "h11": ("--http", "h11", "--loop", "asyncio"),
    "httptools": ("--http", "httptools", "--loop", "uvloop"),
}
"""uvicorn's HTTP parser and event loop, passed explicitly: ``h11`` is what plain ``uvicorn``
runs; ``httptools`` what ``uvicorn[standard]`` picks (and vLLM deployments run)."""
_NEEDS = {"httptools": ("httptools", "uvloop")}
SUBJECTS = ("bare", "floor", "lean", "keylimit-mem")
"""``floor``: the bare app behind a pass-through that reads the body and adds the nine
headers (``_common.floor_app``): what the server itself spends on a limiter's headers.
``lean``: the allowed path's work written straight in one function (``_common.lean_app``),
a lower bound for any limiter in Python that does what keylimit does."""
_APPS = {"bare": "bare", "floor": "floor", "lean": "lean", "keylimit-mem": "keylimit"}


class Server:
    """``uvicorn --factory bench.apps:<name>`` on a free port, one worker, with ``flags``."""

    def __init__(self, name: str, env: dict[str, str], flags: tuple[str, ...]) -> None:
        self.port = c.free_port()
        self.url = f"http://127.0.0.1:{self.port}{c.PATH}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                f"bench.apps:{name}",
                "--app-dir",
                str(ROOT),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
                *flags,
            ],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, headers: dict[str, str]) -> dict[str, str]:
        """Block until one POST answers 200; that answer's headers."""
        import httpx

        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise SystemExit(f"uvicorn exited: {err[-2000:]}")
            try:
                r = httpx.post(self.url, content=c.BODY, headers={"content-type": "application/json", **headers})
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("uvicorn did not start") from None
                time.sleep(0.05)
                continue
            if r.status_code != 200:
                raise SystemExit(f"the HTTP subject answered {r.status_code}: {r.text[:300]}")
            return dict(r.headers)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def lua_script(path: Path, headers: dict[str, str]) -> None:
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = [==[{c.BODY.decode()}]==]",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    latency = {q: _ms(m) for q, m in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", out, re.M)}
    if rps is None or "50" not in latency:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else None,
        "wrk_cpu_percent": round(100 * cpu / wall, 1),
    }


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return round(float(number) * _UNITS[unit], 3)


def _order(rounds: int) -> list[list[tuple[str, str]]]:
    """The runs of each round, (configuration, subject): every configuration's pair in turn,
    the pair's order and the configurations' order swapped every other round."""
    out = []
    for r in range(rounds):
        configs = list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))
        subjects = list(SUBJECTS) if r % 2 == 0 else list(reversed(SUBJECTS))
        out.append([(config, subject) for config in configs for subject in subjects])
    return out


async def run(seconds: int, rounds: int, connections: int) -> dict[str, Any]:
    if not shutil.which("wrk"):
        raise SystemExit("the HTTP section needs wrk (apt-get install -y wrk), or skip it with --skip http")
    missing = [m for config in CONFIGS for m in _NEEDS.get(config, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(
            f"the HTTP section needs {', '.join(missing)} (pip install -e '.[bench]', which has uvicorn[standard])"
        )
    tmp = c.tempdir()
    config = c.keylimit_config(tmp / "keys.db", "memory://")
    token = await c.create_key(config)
    env = {"KEYLIMIT_KEYS_URL": config.keys_url, "KEYLIMIT_LIMITS_URL": "memory://"}
    envs = {"bare": {}, "floor": {}, "lean": {}, "keylimit-mem": env}
    auth = {
        "bare": {},
        "floor": {},
        "lean": {"Authorization": f"Bearer {c.LEAN_TOKEN}"},
        "keylimit-mem": {"Authorization": f"Bearer {token}"},
    }
    for name in SUBJECTS:
        lua_script(tmp / f"{name}.lua", auth[name])
    servers: dict[tuple[str, str], Server] = {}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for cfg, flags in CONFIGS.items():
            for name in SUBJECTS:
                servers[cfg, name] = Server(_APPS[name], envs[name], flags)
                results[cfg, name] = []
        for (cfg, name), server in servers.items():
            answer = server.wait_ready(auth[name])
            if name == "keylimit-mem" and "x-ratelimit-remaining-requests" not in answer:
                raise SystemExit(f"keylimit over HTTP ({cfg}) answered without X-Ratelimit headers")
            wrk(server.url, tmp / f"{name}.lua", 1, connections)  # warm-up
        for runs in _order(rounds):
            for cfg, name in runs:
                server = servers[cfg, name]
                cpu0 = server.cpu_seconds()
                t0 = time.perf_counter()
                result = wrk(server.url, tmp / f"{name}.lua", seconds, connections)
                cpu = server.cpu_seconds() - cpu0
                result["server_cpu_percent"] = round(100 * cpu / (time.perf_counter() - t0), 1)
                results[cfg, name].append(result)
    finally:
        for server in servers.values():
            server.stop()
    out: dict[str, Any] = {
        "seconds": seconds,
        "rounds": rounds,
        "connections": connections,
        "server": "uvicorn, 1 worker",
        "load": "wrk -t1",
        "configs": list(CONFIGS),
    }
    for cfg, flags in CONFIGS.items():
        section: dict[str, Any] = {"flags": " ".join(flags)}
        for name in SUBJECTS:
            rs = results[cfg, name]
            section[name] = {
                k: round(statistics.median(r[k] for r in rs), 3)
                for k in ("rps", "p50_ms", "p99_ms", "wrk_cpu_percent", "server_cpu_percent")
            }
            section[name]["non_2xx"] = sum(r["non_2xx"] for r in rs)
            section[name]["rounds"] = rs
        section["throughput_ratio"] = round(section["keylimit-mem"]["rps"] / section["bare"]["rps"], 3)
        section["floor_ratio"] = round(section["floor"]["rps"] / section["bare"]["rps"], 3)
        section["lean_ratio"] = round(section["lean"]["rps"] / section["bare"]["rps"], 3)
        out[cfg] = section
    return out
