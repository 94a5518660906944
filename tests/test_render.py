"""The rendered configs: nginx accepts them (nginx -t), supervisord parses them, and they say what we mean."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import shlex

import bokeh
import pytest
from supervisor.options import ServerOptions

import bokeh_stack
from bokeh_stack.config import topology
from bokeh_stack.config.plan import RunPlan, static_tree
from bokeh_stack.config.settings import load
from bokeh_stack.daemons import worker
from bokeh_stack.provisioning import render as rendering
from bokeh_stack.provisioning import static_files
from bokeh_stack.provisioning.render import RenderError
from harness.stack import SHIPPED_APPS, counter_apps


def changed(settings, **given):
    """The settings with some given as others (the resolved ones unchanged)."""
    return dataclasses.replace(settings, given=settings.given.model_copy(update=given))


def rendered(tmp_path, **overrides) -> RunPlan:
    settings = load(
        environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(tmp_path / "run"), **overrides}
    )
    layout = RunPlan(settings)
    rendering.render(layout)
    return layout


def supervisord_programs(layout: RunPlan) -> dict[str, list]:
    options = ServerOptions()
    options.configfile = str(layout.supervisord_conf)
    options.environ_expansions["ENV_BOKEH_SECRET_KEY"] = "x" * 40
    options.process_config(do_usage=False)
    return {group.name: group.process_configs for group in options.process_group_configs}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"workers": 3, "prefix": "/dashboards"},
        {"pools": {"heavy": {"apps": ["streaming"], "workers": 2}}, "server_names": ["bokeh.example.org"]},
        {"log_to_stdout": True, "listen_address": "::1"},
        {"ops": {"address": "0.0.0.0", "allow": ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]}},
    ],
    ids=["defaults", "prefix", "pools", "stdout-ipv6", "ops-allow"],
)
def test_nginx_accepts_the_rendered_config(tmp_path, overrides):
    rendering.nginx_test(rendered(tmp_path, **overrides))


def test_a_config_nginx_refuses_is_reported_with_nginxs_words(tmp_path):
    layout = rendered(tmp_path)
    conf = layout.nginx_site_conf
    conf.write_text(conf.read_text().replace("proxy_buffering off;", "proxy_buffering sometimes;", 1))
    with pytest.raises(RenderError, match='invalid value "sometimes"'):
        rendering.nginx_test(layout)


def test_a_config_nginx_refuses_never_replaces_the_good_one(tmp_path):
    layout = rendered(tmp_path)
    before = {p: p.read_text() for p in layout.run_dir.rglob("*.conf")}
    # nginx -t (run as root here) refuses a `user` it cannot find; the plan is not root's, so nothing is chowned.
    bad = RunPlan(changed(layout.settings, user="no-such-user-here"), euid=12345)
    with pytest.raises(RenderError, match="no-such-user-here"):
        rendering.render_checked(bad)
    assert {p: p.read_text() for p in layout.run_dir.rglob("*.conf")} == before
    assert rendering.render_checked(layout) == [], "rendering the same settings again changes nothing"


def test_roles_balancer_and_worker(tmp_path):
    layout = rendered(tmp_path, worker_hosts=["10.0.0.5", "localhost"])
    balancer = RunPlan(changed(layout.settings, role="balancer"))
    rendering.render_checked(balancer)
    # localhost is a name: the upstreams program re-resolves it (bokeh_stack.daemons.upstreams)
    assert set(supervisord_programs(balancer)) == {"nginx", "bokeh_stack_ops", "bokeh_stack_upstreams"}
    conf = layout.nginx_site_conf.read_text()
    assert "server 10.0.0.5:5100 " in conf and "server localhost:5101 " in conf
    # The balancer's ops process scrapes every worker of every host over the internal network.
    ops = json.loads(balancer.ops_file.read_text())
    assert [(t["host"], t["port"]) for t in ops["targets"]] == [("10.0.0.5", 5100), ("10.0.0.5", 5101),
                                                               ("localhost", 5100), ("localhost", 5101)]  # fmt: skip

    worker_host = RunPlan(changed(layout.settings, role="worker", user="nobody"))
    rendering.render_checked(worker_host)
    programs = supervisord_programs(worker_host)
    assert set(programs) == {"bokeh_default", "bokeh_stack_watchdog", "bokeh_stack_restarts"}
    assert "\nuser=nobody\n" in worker_host.supervisord_conf.read_text()


def test_supervisord_runs_one_process_per_worker_port(tmp_path):
    layout = rendered(tmp_path, workers=3, pools={"heavy": {"apps": ["streaming"], "workers": 2}})
    programs = supervisord_programs(layout)
    assert set(programs) == {
        "bokeh_default", "bokeh_heavy", "nginx", "bokeh_stack_watchdog", "bokeh_stack_ops", "bokeh_stack_restarts",
    }  # fmt: skip
    # One watchdog probes every worker's socket, each restarted by its own supervisord name.
    [watchdog] = programs["bokeh_stack_watchdog"]
    socket = layout.sockets_dir / "{}.sock"
    watched = [f"{pool.program}:{pool.program}_{port}=unix:{socket}".format(port)
               for pool in layout.settings.pools for port in pool.ports]  # fmt: skip
    assert shlex.split(watchdog.command)[-len(watched) - 2 :] == ["5", "/", *watched]  # as supervisord splits it
    for pool in layout.settings.pools:
        processes = programs[pool.program]
        assert [p.name for p in processes] == [f"{pool.program}_{port}" for port in pool.ports]
        for process, port in zip(processes, pool.ports, strict=True):
            command = process.command.split()
            assert command[-3:] == ["bokeh_stack.worker", str(layout.args_file(pool)), str(port)]
            options, argv = worker.split_options(worker.read_args(command[-2], str(port)))
            assert options.resume_store == str(layout.sessions_dir), "sessions resume from the runtime dir's store"
            # One host: a unix socket, no TCP port.
            assert argv[0] == "serve" and argv[argv.index("--unix-socket") + 1] == str(socket).format(port)
            assert "--port" not in argv and "--address" not in argv
            assert "--use-xheaders" in argv and argv[argv.index("--session-ids") + 1] == "signed"
            assert argv[argv.index("--log-format") + 1].startswith(f"{pool.program}_{port} ")
            served = {a.rsplit("/", 1)[1] for a in argv if a.startswith(str(SHIPPED_APPS))}
            assert served == set(pool.apps)
            assert process.autorestart and process.stopasgroup and process.killasgroup
            assert process.stdout_logfile == str(layout.settings.log_dir / f"{pool.program}_{port}.log")
            assert process.environment["BOKEH_SECRET_KEY"] == "x" * 40
    # The secret is in supervisord's environment only, never in a file.
    assert "x" * 40 not in layout.supervisord_conf.read_text()


def test_each_app_routes_to_its_pools_upstream_with_affinity(tmp_path):
    layout = rendered(tmp_path, pools={"heavy": {"apps": ["streaming"], "workers": 2}})
    conf = layout.nginx_site_conf.read_text()
    upstreams = dict(re.findall(r"upstream (bokeh_\w+) \{(.*?)\}", conf, re.S))
    assert "hash $bokeh_affinity;" in upstreams["bokeh_default"]
    sockets = [f"unix:{layout.sockets_dir}/{port}.sock" for port in (5102, 5103)]
    assert re.findall(r"server (\S+) max_fails=0", upstreams["bokeh_heavy"]) == sockets
    tcp = RunPlan(changed(layout.settings, unix_sockets=False))
    rendering.render_checked(tcp)
    conf = tcp.nginx_site_conf.read_text()
    upstreams = dict(re.findall(r"upstream (bokeh_\w+) \{(.*?)\}", conf, re.S))
    assert re.findall(r"server (\S+) max_fails=0", upstreams["bokeh_heavy"]) == ["127.0.0.1:5102", "127.0.0.1:5103"]
    argv = worker.read_args(str(tcp.args_file(tcp.settings.pools[1])), "5102")
    assert argv[argv.index("--port") + 1] == "5102" and argv[argv.index("--address") + 1] == "127.0.0.1"
    routes = re.findall(r"location (?:= |~ \^)/(\w+)(/ws|\S*) \{\n\s+proxy_pass http://(\w+);", conf)
    assert ("streaming", "/ws", "bokeh_heavy") in routes and ("streaming", "(?:/.*)?$", "bokeh_heavy") in routes
    assert {(app, pool) for app, _, pool in routes} == {
        ("streaming", "bokeh_heavy"),
        *((app, "bokeh_default") for app in layout.settings.apps if app != "streaming"),
    }
    assert len(routes) == 2 * len(layout.settings.apps)  # page and websocket, per app


def test_the_index_lists_every_app_with_its_docstring(tmp_path):
    index = (rendered(tmp_path).html_dir / "index.html").read_text()
    assert '<a class="card" href="/streaming">' in index and "<h2>Streaming</h2>" in index
    assert "second" not in index or "streamed ten times a second" in index
    assert index.count("<li>") == len(rendered(tmp_path).settings.apps)
    assert f"Served by bokeh-stack {bokeh_stack.__version__} with Bokeh {bokeh.__version__}" in index
    assert 'class="icon" style="background: hsl(' in index and "thumbnail.png" not in index


def test_an_app_with_a_thumbnail_shows_it_on_the_index(tmp_path):
    apps = counter_apps(tmp_path / "apps", ["pictured", "plain"])
    (apps / "pictured" / "static").mkdir()
    (apps / "pictured" / "static" / "thumbnail.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    plan = RunPlan(load(environ={}, overrides={"apps_dir": str(apps), "runtime_dir": str(tmp_path / "run")}))
    rendering.render(plan, static=False)
    index = (plan.html_dir / "index.html").read_text()
    assert index.count('src="/pictured/static/thumbnail.png"') == 1 and index.count("thumbnail.png") == 1


def test_templates_escape_html_from_app_docstrings(tmp_path):
    apps = counter_apps(tmp_path / "apps", ["x"])
    (apps / "x" / "main.py").write_text('"""<script>alert(1)</script>\n\nA & B."""\n')
    layout = RunPlan(load(environ={}, overrides={"apps_dir": str(apps), "runtime_dir": str(tmp_path / "run")}))
    rendering.render(layout)
    index = (layout.html_dir / "index.html").read_text()
    assert "<script>" not in index and "&lt;script&gt;" in index and "A &amp; B." in index


def test_bokehjs_is_served_from_a_precompressed_tree(tmp_path):
    source = tmp_path / "bokeh-static"
    (source / "js").mkdir(parents=True)
    big, small = b"var bokeh = 1;\n" * 200, b"var x;\n"
    (source / "js" / "bokeh.min.js").write_bytes(big)
    (source / "js" / "tiny.js").write_bytes(small)
    (source / "js" / "types.d.ts").write_bytes(big)
    old = static_tree(tmp_path / "run", "0.0.1")
    old.mkdir(parents=True)
    tree = static_tree(tmp_path / "run", "9.9.9")

    assert static_files.build(source, tree)
    assert (tree / "js" / "bokeh.min.js").read_bytes() == big
    assert gzip.decompress((tree / "js" / "bokeh.min.js.gz").read_bytes()) == big
    assert (tree / "js" / "tiny.js").read_bytes() == small and not (tree / "js" / "tiny.js.gz").exists()
    assert not (tree / "js" / "types.d.ts.gz").exists()
    assert not old.exists(), "the tree of a Bokeh version no longer installed was left behind"
    assert not static_files.build(source, tree), "a complete tree was built again"

    layout = rendered(tmp_path / "stack")
    conf = layout.nginx_site_conf.read_text()
    assert f'alias "{layout.static_tree}/";' in conf and "gzip_static on;" in conf
    assert (layout.static_tree / "js" / "bokeh.min.js.gz").exists()


def test_in_containers_supervisord_says_each_line_once(tmp_path):
    """In the foreground supervisord writes its log to stdout itself; a logfile on stdout would repeat it."""
    conf = rendered(tmp_path, log_to_stdout=True).supervisord_conf.read_text()
    assert "\nlogfile=/dev/null\n" in conf and "logfile=/dev/stdout" not in conf.split("[program:")[0]


def server_blocks(conf: str) -> dict[str, str]:
    """The nginx site config's server blocks, by their first listen directive's arguments."""
    blocks = {}
    for block in re.findall(r"\nserver \{\n(.*?)\n\}", conf, re.S):
        blocks[re.search(r"listen ([^;]+);", block).group(1)] = block
    return blocks


def test_the_ops_listener_is_its_own_server_and_lets_in_only_loopback_and_ops_allow(tmp_path):
    layout = rendered(tmp_path, ops={"port": 9999, "allow": ["10.1.0.0/16"]}, prefix="/dash")
    blocks = server_blocks(layout.nginx_site_conf.read_text())
    ops, public = blocks["127.0.0.1:9999"], blocks["127.0.0.1:8080"]
    allows = re.findall(r"^    (allow|deny) (\S+);", ops, re.M)
    assert allows == [("allow", "127.0.0.1"), ("allow", "::1"), ("allow", "10.1.0.0/16"), ("deny", "all")]
    assert f'proxy_pass "http://unix:{layout.ops_socket}:";' in ops
    assert "stub_status;" in ops and "stub_status" not in public
    # The public server knows nothing of the ops paths: they fall to its `location / { return 404; }`.
    assert "/metrics" not in public and "/ops" not in public and "unix:" not in public
    ops_file = json.loads(layout.ops_file.read_text())
    assert ops_file["metrics_path"] == "/dash/_bokeh_stack/metrics"
    assert ops_file["nginx_status"] == ["127.0.0.1", 9999, topology.route("nginx_status")]
    assert 'targets: ["127.0.0.1:9999"]' in layout.prometheus_config.read_text()


def worker_args(layout: RunPlan) -> list[str]:
    return layout.args_file(layout.settings.pools[0]).read_text().splitlines()


def test_session_tokens_carry_only_the_headers_and_cookies_the_settings_pass(tmp_path):
    args = worker_args(rendered(tmp_path / "defaults"))
    at = args.index("--include-headers")
    assert args[at + 1 : at + 4] == ["X-Real-Ip", "X-Bokeh-Stack-User", "--session-ids"]
    assert "--include-cookies" not in args, "none: the worker's hardening turns Bokeh's default (all) into none"
    session = {"pass_cookies": ["theme", "lang"], "pass_headers": ["accept-language"]}
    args = worker_args(rendered(tmp_path / "passed", session=session))
    at = args.index("--include-headers")
    assert args[at + 1 : at + 4] == ["X-Real-Ip", "X-Bokeh-Stack-User", "Accept-Language"], "as tornado spells them"
    at = args.index("--include-cookies")
    assert args[at + 1 : at + 3] == ["theme", "lang"]


def test_a_runtime_dir_too_long_for_a_unix_socket_is_refused_clearly(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 40)
    plan = RunPlan(load(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(deep)}))
    with pytest.raises(RenderError, match=r"would be \d+ bytes long, over the 107 .* shorter runtime_dir"):
        rendering.render_checked(plan)
    assert not plan.supervisord_conf.exists()


@pytest.mark.parametrize("compression", [False, True])
def test_session_compression_reaches_every_worker(tmp_path, compression):
    layout = rendered(tmp_path, session={"compression": compression})
    commands = [p.command.split() for p in supervisord_programs(layout)["bokeh_default"]]
    assert commands and all(("--compression" in c) == compression for c in commands)
