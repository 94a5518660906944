"""Render the nginx and supervisord configs from the run plan: the templates in nginx/ and supervisor/ are their
only source, for the local runner, the containers and the Salt formula alike. In an installed package they are
in bokeh_stack/templates/ (pyproject.toml puts them there); in a source checkout, at its top level."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jinja2

from bokeh_stack import __version__, identity
from bokeh_stack.config import limits, topology
from bokeh_stack.config.expect import Expect, unmet
from bokeh_stack.config.files import write_atomically
from bokeh_stack.config.handoff import ManagedPool, OpsConfig, PoolsConfig, SigninConfig
from bokeh_stack.config.plan import UNIX_PATH_MAX, RunPlan
from bokeh_stack.config.pools import Pool
from bokeh_stack.config.settings import Settings
from bokeh_stack.config.topology import host_port
from bokeh_stack.provisioning import privileges, static_files, supervision
from bokeh_stack.provisioning.apps import app_info, code_digest

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The /ops dashboard samples the fleet this often and keeps this much.
OPS_INTERVAL_S = 5
OPS_HISTORY_S = 3600
# A page held while its pool's first worker starts is answered this long before nginx's page timeout.
HOLD_MARGIN_S = 5
# The small "All apps" link nginx adds to every app page: out of the app's way, readable on any background.
INDEX_LINK_STYLE = (
    "position:fixed;right:12px;bottom:12px;z-index:1000;padding:4px 10px;border-radius:12px;"
    "background:rgba(255,255,255,.9);border:1px solid #ccd;color:#1f5fa8;font:13px system-ui,sans-serif;"
    "text-decoration:none"
)


def templates_root() -> Path:
    installed = PACKAGE_DIR / "templates"
    return installed if installed.is_dir() else PACKAGE_DIR.parent


class RenderError(RuntimeError):
    """A rendered config that its own program refuses (nginx -t)."""


# What rendering takes from Bokeh: where its static files and its favicon are (checked by render_checked).
BOKEH_EXPECTS = (Expect("bokeh.util.paths:static_path"), Expect("bokeh.settings:Settings.ico_path"))


def bokeh_static_dir() -> Path:
    from bokeh.util.paths import static_path

    return Path(static_path())


def bokeh_favicon() -> Path:
    from bokeh.settings import settings

    return Path(settings.ico_path())


def context(plan: RunPlan) -> dict[str, Any]:
    from bokeh import __version__ as bokeh_version

    s = plan.settings
    apps = {app: app_info(s.sources[app], s.python_path) for app in s.apps}
    pools = [
        {
            "name": pool.name,
            "program": pool.program,
            "probe": topology.probe_upstream(pool.program),
            "apps": pool.apps,
            "sources": [s.sources[app] for app in pool.apps],
            "slots": pool.slots,
            "bounds": pool.bounds(),
            "managed": pool.managed,
            "base_port": pool.base_port,
            "args_file": plan.args_file(pool),
            "digests": {app: apps[app]["digest"] for app in pool.apps},
            # Its upstream's servers: the lines themselves, or the file the pools program keeps them in.
            "members": f'    include "{plan.pool_members(pool)}";\n'
            if pool.managed
            else topology.upstream_members(topology.upstream_servers(plan, pool)),
            "servers": topology.upstream_servers(plan, pool, pool.ports),
            # A worker's own endpoint, for its arguments file ({port}).
            "socket": topology.worker_endpoint(plan, "{port}").socket,
            "process_at_port": topology.worker_process(pool.program, "{port}"),
            # Every worker the watchdog probes: supervisord's group:name, and its endpoint.
            "watched": [
                (f"{pool.program}:{topology.worker_process(pool.program, port)}", topology.worker_endpoint(plan, port))
                for port in pool.ports
            ],
        }
        for pool in s.pools
    ]
    all_servers = sum(len(p["servers"]) for p in pools)
    return {
        "s": s,
        "plan": plan,
        "limits": {name: getattr(limits, name) for name in dir(limits) if name.isupper()},
        "modules": topology.MODULES,
        "programs": {
            "ops": topology.OPS,
            "signin": topology.SIGNIN,
            "upstreams": topology.UPSTREAMS,
            "restarts": topology.RESTARTS,
            "redis": topology.REDIS,
            "watchdog": topology.WATCHDOG,
            "pools": topology.POOLS,
            "nginx": topology.NGINX,
            "probe": topology.PROBE,
        },
        "routes": topology.routes(s.prefix),
        "pools": pools,
        "probes": [topology.PROBE] + [p["probe"] for p in pools],
        "apps": list(apps.values()),
        "listen": host_port(s.listen_address, s.port),
        "tls_listen": host_port(s.listen_address, s.tls.port),
        "tls_port_suffix": "" if s.tls.port == 443 else f":{s.tls.port}",
        "static_dir": plan.static_tree,
        "favicon": bokeh_favicon(),
        "ws_read_timeout_s": limits.websocket_read_timeout_s(s.session.keep_alive_ms),
        # A worker host's name stands for every address behind it (a scaled service, whose removed task nginx
        # may still try until the upstreams program reloads it): then each address once (0), else up to 3.
        "max_tries": 0 if topology.upstream_names(s) else min(all_servers, 3),
        "version": __version__,
        # The workers' own code: an upgrade changes every pool's arguments file, so apply restarts the workers
        # one at a time onto it.
        "stack_digest": code_digest(PACKAGE_DIR),
        "index_link_style": INDEX_LINK_STYLE,
        "bokeh_version": bokeh_version,
        "worker_mode": _worker_mode(s),
        "resume_store": plan.resume_store,
        "token_headers": [_header_name(h) for h in ("X-Real-IP", identity.USER_HEADER, *s.session.pass_headers)],
        "user": None,
        "umask": supervision.UMASK,
        "user_header": identity.USER_HEADER,
        "ops_listen": host_port(s.ops.address, s.ops.port),
        "ops_server_names": s.ops_server_names,
        "ops_local": topology.ops_endpoint(s).host,
        "ops_target": str(topology.ops_endpoint(s)),
        # The ops process itself, behind the ops listener.
        "ops_process_url": topology.Endpoint(socket=str(plan.ops_socket)).url,
        "ops_origin": topology.OPS_TRUSTED_ORIGIN,
        "upstream_names": topology.upstream_names(s),
        "scrape_timeout_s": limits.SCRAPE_TIMEOUT_S,
        "worker_log": "the container's output (docker compose logs workers)"
        if s.log_to_stdout
        else plan.process_log(topology.SUPERVISOR_PROCESS),
        "supervisor_process": topology.SUPERVISOR_PROCESS,
        "supervisor_port": topology.SUPERVISOR_PORT,
    }


def ops_config(plan: RunPlan) -> OpsConfig:
    s = plan.settings
    ops = topology.ops_endpoint(s)
    return OpsConfig(
        socket=str(plan.ops_socket),
        targets=tuple(topology.targets(plan)),
        metrics_path=topology.route("worker_metrics", s.prefix),
        nginx_status=(ops.host, ops.port, topology.route("nginx_status")),
        interval_s=OPS_INTERVAL_S,
        history=OPS_HISTORY_S // OPS_INTERVAL_S,
        pools={pool.name: (pool.min_workers, pool.max_workers) for pool in s.pools},
        pools_state=str(plan.pools_state) if plan.with_pools else "",
    )


def pools_config(plan: RunPlan) -> PoolsConfig:
    s = plan.settings
    managed = [pool for pool in s.pools if pool.managed]
    return PoolsConfig(
        supervisor_socket=str(plan.socket),
        control_socket=str(plan.pools_control),
        wake_socket=str(plan.wake_socket),
        wake_server=_wake_server(plan),
        state_file=str(plan.pools_state),
        probe_path=f"{s.prefix}/",
        metrics_path=topology.route("worker_metrics", s.prefix),
        hold_s=max(1.0, s.nginx.page_timeout_s - HOLD_MARGIN_S),
        pools=tuple(
            ManagedPool(
                name=pool.name,
                program=pool.program,
                apps=pool.apps,
                min_workers=pool.min_workers,
                max_workers=pool.max_workers,
                sessions_per_worker=pool.sessions_per_worker,
                idle_timeout_s=pool.idle_timeout_s,
                recycle=dataclasses.asdict(pool.recycle),
                slots=tuple(
                    (port, str(topology.worker_endpoint(plan, port)), topology.upstream_servers(plan, pool, [port])[0])
                    for port in pool.ports
                ),
                members_file=str(plan.pool_members(pool)),
            )
            for pool in managed
        ),
    )


def _wake_server(plan: RunPlan) -> str:
    """The pools program's waiting room, as nginx's `server` for a pool with no worker."""
    return str(topology.Endpoint(socket=str(plan.wake_socket)))


def pool_members(plan: RunPlan, pool: Pool) -> str:
    """A managed pool's upstream servers: as the pools program last wrote them, while they name its workers (or
    its waiting room); else the workers it starts with (or the waiting room, when that is none)."""
    wake = topology.upstream_members([_wake_server(plan)])
    allowed = {topology.upstream_members([server]) for server in topology.upstream_servers(plan, pool, pool.ports)}
    try:
        kept = plan.pool_members(pool).read_text()
    except OSError:
        kept = ""
    lines = kept.splitlines(keepends=True)
    if kept == wake or (lines and all(line in allowed for line in lines)):
        return kept
    return topology.upstream_members(topology.upstream_servers(plan, pool)) or wake


def signin_config(plan: RunPlan, apps: list[dict[str, Any]]) -> SigninConfig:
    from bokeh import __version__ as bokeh_version

    s = plan.settings
    index_keys = ("name", "title", "description", "thumbnail", "hue")
    return SigninConfig(
        socket=str(plan.signin_socket),
        mode=s.auth.mode,
        prefix=s.prefix,
        session_hours=s.auth.session_hours,
        failed_per_minute=s.auth.failed_per_minute,
        users_file=str(plan.users_file),
        key_file=str(plan.signin_key_file),
        revoked_file=str(plan.revoked_file),
        workers=[dataclasses.asdict(t) for t in topology.targets(plan)],
        revoke_path=topology.route("revoke", s.prefix),
        oidc=s.auth.oidc.model_dump(mode="json"),
        access={app: {key: list(names) for key, names in rule.items()} for app, rule in s.access.items()},
        apps=[{key: app[key] for key in index_keys} for app in apps],
        versions={"version": __version__, "bokeh_version": bokeh_version},
        templates=str(templates_root()),
    )


def _header_name(name: str) -> str:
    """A header name as tornado spells it when Bokeh compares it with --include-headers (X-Real-Ip)."""
    return "-".join(part.capitalize() for part in name.split("-"))


def _worker_mode(s: Settings) -> str:
    """The worker's flags (daemons/worker.py): plain Bokeh, fixes that leave out what does not fit, or fixes that
    must fit; with the workers' metrics or without."""
    if not s.worker_fixes:
        flags = "--plain "
    else:
        flags = "--warn-mismatch " if s.worker_fix_mismatch == "warn" else ""
    flags += "" if s.ops.metrics else "--no-metrics "
    flags += "--compression " if s.session.compression else ""
    return flags + ("--client-session-ids " if s.session.client_session_ids else "")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_root())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=jinja2.select_autoescape(["html.j2"]),
    )
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    env.filters["regex"] = lambda value: re.escape(str(value))
    return env


