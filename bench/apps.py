"""The HTTP subjects, as uvicorn factories: ``uvicorn --factory bench.apps:keylimit``.

``keylimit`` is ``Protect(app)`` with no config: it reads ``KEYLIMIT_*`` from the
environment, as ``app.add_middleware(keylimit.Protect)`` does in a user's server.
"""

from __future__ import annotations

from typing import Any

from ._common import chat_app, floor_app, lean_app, protect_class


def bare() -> Any:
    return chat_app()


def floor() -> Any:
    return floor_app()


def lean() -> Any:
    return lean_app()


def keylimit() -> Any:
    return protect_class()(chat_app())
