"""Numbers nginx, supervisord and the workers must agree on (bokeh_stack/config/limits.py), held pairwise in the configs
as rendered."""

from __future__ import annotations

import re

import pytest

from bokeh_stack.config import limits
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import load
from bokeh_stack.provisioning import render as rendering
from harness.stack import SHIPPED_APPS


def plan(tmp_path, **overrides) -> RunPlan:
    settings = load(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(tmp_path), **overrides})
    result = RunPlan(settings)
    rendering.render(result, static=False)
    return result


def test_supervisord_waits_for_the_drain_before_it_kills_a_worker(tmp_path):
    assert limits.DRAIN_TIMEOUT_S < limits.STOP_WAIT_S
    conf = plan(tmp_path).supervisord_conf.read_text()
    worker_section = conf.split("[program:bokeh_default]")[1].split("\n[")[0]
    assert f"\nstopwaitsecs={limits.STOP_WAIT_S}\n" in worker_section


def test_workers_accept_every_request_header_nginx_lets_through(tmp_path):
    nginx_bytes = limits.HEADER_BUFFERS * limits.HEADER_BUFFER_KB * 1024
    assert limits.WORKER_MAX_HEADER_BYTES > nginx_bytes
    conf = plan(tmp_path).nginx_site_conf.read_text()
    assert set(re.findall(r"large_client_header_buffers (\d+) (\d+)k;", conf)) == {
        (str(limits.HEADER_BUFFERS), str(limits.HEADER_BUFFER_KB))
    }


@pytest.mark.parametrize("keep_alive_ms", [1000, 37000, 120000])
def test_nginx_lets_a_websocket_be_silent_for_longer_than_a_keep_alive_ping(tmp_path, keep_alive_ms):
    conf = plan(tmp_path, session={"keep_alive_ms": keep_alive_ms}).nginx_site_conf.read_text()
    ws_location = re.search(r"/ws \{(.*?)\n    \}", conf, re.S).group(1)
    [read_timeout] = re.findall(r"proxy_read_timeout (\d+)s;", ws_location)
    assert int(read_timeout) == limits.websocket_read_timeout_s(keep_alive_ms)
    assert int(read_timeout) * 1000 >= 3 * keep_alive_ms
    args = plan(tmp_path, session={"keep_alive_ms": keep_alive_ms}).args_dir / "bokeh_default.args"
    lines = args.read_text().splitlines()
    assert lines[lines.index("--keep-alive") + 1] == str(keep_alive_ms)
