"""The official OpenAI SDK against a keylimit-protected server (run `keylimit demo` first).

export FORII_API_KEY=forii_sk_...        # the key `keylimit demo` printed
python examples/openai_client.py http://127.0.0.1:8000/inference/v1
"""

from __future__ import annotations

import os
import sys

from openai import AuthenticationError, OpenAI, RateLimitError

base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/inference/v1"
client = OpenAI(base_url=base_url, api_key=os.environ["FORII_API_KEY"])  # retries 429s after Retry-After itself

try:
    raw = client.chat.completions.with_raw_response.create(
        model="keylimit/demo", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
    )
except AuthenticationError as error:  # 401: no key, or a bad, unknown, revoked or expired one
    sys.exit(f"key refused: {error.message}")
except RateLimitError as error:  # 429 even after the SDK's retries: over the plan's requests or tokens
    sys.exit(f"rate limited: {error.message}")
completion = raw.parse()
print("answer:", completion.choices[0].message.content)
print("usage:", completion.usage.prompt_tokens, "prompt +", completion.usage.completion_tokens, "completion tokens")
for name in ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-completion-tokens", "x-ratelimit-reset"):
    print(f"{name}: {raw.headers[name]}")

stream = client.chat.completions.create(
    model="keylimit/demo", messages=[{"role": "user", "content": "Stream, please."}], stream=True
)
print("stream:", "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
