"""A Starlette app with keylimit configured in code rather than from the environment.

pip install 'keylimit[server]'
KEYLIMIT_KEYS_URL=sqlite:///keylimit.db keylimit keys create --account acme --name dev
python examples/starlette_app.py 8000
"""

from __future__ import annotations

import os
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keylimit import Config, Limits, Protect

config = Config(
    keys_url=os.environ.get("KEYLIMIT_KEYS_URL", "sqlite:///keylimit.db"),
    limits_url="memory://",  # one process; redis://host:6379 to share limits between processes
    plans={"free": Limits(requests=10, prompt_tokens=20_000, completion_tokens=2_000)},
)


async def models(request: Request) -> JSONResponse:
    account = request.user.account_id  # keylimit sets scope["user"] too, so request.user works
    return JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model", "owned_by": account}]})


app = Starlette(
    routes=[Route("/v1/models", models)],
    middleware=[Middleware(Protect, config=config)],
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8000")))
