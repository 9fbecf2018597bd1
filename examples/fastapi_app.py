"""A FastAPI inference app behind keylimit: API keys and per-plan rate limits, configured by KEYLIMIT_* variables.

pip install 'keylimit[server]' fastapi
keylimit keys create --account acme --name dev      # prints the key once
python examples/fastapi_app.py 8000                 # or: uvicorn fastapi_app:app
"""

from __future__ import annotations

import os
import sys

import uvicorn
from fastapi import FastAPI, Request

import keylimit

app = FastAPI()
app.add_middleware(keylimit.Protect)  # reads KEYLIMIT_* (keys in sqlite:///keylimit.db by default)


@app.get("/health")  # open: KEYLIMIT_OPEN_PATHS defaults to /health,/ping
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat/completions")
async def chat(request: Request) -> dict[str, object]:
    body = await request.json()
    principal = request.scope["keylimit.principal"]  # who is calling: key id, account, plan, scopes
    text = f"Hello, {principal.account_id}!"
    return {
        "object": "chat.completion",
        "model": body.get("model", "echo"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},  # charged to the account's plan
    }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8000")))
