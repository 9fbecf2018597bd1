"""keylimit around a plain ASGI callable, no framework: ``protect(app)`` returns an ASGI app.

pip install 'keylimit[server]'
keylimit keys create --account acme --name dev
python examples/bare_asgi_app.py 8000
"""

from __future__ import annotations

import json
import os
import sys

import uvicorn

from keylimit import protect


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    principal = scope.get("keylimit.principal")  # None on open paths like /health
    body = json.dumps({"path": scope["path"], "account": principal and principal.account_id}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


application = protect(app)  # both layers, configured from KEYLIMIT_* variables

if __name__ == "__main__":
    uvicorn.run(
        application, host="127.0.0.1", port=int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8000"))
    )
