"""An OpenAI-compatible demo model: deterministic text, honest ``usage``, no auth and no limits of its own.

Mount it under both layers (``keylimit demo`` serves it at ``/inference/v1``)::

    from keylimit.demo import demo_model_app

    app = demo_model_app()  # GET /models, POST /chat/completions, /completions, /embeddings

Tokens are counted by :func:`count_tokens` (one token per run of word characters or
of punctuation), for prompts and completions alike.
"""

from __future__ import annotations

from ._app import demo_model_app
from ._requests import MODEL_ID
from ._text import count_tokens

__all__ = ["MODEL_ID", "count_tokens", "demo_model_app"]
