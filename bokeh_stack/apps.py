"""What the stack knows of an app without running it: its title and description (the docstring of its main.py),
its static dir, and a digest of its code (a changed digest restarts the workers that serve it)."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any

# An app's picture on the index page, in its static dir; without one, the index shows its initial.
THUMBNAIL = "thumbnail.png"
# Files up to this size are digested by content; larger ones (data) by size and modification time.
DIGEST_BY_CONTENT_BYTES = 1024 * 1024


def app_info(apps_dir: Path, name: str) -> dict[str, Any]:
    """Title and description from the docstring of the app's main.py (read, not run), its static dir, its digest."""
    title, description = name.replace("_", " ").capitalize(), ""
    main = apps_dir / name / "main.py"
    try:
        doc = ast.get_docstring(ast.parse(main.read_text())) if main.is_file() else None
    except (SyntaxError, ValueError):
        doc = None  # the app check reports the broken app; the index still lists it
    if doc:
        first, _, rest = doc.strip().partition("\n")
        title = first.strip().rstrip(".") or title
        description = " ".join(rest.strip().split("\n\n")[0].split())
    static = apps_dir / name / "static"
    return {
        "name": name,
        "title": title,
        "description": description,
        "static_dir": static if static.is_dir() else None,
        "thumbnail": (static / THUMBNAIL).is_file(),
        "hue": int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) % 360,  # the icon's colour, stable per app
        "digest": code_digest(apps_dir / name),
    }


def code_digest(app_dir: Path) -> str:
    """A digest of every file of the app (not caches): it changes when any of them does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in app_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(app_dir)
        if "__pycache__" in relative.parts or relative.parts[0].startswith("."):
            continue
        stat = path.stat()
        digest.update(str(relative).encode() + b"\0")
        if stat.st_size <= DIGEST_BY_CONTENT_BYTES:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