REDIS_TEMPLATE = "redis/redis.conf.j2"


def render_redis(plan: RunPlan) -> Path:
    """redis-server's config alone, without its password (the redis container: `bokeh-stack redis`)."""
    _write(plan.redis_conf, environment().get_template(REDIS_TEMPLATE).render(s=plan.settings, plan=plan))
    return plan.redis_conf


def outputs(plan: RunPlan) -> dict[Path, str]:
    """Every file the plan's configs consist of, and what it must say."""
    ctx = context(plan)
    env = environment()
    targets = {
        "nginx/nginx.conf.j2": plan.nginx_conf,
        "nginx/bokeh-stack.conf.j2": plan.nginx_site_conf,
        "nginx/index.html.j2": plan.html_dir / "index.html",
        "supervisor/supervisord.conf.j2": plan.supervisord_conf,
    }
    if plan.with_nginx:
        targets["prometheus/prometheus.yml.j2"] = plan.prometheus_config
    if plan.with_redis:
        targets[REDIS_TEMPLATE] = plan.redis_conf
    files = {target: env.get_template(template).render(ctx) for template, target in targets.items()}
    if plan.with_nginx:
        files[plan.ops_file] = ops_config(plan).text()
    if plan.with_signin:
        files[plan.signin_file] = signin_config(plan, ctx["apps"]).text()
    if plan.with_pools:
        files[plan.pools_file] = pools_config(plan).text()
    for pool in plan.settings.pools:
        if pool.managed:
            files[plan.pool_members(pool)] = pool_members(plan, pool)
    args = env.get_template("supervisor/worker.args.j2")
    for pool in ctx["pools"]:
        files[pool["args_file"]] = args.render(ctx, pool=pool)
    files[plan.html_dir / "healthz.txt"] = "ok\n"
    return files


