"""Generated keys are unique and parse; any single typo fails the format or the checksum."""

from __future__ import annotations

import pytest

from keylimit import KeyFormat, KeyType
from keylimit.auth._keys import ALPHABET


def test_100_000_generated_keys_are_unique_and_parse() -> None:
    fmt = KeyFormat()
    keys = [fmt.generate(KeyType.SDK if i % 2 else KeyType.API) for i in range(100_000)]
    assert len({k.token for k in keys}) == 100_000
    assert len({k.kid for k in keys}) == 100_000
    for key in keys:
        parsed = fmt.parse(key.token)
        assert parsed is not None
        assert (parsed.kid, parsed.key_type) == (key.kid, key.key_type)


@pytest.mark.parametrize("key_type", [KeyType.SDK, KeyType.API])
def test_every_single_character_substitution_is_refused(key_type: KeyType) -> None:
    fmt = KeyFormat()
    token = fmt.generate(key_type).token
    assert fmt.parse(token) is not None
    replacements = ALPHABET + "_-. "
    tried = 0
    for position, original in enumerate(token):
        for char in replacements:
            if char == original:
                continue
            typo = token[:position] + char + token[position + 1 :]
            assert fmt.parse(typo) is None, (position, char)
            tried += 1
    assert tried == len(token) * (len(replacements) - 1)
