from __future__ import annotations

# Real uvicorn servers in threads, and the stand-in upstream: the proxy tests' fixtures, shared.
from tests.proxy.conftest import serve, upstream

__all__ = ["serve", "upstream"]