def pending(plan: RunPlan) -> list[Path]:
    """The files render() would change; writes nothing."""
    return [path for path, text in outputs(plan).items() if not path.exists() or path.read_text() != text]


def render(plan: RunPlan, static: bool = True) -> list[Path]:
    """Write every config into the runtime dir, and the static tree nginx serves (unless `static` is False);
    returns the files whose content changed."""
    check_socket_paths(plan)
    files = outputs(plan)
    plan.nginx_temp.mkdir(parents=True, exist_ok=True)
    privileges.log_dir(plan)
    if plan.with_nginx:
        privileges.own(plan, plan.nginx_temp)  # nginx's workers buffer large bodies there
        privileges.private_dir(plan, plan.ops_dir)
    if plan.with_signin:
        privileges.signin_files(plan)
    if plan.with_workers and plan.settings.worker_sockets:
        privileges.sockets_dir(plan, plan.sockets_dir, plan.worker_user)
    if plan.with_workers and plan.resume_store == str(plan.sessions_dir):
        privileges.private_dir(plan, plan.sessions_dir)
    if plan.with_redis:
        privileges.private_dir(plan, plan.redis_dir)
    if plan.with_pools:
        privileges.sockets_dir(plan, plan.pools_dir, plan.supervisord_user)
    if plan.with_nginx and static:
        static_files.build(bokeh_static_dir(), plan.static_tree)
    return [path for path, text in files.items() if _write(path, text)]


