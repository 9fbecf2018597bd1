"""The issue's targets, judged from the measured ratios, and the printed tables."""

from __future__ import annotations

from typing import Any


def _target(
    name: str, measured: float, limit: float, unit: str, ok: bool, detail: str, *, info: bool = False
) -> dict[str, Any]:
    """One row of the targets; ``info`` rows are not the issue's targets: their result is
    "info" whatever the figure, ``limit`` is there for comparison."""
    return {
        "target": name,
        "measured": round(measured, 3),
        "limit": limit,
        "unit": unit,
        "result": "info" if info else "PASS" if ok else "FAIL",
        "detail": detail,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ip = results.get("inprocess", {}).get("overhead_us", {})
    us = results.get("inprocess", {}).get("us_per_request", {})
    if "keylimit-mem" in ip:
        ovh = ip["keylimit-mem"]
        out.append(
            _target(
                "memory backends: overhead <= 10 us",
                ovh,
                10,
                "us",
                ovh <= 10,
                f"keylimit-mem {us['keylimit-mem']} us - bare {us['bare']} us",
            )
        )
        if "slowapi-mem" in ip:
            ratio = ovh / ip["slowapi-mem"]
            out.append(
                _target(
                    "memory backends: overhead <= 1/4 of slowapi-mem's",
                    ratio,
                    0.25,
                    "x",
                    ratio <= 0.25,
                    f"{ovh} us / {ip['slowapi-mem']} us",
                )
            )
    if "lean" in ip:
        out.append(
            _target(
                "the lean lower bound: overhead (for comparison with 10 us)",
                ip["lean"],
                10,
                "us",
                ip["lean"] <= 10,
                f"lean {us['lean']} us - bare {us['bare']} us: keylimit's work with no structure",
                info=True,
            )
        )
    if "keylimit-redis" in ip and "redis-rtt" in us:
        ratio = ip["keylimit-redis"] / us["redis-rtt"]
        out.append(
            _target(
                "Redis backends: overhead <= 1.3 x one Redis round trip",
                ratio,
                1.3,
                "x",
                ratio <= 1.3,
                f"{ip['keylimit-redis']} us / {us['redis-rtt']} us (EVALSHA)",
            )
        )
    if "keylimit-redis" in ip and ip.get("bare+rtt", 0) > 0:
        ratio = ip["keylimit-redis"] / ip["bare+rtt"]
        out.append(
            _target(
                "Redis backends: overhead / in-context round trip (bare+rtt - bare)",
                ratio,
                1.3,
                "x",
                ratio <= 1.3,
                f"{ip['keylimit-redis']} us / {ip['bare+rtt']} us (bare's request then EVALSHA, keylimit's client)",
                info=True,
            )
        )
    http: dict[str, Any] = results.get("http") or {}
    for cfg in http.get("configs", []):
        h = http[cfg]
        ratio = h["throughput_ratio"]
        out.append(
            _target(
                f"HTTP throughput with keylimit >= 90% of bare ({cfg})",
                ratio,
                0.9,
                "x",
                ratio >= 0.9,
                f"{h['keylimit-mem']['rps']} / {h['bare']['rps']} requests/s, uvicorn {h['flags']}",
            )
        )
        for name, what, why in (
            ("floor", "a pass-through adding the nine headers", "the server's own cost of the headers"),
            ("lean", "the lean lower bound", "keylimit's work with no structure"),
        ):
            if f"{name}_ratio" in h:
                ratio = h[f"{name}_ratio"]
                out.append(
                    _target(
                        f"HTTP throughput of {what} / bare ({cfg})",
                        ratio,
                        0.9,
                        "x",
                        ratio >= 0.9,
                        f"{h[name]['rps']} / {h['bare']['rps']} requests/s: {why}",
                        info=True,
                    )
                )
    scale = results.get("scale")
    if scale:
        ovh = scale["overhead_us"]
        pairs = [
            (
                f"overhead within 10% from 1 to {scale['keys']:,} keys",
                "keylimit-mem",
                f"keylimit-mem/{scale['keys']}-keys",
            ),
            (
                f"overhead within 10% from 1 to {scale['accounts']:,} accounts (memory)",
                "keylimit-mem",
                f"keylimit-mem/{scale['accounts']}-accounts",
            ),
            (
                f"overhead within 10% from 1 to {scale['accounts']:,} accounts (Redis)",
                "keylimit-redis",
                f"keylimit-redis/{scale['accounts']}-accounts",
            ),
        ]
        for name, small, big in pairs:
            ratio = ovh[big] / ovh[small]
            out.append(_target(name, ratio, 1.1, "x", ratio <= 1.1, f"{ovh[big]} us / {ovh[small]} us"))
        per = scale["redis_memory"]["bytes_per_account"]
        out.append(
            _target(
                "Redis memory per active account <= 1 KB",
                per,
                1024,
                "bytes",
                per <= 1024,
                f"used_memory delta over {scale['redis_memory']['accounts']:,} pro-plan accounts; "
                f"MEMORY USAGE of one: {scale['redis_memory']['memory_usage_one_account_bytes']} bytes",
            )
        )
    return out


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[str(x) for x in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"\n{title}"]
    for j, row in enumerate(cells):
        padded = (v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        lines.append("  " + "  ".join(padded))
        if j == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(doc: dict[str, Any]) -> str:
    r = doc["results"]
    m = doc["meta"]
    parts = [
        f"keylimit bench  {m['when']}  commit {m['commit']}  python {m['python']}  {m['machine']}"
        f"{'  (quick)' if m['quick'] else ''}"
    ]
    if "inprocess" in r:
        ip = r["inprocess"]
        cpu = ip.get("cpu_us_per_request", {})
        rows = [
            [name, v, ip["overhead_us"].get(name, ""), cpu.get(name, "")] for name, v in ip["us_per_request"].items()
        ]
        title = f"In-process, median of {ip['rounds']} rounds x {ip['n']} requests (keys cached for the run)"
        parts.append(_table(title, ["subject", "us/request", "overhead us", "cpu us/request"], rows))
    if "redis" in r:
        rows = [
            [
                name,
                v["round_trips_per_request"],
                v["commands_per_request"],
                v["commandstats_us_per_request"],
                v["redis_process_cpu_us_per_request"],
            ]
            for name, v in r["redis"].items()
            if isinstance(v, dict)
        ]
        parts.append(
            _table(
                "Redis cost per request", ["subject", "round trips", "commands", "script/cmd us", "redis CPU us"], rows
            )
        )
    if "streaming" in r:
        s = r["streaming"]
        rows = [[name, s[name]["ttfb_us"], s[name]["per_chunk_us"]] for name in ("bare", "keylimit-mem")]
        rows.append(["added by keylimit", s["added_ttfb_us"], s["added_per_chunk_us"]])
        parts.append(
            _table(
                f"Streaming, in-process, {s['chunks']} SSE events, median of {s['streams']} streams",
                ["subject", "first byte us", "per chunk us"],
                rows,
            )
        )
    if "scale" in r:
        s = r["scale"]
        rows = [[name, v, s["overhead_us"].get(name, "")] for name, v in s["us_per_request"].items()]
        parts.append(_table("Scale, in-process", ["subject", "us/request", "overhead us"], rows))
        mem = s["redis_memory"]
        look = ", ".join(f"{k} keys {v} us" for k, v in s["key_lookup_us"].items())
        parts.append(f"  key lookup on a cache miss (SQLite get_key): {look}")
        parts.append(
            f"  Redis: {mem['bytes_per_account']} bytes per active account (used_memory), "
            f"MEMORY USAGE of one: {mem['memory_usage_one_account_bytes']} bytes"
        )
    if "http" in r:
        h = r["http"]
        rows = [
            [
                f"{cfg}  {name}",
                h[cfg][name]["rps"],
                h[cfg][name]["p50_ms"],
                h[cfg][name]["p99_ms"],
                h[cfg][name]["server_cpu_percent"],
                h[cfg][name]["wrk_cpu_percent"],
                h[cfg][name]["non_2xx"],
            ]
            for cfg in h["configs"]
            for name in ("bare", "floor", "lean", "keylimit-mem")
            if name in h[cfg]
        ]
        parts.append(
            _table(
                f"HTTP: {h['server']}; {h['load']} -c{h['connections']}, median of {h['rounds']} x {h['seconds']} s",
                ["config  subject", "requests/s", "p50 ms", "p99 ms", "server CPU %", "wrk CPU %", "non-2xx"],
                rows,
            )
        )
        for cfg in h["configs"]:
            extra = "".join(f"; {n} / bare {h[cfg][f'{n}_ratio']}" for n in ("floor", "lean") if f"{n}_ratio" in h[cfg])
            parts.append(f"  {cfg}: uvicorn {h[cfg]['flags']}; keylimit / bare {h[cfg]['throughput_ratio']}{extra}")
    if "cold" in r:
        cold = r["cold"]
        lag = cold["lag"]
        rows = [
            [
                "argon2 verify, production (" + cold["argon2_production"]["params"] + ")",
                cold["argon2_production"]["verify_ms"],
            ],
            ["argon2 verify, configured (" + cold["argon2_config"]["params"] + ")", cold["argon2_config"]["verify_ms"]],
            [f"{lag['verifications']} cold requests at once: wall s", lag["wall_seconds"]],
            [
                "  their latency p50 / p99 ms",
                f"{lag['request_latency_ms']['p50']} / {lag['request_latency_ms']['p99']}",
            ],
            ["loop lag idle p99 / max ms", f"{lag['loop_lag_idle']['p99_ms']} / {lag['loop_lag_idle']['max_ms']}"],
            [
                "loop lag during p99 / max ms",
                f"{lag['loop_lag_during']['p99_ms']} / {lag['loop_lag_during']['max_ms']}",
            ],
        ]
        parts.append(_table("Cold path", ["measure", "value"], rows))
    if doc["targets"]:
        rows = [[t["target"], t["measured"], t["limit"], t["result"]] for t in doc["targets"]]
        parts.append(_table("Targets (issue 5)", ["target", "measured", "limit", "result"], rows))
    return "\n".join(parts)
