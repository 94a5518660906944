"""What the stack knows of an app without running it: its title and description (the docstring of its main.py or
script, the first markdown cell of its notebook, the docstring of its function), its static dir, and a digest of
its code (a changed digest restarts the workers that serve it)."""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bokeh_stack.config.discovery import AppSource

# An app's picture on the index page, in its static dir; without one, the index shows its initial.
THUMBNAIL = "thumbnail.png"
# Files up to this size are digested by content; larger ones (data) by size and modification time.
DIGEST_BY_CONTENT_BYTES = 1024 * 1024


def app_info(source: AppSource, python_path: Iterable[Path] = ()) -> dict[str, Any]:
    """Title and description from the app's own text (read, not run), its static dir, its digest."""
    name = source.name
    title, description = name.replace("_", " ").capitalize(), ""
    code = _code_file(source, python_path)
    text = _described(source, code)
    if text:
        first, _, rest = text.strip().partition("\n")
        title = first.strip().lstrip("#").strip().rstrip(".") or title
        description = " ".join(rest.strip().split("\n\n")[0].split())
    static = source.path / "static" if source.kind == "directory" else None
    return {
        "name": name,
        "title": title,
        "description": description,
        "static_dir": static if static and static.is_dir() else None,
        "thumbnail": bool(static) and (static / THUMBNAIL).is_file(),
        "hue": int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) % 360,  # the icon's colour, stable per app
        "digest": code_digest(source.path if source.path else code, extra=source.function),
    }


def _code_file(source: AppSource, python_path: Iterable[Path]) -> Path | None:
    """The file holding the app's code: main.py (or main.ipynb) of a directory, the script or notebook, or the
    module of a function app, looked up on the import path as Python would (without importing anything)."""
    if source.kind == "directory":
        return next((f for f in (source.path / "main.py", source.path / "main.ipynb") if f.is_file()), None)
    if source.path:
        return source.path
    parts = source.function.partition(":")[0].split(".")
    for root in [*map(Path, python_path), *(Path(p) for p in sys.path if p)]:
        for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def _described(source: AppSource, code: Path | None) -> str | None:
    """The app's description: a module docstring, a notebook's first markdown cell, a function's docstring."""
    if code is None:
        return None
    try:
        if code.suffix == ".ipynb":
            cells = json.loads(code.read_text()).get("cells", [])
            markdown = next((c for c in cells if c.get("cell_type") == "markdown"), None)
            if markdown is None:
                return None
            text = markdown.get("source", "")
            return "".join(text) if isinstance(text, list) else str(text)
        tree = ast.parse(code.read_text())
    except (OSError, SyntaxError, ValueError, AttributeError):
        return None  # the app check reports the broken app; the index still lists it
    if not source.function:
        return ast.get_docstring(tree)
    function = source.function.partition(":")[2]
    found = (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function)
    return next((ast.get_docstring(n) for n in found), None)


def code_digest(code: Path | None, extra: str = "") -> str:
    """A digest of every file of the app, a directory (not caches) or one file: it changes when any of them does."""
    digest = hashlib.sha256(extra.encode() + b"\0")
    if code is None:
        return digest.hexdigest()[:16]
    files = [code] if code.is_file() else sorted(p for p in code.rglob("*") if p.is_file())
    for path in files:
        relative = path.relative_to(code.parent if code.is_file() else code)
        if "__pycache__" in relative.parts or relative.parts[0].startswith("."):
            continue
        stat = path.stat()
        digest.update(str(relative).encode() + b"\0")
        if stat.st_size <= DIGEST_BY_CONTENT_BYTES:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
