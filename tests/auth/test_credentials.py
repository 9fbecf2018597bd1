"""What a client sees for missing, malformed and unusable keys; malformed ones cost no I/O and no argon2."""

from __future__ import annotations

import json

import openai
import pytest

from keylimit import InvalidKey, KeyFormat, MissingKey
from keylimit.auth._keys import checksum

from .conftest import Harness

MISSING_BODY = {
    "error": {
        "message": MissingKey().message,
        "type": "invalid_request_error",
        "param": None,
        "code": "missing_api_key",
    }
}
INVALID_BODY = {
    "error": {
        "message": "Incorrect API key provided. Check the key, or create a new one.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


def _typo(token: str, position: int) -> str:
    char = "A" if token[position] != "A" else "B"
    return token[:position] + char + token[position + 1 :]


@pytest.mark.parametrize(
    ("name", "header", "expected"),
    [
        # no key at all
        ("no header", None, "missing"),
        ("bare scheme", b"Bearer", "missing"),
        ("scheme and a space", b"Bearer ", "missing"),
        ("scheme and spaces", b"Bearer    ", "missing"),
        ("empty header", b"", "missing"),
        # other schemes
        ("basic auth", b"Basic dXNlcjpwYXNzd29yZA==", "invalid"),
        ("token scheme", b"Token {key}", "invalid"),
        ("no scheme", b"{key}", "invalid"),
        ("scheme glued to key", b"Bearer{key}", "invalid"),
        # spacing
        ("two spaces", b"Bearer  {key}", "invalid"),
        ("tab", b"Bearer\t{key}", "invalid"),
        ("text after the key", b"Bearer {key} extra", "invalid"),
        ("two keys", b"Bearer {key},{key}", "invalid"),
        # the key's characters
        ("key in upper case", b"Bearer {upper}", "invalid"),
        ("key in swapped case", b"Bearer {swapped}", "invalid"),
        ("non-ASCII in the key", "Bearer {key}é".encode(), "invalid"),
        ("non-ASCII key", "Bearer forii_sk_ééééééééé".encode(), "invalid"),
        ("NUL byte", b"Bearer {key}\x00", "invalid"),
        ("10 KB header", b"Bearer " + b"A" * 10240, "invalid"),
        ("10 KB of spaces", b"Bearer" + b" " * 10240, "invalid"),
        ("300 bytes of tabs only", b"\t" * 300, "missing"),
        # well-formed but not ours, or broken
        ("wrong prefix", b"Bearer {other_prefix}", "invalid"),
        ("broken checksum", b"Bearer {bad_crc}", "invalid"),
        ("typo in the secret", b"Bearer {typo}", "invalid"),
        ("truncated", b"Bearer {truncated}", "invalid"),
        ("too long", b"Bearer {key}A", "invalid"),
    ],
)
async def test_malformed_credentials_are_refused_without_storage_or_argon2(
    harness: Harness, name: str, header: bytes | None, expected: str
) -> None:
    key = await harness.key()
    harness.store.calls.clear()
    harness.hasher.verifies = 0
    values = {
        "key": key,
        "upper": key.upper(),
        "swapped": key.swapcase(),
        "other_prefix": KeyFormat("acme").generate().token,
        "bad_crc": key[:-1] + ("A" if key[-1] != "A" else "B"),
        "typo": _typo(key, 30),
        "truncated": key[:-1],
    }
    if header is not None:
        for placeholder, value in values.items():
            header = header.replace(b"{" + placeholder.encode() + b"}", value.encode())

    response = await harness.call("GET", header)

    assert response.status_code == 401
    if expected == "missing":
        assert response.json() == MISSING_BODY
        assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert response.json() == INVALID_BODY
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/json"
    assert harness.store.lookups == 0, harness.store.calls
    assert harness.hasher.verifies == 0


async def test_scheme_is_case_insensitive(harness: Harness) -> None:
    key = await harness.key()
    for scheme in (b"Bearer", b"bearer", b"BEARER", b"bEaReR"):
        response = await harness.call("GET", scheme + b" " + key.encode())
        assert response.status_code == 200, scheme


async def test_unknown_wrong_secret_revoked_and_expired_keys_get_byte_identical_401s(harness: Harness) -> None:
    live = await harness.key()
    kid = KeyFormat().parse(live)
    assert kid is not None
    body = f"sk_{kid.kid}_{'Z' * 32}"
    wrong_secret = f"forii_{body}{checksum(body)}"
    unknown = KeyFormat().generate().token
    revoked_record, revoked = await harness.manager.create_key("acct_1", "to revoke")
    expired = await harness.key(expires_at=harness.clock() + 10)
    assert (await harness.get(revoked)).status_code == 200
    assert (await harness.get(expired)).status_code == 200
    await harness.manager.revoke_key("acct_1", revoked_record.id)
    harness.clock.advance(11)
    assert (await harness.get(live)).status_code == 200

    responses = [await harness.get(token) for token in (unknown, wrong_secret, revoked, expired)]

    assert [r.status_code for r in responses] == [401] * 4
    assert {r.content for r in responses} == {InvalidKey().body()}
    assert responses[0].json() == INVALID_BODY
    assert len({tuple(sorted(r.headers.items())) for r in responses}) == 1


async def test_the_openai_sdk_raises_authentication_error(harness: Harness) -> None:
    async with harness.client() as http:
        client = openai.AsyncOpenAI(api_key="forii_sk_not-a-key", base_url="http://testserver/v1", http_client=http)
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.models.list()
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert json.loads(caught.value.response.content) == INVALID_BODY
