"""Store events between processes over Redis pub/sub, with a subscriber that outlives Redis.

Each message is small JSON: ``{"kind": "key"|"account", "id": ..., "origin": ...}``. The
origin marks the sending ``EventChannel``, which ignores its own messages (its store has
told its listeners already). The subscriber reconnects with capped, jittered backoff
whenever the connection fails, and probes an idle connection so that a dead one is noticed.
A message lost while it was away costs nothing worse than the auth cache's TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..redis._url import redact_url
from ._base import StoreEvent

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

logger = logging.getLogger("keylimit.stores.redis")

CHANNEL = "keylimit:events"
BACKOFF_MIN, BACKOFF_MAX = 0.05, 5.0
IDLE_PING = 15.0


class EventChannel:
    def __init__(
        self,
        client: Any,
        url: str,
        on_event: Callable[[StoreEvent], None],
        *,
        cluster: bool,
        failures: tuple[type[BaseException], ...],
    ) -> None:
        self._client = client
        self._where = redact_url(url)
        self._on_event = on_event
        self._cluster = cluster
        self._failures = failures
        self._origin = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        # The subscriber's state, which tests await instead of sleeping.
        self.live = asyncio.Event()
        self.lost = asyncio.Event()

    async def publish(self, event: StoreEvent) -> None:
        payload = json.dumps({"kind": event.kind, "id": event.id, "origin": self._origin}, separators=(",", ":"))
        try:
            await self._client.publish(CHANNEL, payload)
        except self._failures as exc:
            # The change itself is stored; other processes' caches expire it instead.
            logger.warning(
                "could not publish a %s change to %s (%s); other processes see it when their caches expire",
                event.kind,
                self._where,
                type(exc).__name__,
            )

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="keylimit-store-events")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        # Insist: on Python 3.11, redis-py's asyncio.wait_for around a socket write can
        # swallow a cancellation that lands just as the write completes.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.1)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        delay, down = BACKOFF_MIN, False
        while True:
            pubsub: PubSub | None = None
            since = loop.time()
            try:
                if self._cluster:
                    await self._client.initialize()
                pubsub = self._client.pubsub()
                await pubsub.subscribe(CHANNEL)
                since = loop.time()
                self.lost.clear()
                self.live.set()
                if down:
                    logger.info("store events from %s resumed", self._where)
                    down = False
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=IDLE_PING)
                    if message is None:
                        await pubsub.ping()
                    elif message.get("type") == "message":
                        self._receive(message.get("data"))
            except Exception as exc:
                self.live.clear()
                self.lost.set()
                if not down:
                    logger.warning("lost store events from %s (%s); reconnecting", self._where, type(exc).__name__)
                    down = True
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            if loop.time() - since > BACKOFF_MAX:
                delay = BACKOFF_MIN  # it was up a while: a fresh failure, not a flapping one
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)

    def _receive(self, data: object) -> None:
        try:
            message = json.loads(data)  # type: ignore[arg-type]
            kind, id_, origin = message["kind"], message["id"], message.get("origin")
        except (TypeError, ValueError, KeyError, AttributeError):
            logger.debug("ignored a malformed message on %s", CHANNEL)
            return
        if origin == self._origin or kind not in ("key", "account") or not isinstance(id_, str):
            return
        try:
            self._on_event(StoreEvent(kind, id_))
        except Exception:
            logger.exception("a store listener failed")
