"""The generated secret: two first starts at once (two worker containers on one volume) share one key; Redis's
password, shared with the redis container or derived from the secret."""

from __future__ import annotations

import threading
import time

import pytest

from bokeh_stack.config.secret import SecretError, derived, ensure_secret, redis_password
from bokeh_stack.daemons import worker

from .test_render import rendered


def test_a_second_first_start_waits_for_the_key_being_written(tmp_path):
    path = tmp_path / "secret"
    path.touch(mode=0o600)  # the other process has created the file and not yet written its key

    def write_late() -> None:
        time.sleep(0.3)
        path.write_text("k" * 48 + "\n")

    writer = threading.Thread(target=write_late)
    writer.start()
    try:
        assert ensure_secret(path, environ={}) == "k" * 48
    finally:
        writer.join()


def test_redis_password_from_the_shared_file_or_derived_from_the_secret(tmp_path):
    """What the workers give Redis: the file Redis shares with them if set (Compose, Swarm), else a key derived from
    the secret that tells nothing of it. A file that cannot be read is named."""
    key = "k" * 48
    assert redis_password(key) == derived(key, "redis") and key not in redis_password(key)
    shared = tmp_path / "password"
    shared.write_text("p" * 40 + "\n")
    assert redis_password(key, str(shared)) == "p" * 40
    with pytest.raises(SecretError, match=r"session.redis_password_file.*missing"):
        redis_password(key, str(tmp_path / "missing"))
    with pytest.raises(SecretError, match="neither session.redis_password_file nor the workers' secret"):
        redis_password("")


def test_the_workers_are_told_where_redis_s_password_is(tmp_path):
    plan = rendered(tmp_path, session={"store": "redis://redis:6379/0", "redis_password_file": "/run/redis/password"})
    options, _ = worker.split_options(worker.read_args(str(plan.args_file(plan.settings.pools[0])), "5100"))
    assert (options.resume_store, options.redis_password_file) == ("redis://redis:6379/0", "/run/redis/password")
