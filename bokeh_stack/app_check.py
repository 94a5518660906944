"""Check that an app builds its document: `python -m bokeh_stack.app_check DIR` runs one app's code, the way a
worker does for a new session, and exits non-zero with the app's own error if it fails."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import privileges


def check_apps(
    apps_dir: Path, apps: list[str], user: str | None = None, timeout: float = 60.0
) -> dict[str, str | None]:
    """app name -> None if it built a document, else what went wrong. Each app runs in its own process, as `user`
    if given (started as root: the workers' user, never root unless allowed)."""

    def one(app: str) -> str | None:
        try:
            result = subprocess.run(
                [sys.executable, "-m", "bokeh_stack.app_check", str(apps_dir / app)],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=apps_dir,
                **privileges.become(user),
            )
        except subprocess.TimeoutExpired:
            return f"did not build its document within {timeout:.0f} s"
        if result.returncode == 0:
            return None
        return (result.stdout.strip() or result.stderr.strip()[-2000:]) or f"exited with {result.returncode}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(apps, pool.map(one, apps), strict=True))


def _build(path: str) -> int:
    from bokeh.command.util import build_single_handler_application

    app = build_single_handler_application(path)
    doc = app.create_document()
    failed = [h for h in app.handlers if getattr(h, "failed", False)]
    if failed:
        print("\n".join(f"{h.error}\n{h.error_detail}".strip() for h in failed))
        return 1
    print(json.dumps({"roots": len(doc.roots)}))
    return 0


if __name__ == "__main__":
    sys.exit(_build(sys.argv[1]))
