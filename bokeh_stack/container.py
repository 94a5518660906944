"""Container entrypoints, from the settings in the environment:

    bokeh-stack supervisord                        the workers image: supervisord with every worker (no nginx)
    python -m bokeh_stack.container nginx          nginx in front of the workers at settings.worker_hosts
    python -m bokeh_stack.container health NAME    exit 0 if that service is healthy (compose healthcheck)

The engine replaces this process (exec), so it is PID 1's child-reaper and gets docker's signals directly.
"""

from __future__ import annotations

import os
import sys

from . import render as rendering
from . import supervision
from .plan import RunPlan
from .render import RenderError
from .settings import Settings, SettingsError, load


def nginx(settings: Settings) -> None:
    plan = RunPlan(settings)
    rendering.render_checked(plan)
    argv = [plan.nginx_bin, "-c", str(plan.nginx_conf), "-e", "stderr", "-g", "daemon off;"]
    os.execv(plan.nginx_bin, argv)


def health(settings: Settings, service: str) -> int:
    if service == "workers":
        # Every worker of this container answers its probe (no session is made).
        down = [port for port in settings.worker_ports if supervision.probe("127.0.0.1", port, settings.prefix) is None]
        if down:
            print(f"workers on ports {down} do not answer")
        return 1 if down else 0
    status = supervision.healthz(settings)
    print(f"/healthz: {status or 'nginx does not answer'}")
    return 0 if status == 200 else 1


def main(argv: list[str]) -> int:
    usage = "usage: python -m bokeh_stack.container nginx | health workers|nginx"
    try:
        settings = load()
        if argv == ["nginx"]:
            nginx(settings)
        elif len(argv) == 2 and argv[0] == "health" and argv[1] in ("workers", "nginx"):
            return health(settings, argv[1])
        else:
            print(usage, file=sys.stderr)
            return 2
    except SettingsError as e:
        print(f"bokeh-stack: {e}", file=sys.stderr)
        return 2
    except RenderError as e:
        print(f"bokeh-stack: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
