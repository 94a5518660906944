"""BokehJS for nginx, compressed once: gzipping bokeh.min.js (1.3 MB) on the fly costs nginx ~14 ms of CPU for
every browser that loads it (71 instead of 2975 requests/s, bench/static.py), so nginx serves `<file>.gz` copies
(gzip_static) from a tree that links every other file to Bokeh's own static dir."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from bokeh_stack.config.files import write_atomically

COMPRESSIBLE = {".js", ".mjs", ".css", ".json", ".map", ".svg"}
MIN_BYTES = 1024
LEVEL = 6  # level 9 takes twice as long for 0.1% less
DONE = ".complete"


def build(source: Path, target: Path) -> bool:
    """Link every file of `source` into `target` and write a .gz beside each compressible one; False if `target`
    is already complete. Trees of other Bokeh versions beside `target` are removed."""
    if (target / DONE).exists():
        return False
    for other in target.parent.glob("bokeh-*"):
        if other != target:
            shutil.rmtree(other, ignore_errors=True)
    for path in source.rglob("*"):
        if not path.is_file():
            continue
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.is_symlink():
            dest.symlink_to(path)
        if path.suffix in COMPRESSIBLE and path.stat().st_size >= MIN_BYTES:
            _write_once(dest.with_name(dest.name + ".gz"), gzip.compress(path.read_bytes(), LEVEL, mtime=0))
    (target / DONE).touch()
    return True


def _write_once(path: Path, data: bytes) -> None:
    write_atomically(path, data)
