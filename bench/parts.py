"""What full runs measured, part by part, kept beside the report (docs/benchmarks.parts.json, committed): a full run
measures only the parts that file lacks or that were measured on other code, with other options or on another
machine (host name and cores), so that a run longer than a sitting is done in several (stopped, it goes on from its
last finished part) and a change measures again only the parts it touches. A part's code is the product
(bokeh_stack, nginx, supervisor, apps, the lock file), the setups and bench apps, and the bench modules its measuring
module imports; the report names the day, commit and machine of each part. Each part's setups are still measured
side by side in one run."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bokeh_stack.config.files import write_atomically

ROOT = Path(__file__).resolve().parent.parent
SERVED = (
    *("bokeh_stack", "nginx", "supervisor", "apps", "requirements.lock"),
    *("bench/apps", "bench/setups.py", "bench/nginx-recipe.conf.j2"),
)
HOST = f"{platform.node()}, {os.cpu_count()} cores"
# The Results fields each part fills, where they are not the part's own name.
FIELDS = {"pagecost": ("pagecost", "pagecost_apps"), "largedata": ("large_data",)}


def fields(part: str) -> tuple[str, ...]:
    return FIELDS.get(part, (part,))


def bench_imports(module: str, root: Path = ROOT) -> set[str]:
    """The bench modules `module` (bench.x) imports, itself included, as file paths from the root."""
    found: set[str] = set()
    todo = [module]
    while todo:
        path = root / (todo.pop().replace(".", "/") + ".py")
        if str(path.relative_to(root)) in found or not path.exists():
            continue
        found.add(str(path.relative_to(root)))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench."):
                todo.append(node.module)
    return found


def code_of(module: str, root: Path = ROOT) -> dict[str, str] | None:
    """The committed code a part measured by `module` runs: {"code": a digest of its files, "commit": HEAD}; None
    where those files have changes not committed (what was measured could not be named)."""
    paths = sorted(set(SERVED) | bench_imports(module, root))

    def _git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout

    try:
        if _git("status", "--porcelain", "--", *paths).strip():
            return None
        listing = _git("ls-tree", "-r", "HEAD", "--", *paths)
        return {"code": hashlib.sha256(listing.encode()).hexdigest()[:16], "commit": _git("rev-parse", "HEAD").strip()}
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        return None


def encode(value: Any) -> Any:
    """Results as JSON: dataclasses by class name, tuples and dicts with other keys than strings as tagged lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        return {"__class__": f"{cls.__module__}:{cls.__qualname__}"} | {
            f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__pairs__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise TypeError(f"cannot keep a {type(value).__name__} as JSON: {value!r}")


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__pairs__" in value:
        return {decode(k): decode(v) for k, v in value["__pairs__"]}
    if "__class__" in value:
        module, _, name = value["__class__"].partition(":")
        if not module.startswith("bench."):
            raise ValueError(f"not a bench result: {value['__class__']}")
        cls = getattr(importlib.import_module(module), name)
        kept = {f.name: f for f in dataclasses.fields(cls)}
        given = {k: decode(v) for k, v in value.items() if k in kept}
        made = cls(**{k: v for k, v in given.items() if kept[k].init})
        for k, v in given.items():
            if not kept[k].init:
                setattr(made, k, v)
        return made
    return {k: decode(v) for k, v in value.items()}


class Parts:
    """The parts file of a report: `modules` maps each part to the module that measures it, in the checkout `root`."""

    def __init__(self, path: Path, options: dict[str, Any], modules: dict[str, str], root: Path = ROOT) -> None:
        self.path, self.options, self.modules, self.root = path, json.loads(json.dumps(options)), modules, root
        self.kept: dict[str, dict[str, Any]] = {}
        self.measured: dict[str, str] = {}  # part -> when and at which commit, for this run's parts
        try:
            self.kept = json.loads(path.read_text())["parts"]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"bench: {path} is unreadable ({e}); every part is measured", file=sys.stderr)

    def restore(self, part: str, results: Any) -> bool:
        """Put the part into `results` if it was measured on this code with these options; False if not."""
        entry, code = self.kept.get(part), code_of(self.modules[part], self.root)
        same = entry and code and entry["code"] == code["code"] and entry["options"] == self.options
        if not (same and entry.get("host") == HOST):  # another machine's figures are not this one's
            return False
        try:
            values = {name: decode(value) for name, value in entry["fields"].items()}
        except (ValueError, TypeError, AttributeError, ImportError) as e:
            print(f"bench: {part} as kept in {self.path} does not load ({e}); measuring it", file=sys.stderr)
            return False
        for name, value in values.items():
            setattr(results, name, value)
        self.measured[part] = _when(entry)
        print(f"{part}: as measured {self.measured[part]} ({self.path})", file=sys.stderr)
        return True

    def save(self, part: str, results: Any) -> None:
        code = code_of(self.modules[part], self.root)
        entry = {"measured": datetime.date.today().isoformat(), "host": HOST}
        if code is None:
            self.measured[part] = f"{entry['measured']} on code with changes not committed, on {entry['host']}"
            print(f"bench: {part} is not kept: its code has changes not committed", file=sys.stderr)
            return
        values = {name: encode(getattr(results, name)) for name in fields(part)}
        self.kept[part] = {**entry, **code, "options": self.options, "fields": values}
        self.measured[part] = _when(self.kept[part])
        write_atomically(self.path, json.dumps({"parts": self.kept}, indent=1, sort_keys=True) + "\n")


def _when(entry: dict[str, Any]) -> str:
    return f"{entry['measured']} at {entry['commit'][:10]} on {entry['host']}"
