"""Check that an app builds its document: `python -m bokeh_stack.app_check [--python-path DIR]... SOURCE` runs
one app's code (a directory, script or notebook path, or a function app's `module:function`), the way a worker
does for a new session, and exits non-zero with the app's own error if it fails."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import privileges
from .fixes import Expect, unmet
from .settings import Settings

# What _build assumes of Bokeh: how `bokeh serve` builds an app from a path, and how a handler says it failed.
EXPECTS = (
    Expect("bokeh.command.util:build_single_handler_application", params=("path",)),
    Expect("bokeh.application.handlers.handler:Handler.failed"),
    Expect("bokeh.application.handlers.handler:Handler.error"),
    Expect("bokeh.application.handlers.handler:Handler.error_detail"),
)


def check_apps(settings: Settings, user: str | None = None, timeout: float = 60.0) -> dict[str, str | None]:
    """app name -> None if it built a document, else what went wrong. Each app runs in its own process, as `user`
    if given (started as root: the workers' user, never root unless allowed), with the workers' python_path."""
    python_path = [arg for path in settings.python_path for arg in ("--python-path", str(path))]

    def one(app: str) -> str | None:
        try:
            result = subprocess.run(
                [sys.executable, "-m", "bokeh_stack.app_check", *python_path, settings.sources[app].serves],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=settings.apps_dir,
                **privileges.become(user),
            )
        except subprocess.TimeoutExpired:
            return f"did not build its document within {timeout:.0f} s"
        if result.returncode == 0:
            return None
        return (result.stdout.strip() or result.stderr.strip()[-2000:]) or f"exited with {result.returncode}"

    apps = list(settings.apps)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(apps, pool.map(one, apps), strict=True))


def _build(argv: list[str]) -> int:
    changed = unmet(EXPECTS)
    if changed:
        print(f"bokeh-stack cannot check apps with this Bokeh: {'; '.join(changed)}")
        return 2
    from bokeh.command.util import build_single_handler_application

    from . import function_apps
    from .worker import split_options

    python_path, _, (source,) = split_options(argv)
    sys.path[:0] = python_path
    if Path(source).exists():
        app = build_single_handler_application(source)
    else:
        app = function_apps.application(source)
    doc = app.create_document()
    failed = [h for h in app.handlers if getattr(h, "failed", False)]
    if failed:
        print("\n".join(f"{h.error}\n{h.error_detail}".strip() for h in failed))
        return 1
    print(json.dumps({"roots": len(doc.roots)}))
    return 0


if __name__ == "__main__":
    sys.exit(_build(sys.argv[1:]))
