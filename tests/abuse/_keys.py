"""Keys for the abuse tests: made through the management API, and forged ones for a real kid."""

from __future__ import annotations

import secrets

import httpx

from keylimit.auth._keys import ALPHABET, CRC_LEN, SECRET_LEN, checksum

ADMIN = "abuse-admin-session-token"


def make_key(base_url: str, account: str = "acct_1", key_type: str = "sdk") -> str:
    """A full-scope key, created over HTTP as a user would (the server's own loop owns the store)."""
    response = httpx.post(
        f"{base_url}/v1/accounts/{account}/apiKeys",
        json={"name": "abuse", "type": key_type},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def forged(real: str) -> str:
    """A token with ``real``'s prefix, type and kid, a fresh random secret and a valid checksum: it
    gets past the format and checksum checks and costs one store lookup (argon2 only for a key
    that has no check value)."""
    head = real[: -(SECRET_LEN + CRC_LEN)]  # "{prefix}_sk_{kid}_" or "{prefix}_{kid}_"
    prefix, _, rest = head.partition("_")
    body = rest + "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LEN))
    return f"{prefix}_{body}{checksum(body)}"
