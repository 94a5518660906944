"""Check every app before its workers start: each runs in a process of its own (bokeh_stack/daemons/app_check.py),
as the workers' user, the way a worker builds a new session's document."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from bokeh_stack.config import topology
from bokeh_stack.config.settings import Settings
from bokeh_stack.provisioning import privileges


def check_apps(
    settings: Settings, user: str | None = None, timeout: float = 60.0, validation: dict | None = None
) -> dict[str, str | None]:
    """app name -> None if it built a document, else what went wrong. Each app runs in its own process, as `user`
    if given (started as root: the workers' user, never root unless allowed), with the workers' python_path.
    `validation`, if given, gets app name -> what Bokeh's integrity checks found in its document (lines)."""
    python_path = [arg for path in settings.python_path for arg in ("--python-path", str(path))]

    def one(app: str) -> str | None:
        try:
            result = subprocess.run(
                [sys.executable, "-m", topology.MODULES["app_check"], *python_path, settings.sources[app].serves],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=settings.apps_dir,
                **privileges.become(user),
            )
        except subprocess.TimeoutExpired:
            return f"did not build its document within {timeout:.0f} s"
        if result.returncode == 0:
            if validation is not None:
                validation[app] = json.loads(result.stdout.splitlines()[-1]).get("validation", [])
            return None
        return (result.stdout.strip() or result.stderr.strip()[-2000:]) or f"exited with {result.returncode}"

    apps = list(settings.apps)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(apps, pool.map(one, apps), strict=True))
