"""The Redis the stack runs for the workers' session records (settings redis, session.store: redis://): its config
rendered from the settings, its password added at start where only its user reads it, and supervisord running it
where settings redis.run say (the Salt formula's worker or balancer hosts; the redis container starts it alone)."""

from __future__ import annotations

import asyncio

import pytest

import redis
from bokeh_stack.config import topology
from bokeh_stack.config.settings import SettingsError, load
from bokeh_stack.resume.redis_store import RedisStore
from harness.stack import SHIPPED_APPS, free_ports

from .test_render import rendered, supervisord_programs
from .test_resume import RedisServer


@pytest.mark.redis
def test_redis_runs_behind_its_password_which_only_its_private_config_holds(tmp_path):
    server = RedisServer(tmp_path)
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        assert redis.Redis(port=server.port, password=server.password).ping()
        rendered_conf = server.plan.redis_conf.read_text()
        assert f"port {server.port}\n" in rendered_conf and "requirepass" not in rendered_conf
        private = server.plan.redis_dir / "redis.conf"
        assert (
            oct(private.stat().st_mode & 0o777) == "0o600" and oct(server.plan.redis_dir.stat().st_mode)[-3:] == "700"
        )
        assert f"requirepass {server.password}\n" in private.read_text()
    finally:
        server.stop()


def test_supervisord_runs_redis_where_the_settings_say_as_the_workers_user(tmp_path):
    plain = rendered(tmp_path / "plain")
    assert topology.REDIS not in supervisord_programs(plain) and not plain.runs()["redis"]
    derived_from_the_secret = rendered(tmp_path / "derived", redis={"run": True})
    [program] = supervisord_programs(derived_from_the_secret)[topology.REDIS]
    assert derived_from_the_secret.runs()["redis"]
    assert program.command.split()[-2:] == [
        str(derived_from_the_secret.redis_conf),
        str(derived_from_the_secret.redis_dir),
    ]
    assert program.environment == {"BOKEH_SECRET_KEY": "x" * 40}, "the secret, to derive the password from"
    assert program.priority < supervisord_programs(derived_from_the_secret)["bokeh_default"][0].priority
    shared = rendered(tmp_path / "shared", redis={"run": True}, session={"redis_password_file": "/etc/redis-password"})
    [program] = supervisord_programs(shared)[topology.REDIS]
    assert program.command.endswith(" /etc/redis-password") and program.environment == {"BOKEH_SECRET_KEY": ""}


def test_a_balancer_runs_redis_only_with_a_password_file(tmp_path):
    base = {"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(tmp_path), "role": "balancer", "worker_hosts": ["w1"]}
    with pytest.raises(SettingsError, match="redis.run on a host of role balancer .* session.redis_password_file"):
        load(environ={}, overrides={**base, "redis": {"run": True}})
    load(environ={}, overrides={**base, "redis": {"run": True}, "session": {"redis_password_file": "/etc/redis-pw"}})


@pytest.mark.redis
def test_a_worker_opens_its_connection_before_a_tab_needs_it(tmp_path):
    """warm() (scheduled when a worker starts) leaves a connection open, and a tab's first resume reads on it: no
    connect, DNS or AUTH inside the read's 100 ms. Against a Redis that is not there it gives up, quietly."""
    server = RedisServer(tmp_path)
    watcher = redis.Redis(port=server.port, password=server.password)

    async def go() -> tuple[int, int]:
        store = RedisStore(server.url, server.password)
        await store.warm()
        warmed = len(watcher.client_list())
        assert await store.load("no-such-record") is None
        return warmed, len(watcher.client_list())

    try:
        assert asyncio.run(go()) == (2, 2), "one connection of the store's (and the watcher's), reused by the read"
        asyncio.run(RedisStore(f"redis://127.0.0.1:{free_ports(1)}/0").warm(tries=1))
    finally:
        server.stop()
