"""Writing a file that another process may read at any moment."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Replace `path` in one step: a reader sees the old file or the new one, never half of it. The new file has
    `mode` from its first byte, whatever the umask (default: 0666 less the umask); the temporary file is named by
    this process, so that two processes writing the same file at once do not write into each other's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if mode is not None else 0o666)
    if mode is not None:
        os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
