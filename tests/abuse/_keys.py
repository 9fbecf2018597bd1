"""Keys for the abuse tests: made through the management API, and forged ones for a real kid."""

from __future__ import annotations

import secrets

import httpx

from keylimit._keys import ALPHABET, SECRET_LEN, checksum

ADMIN = "abuse-admin-session-token"


def make_key(base_url: str, account: str = "acct_1") -> str:
    """A full-scope key, created over HTTP as a user would (the server's own loop owns the store)."""
    response = httpx.post(
        f"{base_url}/v1/accounts/{account}/apiKeys",
        json={"name": "abuse"},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def forged(real: str, prefix: str = "forii") -> str:
    """A token with ``real``'s kid and type, a fresh random secret and a valid checksum: it gets past
    the format and checksum checks and costs one store lookup and one argon2 verification."""
    kid = real.split("_")[-2]
    secret = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LEN))
    body = f"sk_{kid}_{secret}"
    return f"{prefix}_{body}{checksum(body)}"
