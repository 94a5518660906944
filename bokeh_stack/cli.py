"""bokeh-stack: bring the stack up in the foreground; render its configs; apply a change to a running stack
without downtime; check the apps and configs; show each worker's status."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import reload as reloading
from . import render as rendering
from . import supervision
from .apps import check_apps
from .render import Layout, RenderError
from .secret import SecretError, ensure_secret
from .settings import Settings, SettingsError, load

READY_TIMEOUT_S = 90
NGINX_MISSING = "nginx is not installed: install it with  sudo apt-get install -y nginx"


class StackError(RuntimeError):
    """A problem to report in one clear message, exit status 1."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except SettingsError as e:
        print(f"bokeh-stack: {e}", file=sys.stderr)
        return 2
    except (StackError, RenderError, SecretError) as e:
        print(f"bokeh-stack: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--settings", metavar="FILE", help="settings file (YAML); default: $BOKEH_STACK_SETTINGS")
    common.add_argument("--apps", metavar="DIR", dest="apps_dir", help="directory of Bokeh directory-apps")
    common.add_argument("--workers", type=int, metavar="N", help="workers of the default pool")
    common.add_argument("--port", type=int, metavar="P", help="port nginx listens on")
    common.add_argument("--base-port", type=int, metavar="B", dest="base_port", help="first worker port")
    common.add_argument(
        "--runtime-dir", metavar="DIR", dest="runtime_dir", help="where configs, logs and the secret go"
    )

    roles = argparse.ArgumentParser(add_help=False)
    roles.add_argument(
        "--role",
        choices=["all", "balancer", "worker"],
        default="all",
        help="what this host runs: nginx and workers (all), nginx only, or workers only",
    )
    roles.add_argument("--user", help="when root: run the workers and nginx's worker processes as this user")
    roles.add_argument("--daemon", action="store_true", help="supervisord goes to the background when started")

    parser = argparse.ArgumentParser(prog="bokeh-stack", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    up = sub.add_parser(
        "up", parents=[common], help="serve the apps: workers and nginx under supervisord, in the foreground"
    )
    up.set_defaults(command=cmd_up)
    out = sub.add_parser(
        "render", parents=[common], help="write the nginx and supervisord configs and test them with nginx -t"
    )
    out.add_argument("--out", metavar="DIR", help="write here instead of the runtime dir")
    out.set_defaults(command=cmd_render)
    check = sub.add_parser(
        "check", parents=[common], help="check the settings, that every app builds its document, and the configs"
    )
    check.set_defaults(command=cmd_check)
    apply = sub.add_parser(
        "apply", parents=[common, roles], help="render, then apply what changed to the running stack without downtime"
    )
    apply.add_argument("--stateful", action="store_true", help="end with a Salt-style changed=yes|no line")
    apply.add_argument("--dry-run", action="store_true", help="only say which files would change")
    apply.set_defaults(command=cmd_apply, restart_all=False)
    reload = sub.add_parser(
        "reload", parents=[common, roles], help="render, reload nginx and restart every worker, one at a time"
    )
    reload.set_defaults(command=cmd_apply, restart_all=True, stateful=False, dry_run=False)
    status = sub.add_parser("status", parents=[common], help="state, pid, port, uptime and probe of every worker")
    status.set_defaults(command=cmd_status)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = ("apps_dir", "workers", "port", "base_port", "runtime_dir")
    overrides: dict[str, Any] = {key: getattr(args, key) for key in flags if getattr(args, key, None) is not None}
    return load(args.settings, overrides=overrides)


def _layout(settings: Settings, args: argparse.Namespace | None = None) -> Layout:
    """By default everything runs as the user who runs bokeh-stack; --user names another for workers and nginx."""
    role = getattr(args, "role", "all")
    with_nginx, with_workers = role in ("all", "balancer"), role in ("all", "worker")
    if with_nginx and rendering.find_nginx() is None:
        raise StackError(NGINX_MISSING)
    daemonize = getattr(args, "daemon", False)
    layout = Layout(settings, with_nginx=with_nginx, with_workers=with_workers, daemonize=daemonize)
    if getattr(args, "user", None):
        return dataclasses.replace(layout, worker_user=args.user, nginx_user=args.user)
    user = getpass.getuser() if os.geteuid() == 0 else None  # only root can (and must) name a user
    return dataclasses.replace(layout, run_as=user, nginx_user=user)


def cmd_render(args: argparse.Namespace) -> int:
    layout = _layout(_settings(args), args)
    if args.out:
        layout = rendering.in_dir(layout, Path(args.out).resolve())
    changed = rendering.render_checked(layout)
    for path in changed:
        print(path)
    print(f"{len(changed)} file(s) changed in {layout.run_dir}" + ("; nginx -t: ok" if layout.with_nginx else ""))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    layout = _layout(_settings(args), args)
    if args.dry_run:
        would = rendering.pending(layout)
        for path in would:
            print(f"would change {path}")
        if args.stateful:
            comment = f"{len(would)} file(s) would change" if would else "up to date"
            print(f"changed={'yes' if would else 'no'} comment={shlex.quote(comment)}")
        return 0
    try:
        applied = reloading.apply(layout, restart_all=args.restart_all)
    except reloading.ReloadError as e:
        if args.stateful:
            print(f"changed=yes comment={shlex.quote(str(e))}")
        raise StackError(str(e)) from e
    changed = bool(applied.changed_files or applied.actions)
    if not applied.running:
        print(f"bokeh-stack: {len(applied.changed_files)} file(s) changed; no stack is running from {layout.run_dir}")
    if args.stateful:
        if not changed:
            comment = "up to date"
        else:
            comment = "; ".join(applied.actions) or f"{len(applied.changed_files)} file(s) changed"
        print(f"changed={'yes' if changed else 'no'} comment={shlex.quote(comment)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    pools, workers = len(settings.pools), len(settings.worker_ports)
    print(f"settings: ok ({len(settings.apps)} apps in {pools} pool(s), {workers} workers)")
    failed = 0
    for app, error in check_apps(settings.apps_dir, list(settings.apps)).items():
        if error:
            failed += 1
            print(f"app {app}: FAILED\n" + "\n".join(f"    {line}" for line in error.splitlines()))
        else:
            print(f"app {app}: ok")
    with tempfile.TemporaryDirectory(prefix="bokeh-stack-check-") as tmp:
        rendering.render_checked(rendering.in_dir(_layout(settings), Path(tmp)))
    print("configs: ok (nginx -t passed)")
    if failed:
        raise StackError(f"{failed} app(s) failed to build their document")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    layout = Layout(_settings(args))
    pid = supervision.supervisord_running(layout.socket)
    if pid is None:
        raise StackError(f"no stack is running from {layout.run_dir} (no supervisord answers on {layout.socket})")
    rows = [("WORKER", "POOL", "STATE", "PID", "PORT", "UPTIME", "PROBE")]
    for w in supervision.workers(layout):
        probe = f"{w.probe_ms:.0f} ms" if w.probe_ok else "no answer"
        rows.append((w.name, w.pool, w.state, str(w.pid or "-"), str(w.port), _duration(w.uptime_s), probe))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"supervisord pid {pid}, {layout.supervisord_conf}")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _duration(seconds: int) -> str:
    if seconds <= 0:
        return "-"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    layout = _layout(settings)
    running = supervision.supervisord_running(layout.socket)
    if running:
        raise StackError(f"a stack already runs from {layout.run_dir} (supervisord pid {running}): stop it first")
    _check_ports_free(settings)
    secret = ensure_secret(settings.secret_file)
    rendering.render_checked(layout)

    stop = _StopSignal()
    proc = supervision.start_supervisord(layout, secret)
    try:
        print(
            f"bokeh-stack: starting {len(settings.worker_ports)} workers and nginx (logs: {settings.log_dir})",
            flush=True,
        )
        if not _wait_ready(layout, proc, stop):
            return 1 if proc.poll() is not None or not stop.requested else 0
        scheme = "https" if settings.tls_on else "http"
        url = f"{scheme}://{settings.server_names[0]}:{settings.public_port}{settings.prefix}/"
        print(f"bokeh-stack: ready at {url}  ({', '.join(settings.apps)}); Ctrl-C stops", flush=True)
        while not stop.requested and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None:
            print(f"bokeh-stack: supervisord exited with status {proc.returncode}", file=sys.stderr)
            return 1
        return 0
    finally:
        _stop(proc)


class _StopSignal:
    """SIGINT/SIGTERM set a flag; the main loop stops the stack."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        print("bokeh-stack: stopping", flush=True)
        proc.send_signal(signal.SIGTERM)  # supervisord stops every worker and nginx, then exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print("bokeh-stack: stopped", flush=True)


def _check_ports_free(settings: Settings) -> None:
    wanted = [(settings.listen_address, settings.port, "nginx")]
    if settings.tls_on:
        wanted.append((settings.listen_address, settings.tls["port"], "nginx (TLS)"))
    wanted += [(settings.worker_address, port, "a worker") for port in settings.worker_ports]
    for address, port, user in wanted:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError as e:
                raise StackError(f"port {port} on {address}, wanted by {user}, is not free: {e.strerror}") from e


def _wait_ready(layout: Layout, proc: subprocess.Popen, stop: _StopSignal) -> bool:
    """Poll until every worker answers its probe and nginx's /healthz says 200, showing progress."""
    s = layout.settings
    deadline = time.monotonic() + READY_TIMEOUT_S
    total, shown = len(s.worker_ports), -1
    while time.monotonic() < deadline and not stop.requested:
        if proc.poll() is not None:
            print(f"bokeh-stack: supervisord exited with status {proc.returncode}; see {s.log_dir}", file=sys.stderr)
            return False
        try:
            workers = supervision.workers(layout)
        except OSError:
            workers = []  # supervisord is still starting
        fatal = [w for w in workers if w.state in ("FATAL", "BACKOFF")]
        if fatal:
            w = fatal[0]
            tail = supervision.log_tail(layout, w.name)
            raise StackError(f"worker {w.name} cannot start ({w.state}); the end of its log:\n{tail}")
        ready = sum(w.probe_ok for w in workers)
        if ready != shown:
            print(f"bokeh-stack: workers ready {ready}/{total}", flush=True)
            shown = ready
        if ready == total and supervision.healthz(s, timeout=2) == 200:
            return True
        time.sleep(0.25)
    if not stop.requested:
        raise StackError(f"the stack was not ready within {READY_TIMEOUT_S} s; see the logs in {s.log_dir}")
    return False


if __name__ == "__main__":
    sys.exit(main())
