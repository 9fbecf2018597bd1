"""The suite-wide watch (tests/conftest.py) finds key material in logs, and only that."""

from __future__ import annotations

import logging

import pytest

from keylimit import Config, KeyFormat, KeyType
from tests.secrets._watch import SecretWatch, secret_of

log = logging.getLogger("keylimit.test")


def test_a_generated_key_logged_at_debug_is_found(no_key_material_in_logs: SecretWatch) -> None:
    watch = no_key_material_in_logs
    token = KeyFormat().generate().token
    log.debug("made %s", token)
    leaks = watch.leaks()
    assert len(leaks) == 1
    assert "a key" in leaks[0]
    watch.texts.clear()  # found: the test's own leak must not fail it at teardown


@pytest.mark.parametrize("key_type", [KeyType.SDK, KeyType.API])
def test_sixteen_characters_of_the_secret_are_found(no_key_material_in_logs: SecretWatch, key_type: KeyType) -> None:
    watch = no_key_material_in_logs
    parsed = KeyFormat("acme").generate(key_type)
    log.info("fragment: ...%s...", secret_of(parsed.token)[9:25])
    assert watch.leaks()
    watch.texts.clear()
    log.info("fragment: %s", secret_of(parsed.token)[9:24])  # 15 characters: not a leak
    assert watch.leaks() == []


def test_a_key_in_a_logged_exception_is_found(no_key_material_in_logs: SecretWatch) -> None:
    watch = no_key_material_in_logs
    token = KeyFormat().generate().token
    try:
        raise ValueError(f"bad {token}")
    except ValueError:
        log.exception("failed")
    assert len(watch.leaks()) == 1
    watch.texts.clear()


def test_an_admin_token_configured_is_watched(no_key_material_in_logs: SecretWatch) -> None:
    watch = no_key_material_in_logs
    Config(keys_url="memory://", admin_token="watched-admin-token")
    logging.getLogger("elsewhere").warning("token watched-admin-token")
    assert watch.leaks()
    watch.texts.clear()


def test_public_parts_of_a_key_are_not_leaks(no_key_material_in_logs: SecretWatch) -> None:
    watch = no_key_material_in_logs
    fmt = KeyFormat()
    parsed = fmt.generate()
    log.warning("key %s hint %s", parsed.key_id, fmt.hint(parsed.token, parsed.key_type, parsed.kid))
    assert watch.leaks() == []
