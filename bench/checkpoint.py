"""A full run's parts as they are measured, so that a run that stops (a crash, Ctrl-C, the machine needed for
something else) goes on from the part after the last one it finished when started again from the same commit with
the same options: a full run takes hours. Each part's setups are still measured side by side in one run."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from bokeh_stack.config.files import write_atomically

# The Results fields each part fills, where they are not the part's own name.
FIELDS = {"pagecost": ("pagecost", "pagecost_apps"), "largedata": ("large_data",)}


def fields(part: str) -> tuple[str, ...]:
    return FIELDS.get(part, (part,))


def commit(root: Path) -> str:
    """The checkout's commit, and whether it has changes of its own (a run of changed code continues nothing)."""
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True)
    return f"{head.stdout.strip()}{'+changes' if changed.stdout.strip() else ''}"


class Checkpoint:
    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path, self.key = path, key
        self.done: dict[str, dict[str, Any]] = {}  # part -> {Results field: what it measured}
        try:
            saved = pickle.loads(path.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return
        if isinstance(saved, dict) and saved.get("key") == key and "+changes" not in key.get("commit", "+changes"):
            self.done = saved["parts"]

    def restore(self, part: str, results: Any) -> bool:
        """Put a part measured by the run before into `results`; False if it was not."""
        if part not in self.done:
            return False
        for name, value in self.done[part].items():
            setattr(results, name, value)
        print(f"{part}: as the run before measured it (same commit and options; {self.path})", file=sys.stderr)
        return True

    def save(self, part: str, results: Any) -> None:
        self.done[part] = {name: getattr(results, name) for name in fields(part)}
        try:
            write_atomically(self.path, pickle.dumps({"key": self.key, "parts": self.done}))
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as e:  # the run goes on without it
            print(f"bench: cannot keep {part} for a run after this one: {e}", file=sys.stderr)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
