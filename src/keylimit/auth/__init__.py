"""Who is calling: the key layer, the key format, argon2, the cache of verified keys."""
