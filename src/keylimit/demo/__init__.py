"""An OpenAI-compatible demo model: deterministic text, honest ``usage``, no auth and no limits of its own.

Mount it under both layers (``keylimit demo`` serves it at ``/inference/v1``)::

    from keylimit.demo import demo_model_app

    app = demo_model_app()  # GET /models, POST /chat/completions, /completions, /embeddings

``demo_server_app(config)`` is what ``keylimit demo`` serves: this model at ``/inference/v1``,
key management at ``/v1/accounts``, ``GET /`` (an index) and ``GET /health`` open, all behind
``Protect``.

Tokens are counted by :func:`count_tokens` (one token per run of word characters or
of punctuation), for prompts and completions alike.
"""

from __future__ import annotations

from ._app import demo_model_app
from ._requests import MODEL_ID
from ._server import DemoKey, banner, demo_config, demo_server_app, ensure_demo_key
from ._text import count_tokens

__all__ = [
    "MODEL_ID",
    "DemoKey",
    "banner",
    "count_tokens",
    "demo_config",
    "demo_model_app",
    "demo_server_app",
    "ensure_demo_key",
]
