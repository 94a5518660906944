"""Where sessions' records live, so that any worker can read any session's: a directory on one host (the default,
under the runtime dir), or Redis across hosts and containers. Either way a worker never waits on the store while it
serves: writes go out in order from a queue of their own, and a read that takes longer than READ_TIMEOUT_S (or
fails) is a session started afresh."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The longest a resuming session waits for its record.
READ_TIMEOUT_S = 0.1
# A record is kept until its page's token expires (no websocket can resume it after); a directory store removes
# expired records this often.
PRUNE_EVERY_S = 60.0


class StoreError(RuntimeError):
    """The store did not answer in time, or not at all."""


class DirectoryStore:
    """One file per session (0600) in a directory only the workers' user may enter (0700), its modification time
    set to when the record expires. Lines are appended by one writer thread, in the order they were given, so the
    event loop never waits on the disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bokeh-stack-resume")
        self._last_prune = 0.0

    def describe(self) -> str:
        return f"directory {self.directory}"

    def append(self, key: str, lines: list[bytes], expires: float) -> None:
        """Add lines to a record that is kept until `expires` (seconds since the epoch)."""
        self._writer.submit(self._append, key, b"".join(line + b"\n" for line in lines), expires)
        if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            self._writer.submit(self.prune)

    def delete(self, key: str) -> None:
        self._writer.submit(self._delete, key)

    async def written(self) -> None:
        """Returns once every line given so far is in its file (the one writer takes them in order)."""
        await asyncio.wrap_future(self._writer.submit(lambda: None))

    def _delete(self, key: str) -> None:
        (self.directory / key).unlink(missing_ok=True)

    def _append(self, key: str, data: bytes, expires: float) -> None:
        fd = os.open(self.directory / key, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.utime(fd, (expires, expires))
        finally:
            os.close(fd)

    async def load(self, key: str) -> list[bytes] | None:
        loop = asyncio.get_running_loop()
        try:
            # Through the writer: a line appended just before this read is in the file when it is read.
            data = await asyncio.wait_for(loop.run_in_executor(self._writer, self._read, key), READ_TIMEOUT_S)
        except TimeoutError:
            raise StoreError(f"no answer from {self.describe()} within {READ_TIMEOUT_S * 1000:.0f} ms") from None
        except OSError as e:
            raise StoreError(f"{self.describe()}: {e.strerror}") from None
        return None if data is None else data.splitlines()

    def _read(self, key: str) -> bytes | None:
        path = self.directory / key
        try:
            with open(path, "rb") as f:
                return f.read() if os.fstat(f.fileno()).st_mtime > time.time() else None
        except FileNotFoundError:
            return None

    def prune(self) -> int:
        """Remove the records whose tokens have expired; how many."""
        removed, now = 0, time.time()
        for entry in os.scandir(self.directory):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime <= now:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def close(self) -> None:
        self._writer.shutdown(wait=True)


def open_store(where: str, password: str = ""):
    """The store settings session.store names: a redis:// URL, or else a directory."""
    if where.startswith("redis://"):
        from bokeh_stack.resume.redis_store import RedisStore

        return RedisStore(where, password)
    return DirectoryStore(Path(where))
