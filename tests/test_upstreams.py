"""bokeh_stack.daemons.upstreams: which worker hosts nginx must re-resolve, what it says when they change, and the
supervisord program that does it (rendered where worker hosts are names)."""

from __future__ import annotations

import re

import pytest

from bokeh_stack.config import topology
from bokeh_stack.config.settings import load
from bokeh_stack.daemons import upstreams
from harness.stack import SHIPPED_APPS

from .test_render import rendered

UNRESOLVABLE = "no-such-worker-host.invalid"  # .invalid never resolves (RFC 6761)


def settings(**overrides):
    return load(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": "/tmp/unused", **overrides})


def test_only_names_are_re_resolved():
    assert topology.upstream_names(settings(role="balancer", worker_hosts=["workers", "10.0.0.7", "::1"])) == (
        "workers",
    )
    assert topology.upstream_names(settings()) == (), "one host on unix sockets: nothing to resolve"


def test_resolve_changes_and_describe():
    found = topology.resolve(["localhost", UNRESOLVABLE])
    assert "127.0.0.1" in found["localhost"] and found[UNRESOLVABLE] == ()
    assert upstreams.unresolved(found) == [UNRESOLVABLE]
    old = {"workers": ("10.0.1.3", "10.0.1.4")}
    new = {"workers": ("10.0.1.4", "10.0.1.7")}
    assert upstreams.changes(old, new) == "workers: +10.0.1.7 -10.0.1.3"
    assert upstreams.describe(new) == "workers at 10.0.1.4 10.0.1.7"


def test_a_balancer_that_cannot_resolve_its_workers_says_which_and_gives_up():
    said: list[str] = []
    with pytest.raises(TimeoutError, match=f"the worker hosts {UNRESOLVABLE} did not resolve within 0 s"):
        upstreams.wait_until_resolved((UNRESOLVABLE,), said.append, timeout_s=0)
    upstreams.wait_until_resolved(("localhost",), said.append, timeout_s=0)


def test_the_program_runs_beside_nginx_where_worker_hosts_are_names(tmp_path):
    named = rendered(tmp_path / "named", role="balancer", worker_hosts=["workers", "10.0.0.7"], unix_sockets=False)
    conf = named.supervisord_conf.read_text()
    assert f"[program:{topology.UPSTREAMS}]" in conf
    assert f"-m {topology.MODULES['upstreams']} {named.socket} workers\n" in conf
    addresses = rendered(tmp_path / "addresses", role="balancer", worker_hosts=["10.0.0.7"], unix_sockets=False)
    assert topology.UPSTREAMS not in addresses.supervisord_conf.read_text()


def test_nginx_tries_every_address_behind_a_name(tmp_path):
    """A task scaled away stays in nginx's upstream, with each of its worker ports, until the program above reloads
    nginx: a page view that meets them must go on to a live worker, not end in a 504 after a few tries."""

    def tries(**overrides) -> set[str]:
        plan = rendered(tmp_path / overrides["worker_hosts"][0], role="balancer", unix_sockets=False, **overrides)
        return set(re.findall(r"proxy_next_upstream_tries (\d+);", plan.nginx_site_conf.read_text()))

    assert tries(worker_hosts=["workers"]) == {"0"}, "every address behind the name, once"
    assert tries(worker_hosts=["10.0.0.7"]) > {"0"}, "addresses: a bounded number of tries"
