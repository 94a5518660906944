"""Sessions' records in Redis, for workers on several hosts or in containers (settings session.store:
redis://HOST:PORT/DB). A record is a list, RPUSHed a batch of lines at a time and set to expire with its page's
token; Redis's password is the file settings session.redis_password_file names, or derived from the deployment's
secret (config/secret.redis_password).
Writes go out in order from one task and a bounded queue; a read waits READ_TIMEOUT_S at most."""

from __future__ import annotations

import asyncio
import logging
import time

from bokeh_stack.resume.stores import READ_TIMEOUT_S, StoreError

PREFIX = "bokeh-stack:session:"
# Batches waiting for Redis; past this, what comes is dropped (its record then misses a message: not resumed).
QUEUE_LENGTH = 10_000
# A Redis that is down is logged once this often, not once per write.
LOG_EVERY_S = 30.0
# A worker that starts before its Redis tries this many times, a second apart, to open a connection ahead of use.
WARM_TRIES = 60
log = logging.getLogger("bokeh_stack.resume")


class RedisStore:
    def __init__(self, url: str, password: str = "") -> None:
        import redis.asyncio as redis

        self.url = url
        self.client = redis.Redis.from_url(
            url,
            password=password or None,
            socket_timeout=READ_TIMEOUT_S,
            socket_connect_timeout=READ_TIMEOUT_S,
            retry_on_timeout=False,
        )
        self._queue: asyncio.Queue | None = None
        self._writer: asyncio.Task | None = None
        self._logged = 0.0

    def describe(self) -> str:
        return f"Redis at {self.url}"

    def append(self, key: str, lines: list[bytes], expires: float) -> None:
        self._put((key, lines, expires))

    def delete(self, key: str) -> None:
        self._put((key, None, 0))

    def _put(self, write: tuple) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_LENGTH)
            self._writer = asyncio.get_running_loop().create_task(self._write_in_order())
        try:
            self._queue.put_nowait(write)
        except asyncio.QueueFull:
            raise StoreError(f"{QUEUE_LENGTH} writes waiting for {self.describe()}") from None

    async def written(self) -> None:
        """Returns once every write given so far has been sent to Redis (or failed)."""
        if self._queue is not None:
            await self._queue.join()

    async def _write_in_order(self) -> None:
        while True:
            key, lines, expires = await self._queue.get()
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    if lines is None:
                        pipe.delete(PREFIX + key)
                    else:
                        pipe.rpush(PREFIX + key, *lines)
                        pipe.expireat(PREFIX + key, int(expires) + 1)
                    await pipe.execute()
            except Exception as e:  # the record misses these lines now, and will not be resumed
                self._log_down(e)
            finally:
                self._queue.task_done()

    def _log_down(self, error: Exception) -> None:
        if time.monotonic() - self._logged > LOG_EVERY_S:
            self._logged = time.monotonic()
            log.warning("%s: %s (records are incomplete while it is)", self.describe(), str(error)[:200])

    async def warm(self, tries: int = WARM_TRIES) -> None:
        """Open a connection before a tab needs one, and keep it in the pool: a tab's resume then waits
        READ_TIMEOUT_S for its read alone, not for DNS, connect and AUTH too. It matters in a worker that has just
        started, which is where a restart sends the tabs."""
        for _ in range(tries):
            try:
                await self.client.ping()
                return
            except Exception:  # not up yet: the writer logs it once a tab's record is written
                await asyncio.sleep(1)

    async def load(self, key: str) -> list[bytes] | None:
        try:
            lines = await asyncio.wait_for(self.client.lrange(PREFIX + key, 0, -1), READ_TIMEOUT_S)
        except TimeoutError:
            raise StoreError(f"no answer from {self.describe()} within {READ_TIMEOUT_S * 1000:.0f} ms") from None
        except Exception as e:
            raise StoreError(f"{self.describe()}: {str(e)[:200]}") from None
        return lines or None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
