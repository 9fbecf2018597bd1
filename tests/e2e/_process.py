"""A server command as a subprocess on a free port: started, polled until it answers, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from keylimit.auth._hashing import CHEAPEST
from tests._redis import free_port

KEYLIMIT = [sys.executable, "-m", "keylimit"]
CHEAP_ARGON2 = {
    f"KEYLIMIT_ARGON2_{name.upper()}": str(getattr(CHEAPEST, name))
    for name in ("time_cost", "memory_cost", "parallelism")
}
READY_DEADLINE = 30.0  # a guard against a hung start, not a timing claim


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any KEYLIMIT_* or OPENAI_* setting, cheap argon2, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYLIMIT_", "OPENAI_", "FORII_"))}
    return {**env, **CHEAP_ARGON2, "PYTHONUNBUFFERED": "1", **extra}


class Served:
    """``command`` run in ``cwd``; ``{port}`` in its arguments becomes a free port. Output goes to files."""

    def __init__(self, command: Sequence[str], *, cwd: Path, env: Mapping[str, str], ready_path: str = "/") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cwd = cwd
        self._stdout = cwd / f"stdout-{self.port}.txt"
        self._stderr = cwd / f"stderr-{self.port}.txt"
        with self._stdout.open("wb") as out, self._stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [part.replace("{port}", str(self.port)) for part in command],
                cwd=cwd,
                env=dict(env),
                stdout=out,
                stderr=err,
            )
        self._wait_ready(ready_path)

    @property
    def stdout(self) -> str:
        return self._stdout.read_text()

    @property
    def stderr(self) -> str:
        return self._stderr.read_text()

    def _wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + READY_DEADLINE
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}: {self.stderr}")
            try:
                httpx.get(self.url + path, timeout=1.0)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"server not answering after {READY_DEADLINE} s: {self.stderr}") from None
                time.sleep(0.05)  # polling a starting process; no test time passes on it

    def stop(self) -> int:
        """Ctrl-C, as a user would; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