def render_checked(plan: RunPlan) -> list[Path]:
    """render(), but only once nginx accepts the candidate config: a bad one never replaces a good one."""
    changed = unmet(BOKEH_EXPECTS)
    if changed:
        raise RenderError(f"this Bokeh does not say where its static files are as bokeh-stack expects: {changed}")
    privileges.ensure_service_user(plan, lambda line: print(f"bokeh-stack: {line}", flush=True))
    if plan.with_nginx:
        with tempfile.TemporaryDirectory(prefix="bokeh-stack-candidate-") as tmp:
            candidate = plan.in_dir(Path(tmp))
            render(candidate, static=False)  # nginx -t does not open the files a location serves
            nginx_test(candidate)
    return render(plan)


def check_socket_paths(plan: RunPlan) -> None:
    """A unix socket's path has a hard limit: say so before a worker fails to bind it."""
    sockets = [plan.ops_socket] if plan.with_nginx else []
    sockets += [plan.signin_socket] if plan.with_signin else []
    if plan.with_workers and plan.settings.worker_sockets:
        sockets += [Path(topology.worker_endpoint(plan, port).socket) for port in plan.settings.worker_ports]
    for path in sockets:
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise RenderError(
                f"the unix socket {path} would be {len(os.fsencode(path))} bytes long, over the {UNIX_PATH_MAX} "
                f"a unix socket may have: choose a shorter runtime_dir (or unix_sockets: false for the workers)"
            )


def _write(path: Path, text: str) -> bool:
    """Replace the file in one step, so a reader never sees half a config; False if it already said that."""
    if path.exists() and path.read_text() == text:
        return False
    write_atomically(path, text)
    return True


def nginx_test(plan: RunPlan) -> str:
    """Run `nginx -t` on the rendered config; raises RenderError with nginx's own words."""
    result = subprocess.run(
        [plan.nginx_bin, "-t", "-q", "-c", str(plan.nginx_conf), "-e", "stderr"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RenderError(f"nginx rejects the rendered config {plan.nginx_conf}:\n{result.stderr.strip()}")
    return result.stderr
