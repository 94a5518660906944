"""The containers' health checks, from the settings in the environment:

    python -m bokeh_stack.daemons.container health NAME    exit 0 if that service is healthy (compose healthcheck)

The workers and nginx images start with `bokeh-stack supervisord`: the workers (role worker), or nginx in front of
the workers at settings.worker_hosts with the ops process (role balancer). It execs supervisord, so supervisord is
PID 1's child-reaper and gets docker's signals directly. The redis image starts with `bokeh-stack redis`, which
becomes redis-server (bokeh_stack/daemons/redis.py).
"""

from __future__ import annotations

import os
import sys

from bokeh_stack.config import secret, topology
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import Settings, SettingsError, load


def health(settings: Settings, service: str) -> int:
    if service == "workers":
        # Every worker of this container answers its probe (no session is made).
        plan = RunPlan(settings)
        down = [
            port
            for port in settings.worker_ports
            if topology.worker_endpoint(plan, port).probe(settings.prefix) is None
        ]
        if down:
            print(f"workers on ports {down} do not answer")
        return 1 if down else 0
    status = topology.healthz(settings)
    print(f"/healthz: {status or 'nginx does not answer'}")
    return 0 if status == 200 else 1


def redis_health(settings: Settings) -> int:
    """Redis answers on its port, to the password the workers give it."""
    import redis

    key = os.environ.get(secret.ENV_VAR, "")
    try:
        password = secret.redis_password(key, settings.session.redis_password_file)
        redis.Redis(host="127.0.0.1", port=settings.redis.port, password=password, socket_timeout=2).ping()
    except (redis.RedisError, secret.SecretError) as e:
        print(f"redis: {e}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "health" or argv[1] not in ("workers", "nginx", "redis"):
        print("usage: python -m bokeh_stack.daemons.container health workers|nginx|redis", file=sys.stderr)
        return 2
    try:
        settings = load()
    except SettingsError as e:
        print(f"bokeh-stack: {e}", file=sys.stderr)
        return 2
    return redis_health(settings) if argv[1] == "redis" else health(settings, argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
