"""Talking to Redis, shared by the key store and the limit backend: URLs, the client, RESP."""
