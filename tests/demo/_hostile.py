"""What the hostile-body tests share: the answer every refusal must be, JSON text written as a client might."""

from __future__ import annotations

import json

import httpx2
from starlette.testclient import TestClient

from .conftest import mounted_app

# The demo model at its mount point, in process; a 500 is answered, not raised.
model_client = TestClient(mounted_app(), base_url="http://demo.test/inference/v1", raise_server_exceptions=False)


def assert_openai_answer(response: httpx2.Response) -> None:
    """Never 5xx; a refusal is exactly OpenAI's error object."""
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        return
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["code"], str)
    assert error["param"] is None or isinstance(error["param"], str)


def dumps(value: object, ascii_only: bool) -> bytes:
    # Without ensure_ascii a lone surrogate becomes bytes that are not UTF-8.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
