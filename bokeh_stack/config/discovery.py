"""The apps a deployment serves: every app in apps_dir (directories, scripts, notebooks) and every function app,
each by the name it is served at, checked to be a URL path of its own."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bokeh_stack.config.values import UNSAFE_PATH_CHARS, runs_workers

# Paths where the stack serves something of its own; an app of that name would be shadowed.
RESERVED_APP_NAMES = {"static", "healthz"}
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_FUNCTION = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
# What apps_dir may hold, by suffix (a directory has none): each is served at /NAME.
APP_FILE_SUFFIXES = (".py", ".ipynb")


@dataclass(frozen=True)
class AppSource:
    """Where an app's code is: a directory, a script or a notebook in apps_dir (`path`), or a function of an
    importable module, `package.module:function` (setting function_apps)."""

    name: str
    path: Path | None = None
    function: str = ""

    @property
    def kind(self) -> str:
        if self.function:
            return "function"
        return {".py": "script", ".ipynb": "notebook"}.get(self.path.suffix, "directory")

    @property
    def serves(self) -> str:
        """What a worker is given to serve it: the path, or the function's `module:function`."""
        return self.function or str(self.path)


def discover_apps(apps_dir: Path) -> list[AppSource]:
    """The Bokeh apps in apps_dir, as `bokeh serve` takes them: subdirectories with a main.py or main.ipynb, and
    .py and .ipynb files; by name (two may share one: `a/` and `a.py`, reported by the check)."""
    if not apps_dir.is_dir():
        return []
    found = []
    for entry in sorted(apps_dir.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir() and ((entry / "main.py").is_file() or (entry / "main.ipynb").is_file()):
            found.append(AppSource(entry.name, entry))
        elif entry.is_file() and entry.suffix in APP_FILE_SUFFIXES:
            found.append(AppSource(entry.stem, entry))
    return found


def check_apps(
    apps_dir: Path, function_apps: Mapping[str, Any], role: str, problems: list[str]
) -> dict[str, AppSource]:
    """Every app by name, from apps_dir and function_apps, each name once and fit to be a URL path."""
    if not apps_dir.is_dir():
        problems.append(f"apps_dir {apps_dir} is not a directory (it may be empty when function_apps are set)")
        return {}
    found = discover_apps(apps_dir)
    for route, function in function_apps.items():
        name = str(route).removeprefix("/")
        if not isinstance(function, str) or not _FUNCTION.match(function):
            problems.append(f"function_apps.{route} must be 'package.module:function', got {function!r}")
        elif name:
            found.append(AppSource(name, function=function))
        if not name or "/" in name:
            problems.append(f"function_apps: route {route!r} must be one name, served at /NAME (/ is the index)")
    if not found:
        problems.append(
            f"apps_dir {apps_dir} holds no Bokeh app (a subdirectory with a main.py, or a .py or .ipynb file), "
            "and function_apps names none"
        )
    sources: dict[str, AppSource] = {}
    for source in found:
        if source.function:
            what = f"function app {source.name!r}"
        else:
            what = f"app {'directory ' if source.kind == 'directory' else ''}{source.path.name!r}"
        if not _APP_NAME.match(source.name):
            problems.append(f"{what} cannot be a URL path: use letters, digits, '-' and '_'")
        elif source.name in RESERVED_APP_NAMES:
            problems.append(f"{what} clashes with the stack's own /{source.name}/ path: rename it")
        elif source.name in sources:
            other = sources[source.name]
            first = f"function_apps.{other.name}" if other.function else other.path.name
            problems.append(f"{what} and {first} would both be /{source.name}: rename one")
        else:
            sources[source.name] = source
    notebooks = [s.path.name for s in sources.values() if s.kind == "notebook"]
    if notebooks and runs_workers(role) and importlib.util.find_spec("nbconvert") is None:
        problems.append(f"notebook apps ({', '.join(notebooks)}) need nbconvert: pip install 'bokeh-stack[notebooks]'")
    return dict(sorted(sources.items()))


def check_python_path(entries: list[str], role: str, problems: list[str]) -> tuple[Path, ...]:
    for entry in entries:
        if not entry.startswith("/") or set(entry) & UNSAFE_PATH_CHARS:
            problems.append(f"python_path: {entry!r} must be an absolute path without quotes or $")
        elif runs_workers(role) and not Path(entry).is_dir():
            problems.append(f"python_path: {entry} is not a directory")
    return tuple(Path(entry) for entry in entries)
