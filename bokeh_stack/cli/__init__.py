"""bokeh-stack: serve Bokeh apps with nginx in front of supervised `bokeh serve` workers. `up` starts a stack,
in the foreground or in the background; every other command acts on the stack that runs, with the settings `up`
was started with (recorded in its runtime dir) and any change given to it."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from bokeh_stack import __version__
from bokeh_stack.cli import status
from bokeh_stack.cli.logs import LogsError, log_files, show
from bokeh_stack.config import topology
from bokeh_stack.config.plan import SERVICE_USER, RunPlan, find_nginx
from bokeh_stack.config.secret import ENV_VAR, SecretError, ensure_secret, redis_password, write_secret
from bokeh_stack.config.settings import Settings, SettingsError, load, write_record
from bokeh_stack.config.values import ROLES
from bokeh_stack.provisioning import apply as applying
from bokeh_stack.provisioning import privileges, runner, supervision
from bokeh_stack.provisioning import render as rendering
from bokeh_stack.provisioning.app_check import check_apps
from bokeh_stack.provisioning.privileges import PrivilegeError
from bokeh_stack.provisioning.render import RenderError
from bokeh_stack.provisioning.runner import StackError

NGINX_MISSING = "nginx is not installed: install it with  sudo apt-get install -y nginx"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except SettingsError as e:
        print(f"bokeh-stack: {e}", file=sys.stderr)
        return 2
    except (StackError, RenderError, PrivilegeError, SecretError, LogsError, TimeoutError) as e:
        print(f"bokeh-stack: {e}", file=sys.stderr)
        return 1


def _common_flags(argument_default: Any = None) -> argparse.ArgumentParser:
    """The flags every command takes. A sub-subcommand (`users add`) takes them again with SUPPRESS as their
    default, so that one given before it (`users --runtime-dir DIR add`) is not overwritten by a default."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argument_default)
    common.add_argument("--settings", metavar="FILE", help="settings file (YAML); default: $BOKEH_STACK_SETTINGS")
    common.add_argument(
        "--apps", metavar="DIR", dest="apps_dir", help="directory of Bokeh apps (NAME/, NAME.py, NAME.ipynb)"
    )
    common.add_argument("--workers", type=int, metavar="N", help="workers of the default pool")
    common.add_argument("--port", type=int, metavar="P", help="port nginx listens on")
    common.add_argument(
        "--listen", metavar="ADDRESS", dest="listen_address", help="address nginx listens on (0.0.0.0: every one)"
    )
    common.add_argument("--base-port", type=int, metavar="B", dest="base_port", help="first worker port")
    common.add_argument(
        "--ops-port", type=int, metavar="P", dest="ops_port", help="port of the ops listener (/metrics, /ops)"
    )
    common.add_argument(
        "--runtime-dir", metavar="DIR", dest="runtime_dir", help="where configs, logs and the secret go"
    )
    common.add_argument(
        "--role", choices=ROLES, help="what this host runs: nginx and workers (all), nginx only, or workers only"
    )
    common.add_argument(
        "--user", help=f"when root: run the workers and nginx's worker processes as this user (default {SERVICE_USER})"
    )
    return common


def _parser() -> argparse.ArgumentParser:
    common, again = _common_flags(), _common_flags(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="bokeh-stack", description=__doc__)
    parser.add_argument("--version", action=_Version, help="show bokeh-stack's and Bokeh's versions and exit")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, function, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(command=function)
        return p

    up = command("up", cmd_up, "serve the apps: workers and nginx under supervisord, in the foreground")
    up.add_argument("-d", "--detach", action="store_true", help="return once the stack serves; it keeps running")
    up.add_argument("--dev", action="store_true", help="watch the apps' code: a saved change restarts their workers")
    up.add_argument("--verbose", action="store_true", help="show supervisord's own log lines too")
    restart = command("restart", cmd_restart, "stop the running stack, then start it again in the background")
    restart.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)
    out = command("render", cmd_render, "write the nginx and supervisord configs and test them with nginx -t")
    out.add_argument("--out", metavar="DIR", help="write here instead of the runtime dir")
    command("check", cmd_check, "check the settings, that every app builds its document, and the configs")
    apply = command("apply", cmd_apply, "render, then apply what changed to the running stack without downtime")
    apply.add_argument("--stateful", action="store_true", help="end with a Salt-style changed=yes|no line")
    apply.add_argument("--dry-run", action="store_true", help="only show what would change (a diff)")
    apply.set_defaults(restart_all=False)
    reload = command("reload", cmd_apply, "render, reload nginx and restart every worker, one at a time")
    reload.set_defaults(restart_all=True, stateful=False, dry_run=False)
    state = command("status", cmd_status, "every worker of this host: state, sessions, memory, build time, restarts")
    state.add_argument("--quiet", action="store_true", help="print nothing; exit 0 if the stack runs, 3 if it does not")
    state.add_argument("--json", action="store_true", help="as JSON (with --watch: one document per line)")
    state.add_argument("--watch", action="store_true", help=f"show it again every {status.WATCH_INTERVAL_S:.0f} s")
    sup = command(
        "supervisord", cmd_supervisord, "render, then become the stack's supervisord (containers, Salt, systemd)"
    )
    sup.add_argument("--daemon", action="store_true", help="supervisord goes to the background")
    command("redis", cmd_redis, "render redis-server's config, then become redis-server (the redis container)")
    command("stop", cmd_stop, "stop the running stack: every worker (draining) and nginx, then supervisord")
    scale = command("scale", cmd_scale, "hold a pool that sizes itself at N workers now, or let it size itself (auto)")
    scale.add_argument("pool", help="the pool's name (`default` for the default pool)")
    scale.add_argument("count", type=_count, metavar="N|auto", help="workers, within the pool's bounds; or auto")
    logs = command("logs", cmd_logs, "show the logs: every one, nginx's, or one worker's (its name or port)")
    logs.add_argument("name", nargs="?", metavar="WORKER|nginx", help="e.g. bokeh_default_5100, 5100 or nginx")
    logs.add_argument("-f", "--follow", action="store_true", help="go on showing what is written")
    logs.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="lines from the end of each (20)")
    secret = command("secret", cmd_secret, "make sure the secret that signs session ids exists (generated if missing)")
    secret.add_argument("--from-stdin", action="store_true", help="the secret is given on standard input")
    secret.add_argument("--stateful", action="store_true", help="end with a Salt-style changed=yes|no line")
    secret.add_argument("--dry-run", action="store_true", help="only say whether it would change")
    secret.add_argument(
        "--redis-password", action="store_true", help="print the password the workers give Redis (session.store)"
    )
    people = command("users", cmd_users, "manage who may sign in (settings auth.mode password): add, remove, list")
    action = people.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = action.add_parser("add", parents=[again], help="add a user, or set a user's password and groups")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", required=True, help="read the password from stdin")
    add.add_argument("--group", action="append", default=[], dest="groups", help="a group for settings access")
    remove = action.add_parser("remove", parents=[again], help="remove a user (signed out at once)")
    remove.add_argument("name")
    for changing in (add, remove):
        changing.add_argument("--stateful", action="store_true", help="end with a Salt-style changed=yes|no line")
        changing.add_argument("--dry-run", action="store_true", help="only say whether it would change")
    action.add_parser("list", parents=[again], help="every user and their groups")
    plan = command("plan", cmd_plan, "print what this host runs, as whom, and where every file of the stack is")
    plan.add_argument("--json", action="store_true", help="as JSON")
    plan.add_argument("--runs", choices=RunPlan.PROGRAMS, help="print nothing; exit 0 if this host runs it, else 1")
    return parser


class _Version(argparse.Action):
    """--version, with Bokeh imported only when asked (every other command starts without it)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from bokeh import __version__ as bokeh_version

        print(f"bokeh-stack {__version__} (bokeh {bokeh_version})")
        parser.exit()


def _settings(args: argparse.Namespace) -> Settings:
    """`up` starts from what it is given; every other command from what the running stack was started with."""
    flags = ("apps_dir", "workers", "port", "listen_address", "base_port", "runtime_dir", "role", "user")
    overrides: dict[str, Any] = {key: getattr(args, key) for key in flags if getattr(args, key, None) is not None}
    if getattr(args, "ops_port", None) is not None:
        overrides["ops"] = {"port": args.ops_port}
    return load(args.settings, overrides=overrides, recorded=args.command is not cmd_up)


def _plan(args: argparse.Namespace) -> RunPlan:
    plan = RunPlan(_settings(args))
    if plan.with_nginx and find_nginx() is None:
        raise StackError(NGINX_MISSING)
    return plan


def cmd_render(args: argparse.Namespace) -> int:
    plan = _plan(args)
    if args.out:
        plan = plan.in_dir(Path(args.out).resolve())
    else:
        privileges.check(plan, lambda line: print(f"bokeh-stack: {line}"))
    changed = rendering.render_checked(plan)
    for path in changed:
        print(path)
    print(f"{len(changed)} file(s) changed in {plan.run_dir}" + ("; nginx -t: ok" if plan.with_nginx else ""))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    plan = _plan(args)
    if args.dry_run:
        would = rendering.pending(plan)
        for path, text in rendering.outputs(plan).items():
            if path in would:
                old = path.read_text().splitlines(keepends=True) if path.exists() else []
                sys.stdout.writelines(difflib.unified_diff(old, text.splitlines(keepends=True), str(path), str(path)))
        for path in would:
            print(f"would change {path}")
        if args.stateful:
            comment = f"{len(would)} file(s) would change" if would else "up to date"
            print(f"changed={'yes' if would else 'no'} comment={shlex.quote(comment)}")
        return 0
    broken = runner.BrokenApps(plan)
    try:
        applied = applying.apply(plan, restart_all=args.restart_all)
    except applying.ApplyError as e:
        if args.stateful:
            print(f"changed=yes comment={shlex.quote(str(e))}")
        raise StackError(str(e)) from e
    write_record(plan.settings)
    changed = bool(applied.changed_files or applied.actions)
    if not applied.running:
        print(f"bokeh-stack: {len(applied.changed_files)} file(s) changed; no stack is running from {plan.run_dir}")
    elif not changed:
        print("bokeh-stack: nothing changed")
    failures = broken.report()
    if args.stateful:
        if not changed:
            comment = "up to date"
        else:
            comment = "; ".join(applied.actions) or f"{len(applied.changed_files)} file(s) changed"
        print(f"changed={'yes' if changed else 'no'} comment={shlex.quote(comment)}")
    if failures:
        raise StackError(f"{len(failures)} app(s) failed to build their document: {', '.join(failures)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    plan = _plan(args)
    settings = plan.settings
    pools, workers = len(settings.pools), " + ".join(pool.bounds() for pool in settings.pools)
    print(f"settings: ok ({len(settings.apps)} apps in {pools} pool(s), {workers} workers)")
    privileges.check(plan, lambda line: print(f"bokeh-stack: {line}"))
    failed = 0
    validation: dict[str, list[str]] = {}
    for app, error in check_apps(settings, plan.app_user, validation=validation).items():
        if error:
            failed += 1
            print(f"app {app}: FAILED\n" + "\n".join(f"    {line}" for line in error.splitlines()))
        else:
            found = validation.get(app, [])
            print(f"app {app}: ok" + (f", Bokeh's checks of its document found {len(found)}:" if found else ""))
            print("".join(f"    {line}\n" for line in found), end="")
    with tempfile.TemporaryDirectory(prefix="bokeh-stack-check-") as tmp:
        rendering.render_checked(_plan(args).in_dir(Path(tmp)))
    print("configs: ok (nginx -t passed)")
    if failed:
        raise StackError(f"{failed} app(s) failed to build their document")
    return 0


def _not_running(plan: RunPlan) -> str:
    return f"no stack is running from {plan.run_dir} (no supervisord answers on {plan.socket})"


def cmd_status(args: argparse.Namespace) -> int:
    plan = RunPlan(_settings(args))
    pid = supervision.supervisord_running(plan.socket)
    if args.quiet:
        return 0 if pid else 3
    if pid is None:
        raise StackError(_not_running(plan))
    status.show(plan, as_json=args.json, watch=args.watch)
    return 0


def cmd_supervisord(args: argparse.Namespace) -> int:
    plan = _plan(args)
    running = supervision.supervisord_running(plan.socket)
    if running:
        raise StackError(f"a stack already runs from {plan.run_dir} (supervisord pid {running})")
    say = lambda line: print(f"bokeh-stack: {line}", flush=True)  # noqa: E731
    privileges.check(plan, say)
    if plan.with_nginx:  # nginx refuses a config naming a host it cannot resolve yet
        from bokeh_stack.daemons.upstreams import wait_until_resolved

        wait_until_resolved(topology.upstream_names(plan.settings), say)
    rendering.render_checked(plan)
    argv, env = supervision.supervisord_command(plan, foreground=not args.daemon)
    sys.stdout.flush()
    os.umask(supervision.UMASK)
    os.execve(argv[0], argv, env)  # supervisord takes this process over: it gets the signals directly


def cmd_redis(args: argparse.Namespace) -> int:
    plan = RunPlan(_settings(args))
    password_file = plan.settings.session.redis_password_file
    env = dict(os.environ)
    if password_file:  # made on the first start (Compose: into a volume the workers mount), then shared
        ensure_secret(Path(password_file), environ={})
    else:
        env[ENV_VAR] = ensure_secret(plan.secret_file)
    conf = rendering.render_redis(plan)
    argv = [plan.python, "-m", topology.MODULES["redis"], str(conf), str(plan.redis_dir)]
    sys.stdout.flush()
    os.execve(argv[0], argv + ([password_file] if password_file else []), env)


def _count(text: str) -> str:
    if text != "auto" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a number of workers, or auto")
    return text


def cmd_scale(args: argparse.Namespace) -> int:
    import asyncio

    from bokeh_stack.daemons import little_http, pools

    plan = RunPlan(_settings(args))
    pool = next((p for p in plan.settings.pools if p.name == args.pool), None)
    if pool is None:
        raise StackError(f"no pool {args.pool!r}: the pools are {', '.join(p.name for p in plan.settings.pools)}")
    if not pool.sizes_itself:
        raise StackError(
            f"pool {pool.name} has a fixed size (workers: {pool.workers}): give it min_workers or max_workers in "
            f"the settings to let it change"
        )
    if supervision.supervisord_running(plan.socket) is None:
        raise StackError(_not_running(plan))
    target = f"/scale/{pool.name}/{args.count}"
    try:
        code, said = asyncio.run(little_http.request(str(plan.pools_control), "POST", target, pools.SCALE_TIMEOUT_S))
    except (OSError, TimeoutError) as e:
        raise StackError(f"the pools program does not answer on {plan.pools_control}: {e}") from e
    if code != 200:
        raise StackError(said)
    print(f"bokeh-stack: {said}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    plan = RunPlan(_settings(args))
    pid = supervision.shutdown(plan)
    print(f"bokeh-stack: stopped the stack of {plan.run_dir} (supervisord pid {pid})" if pid else _not_running(plan))
    return 0


def cmd_secret(args: argparse.Namespace) -> int:
    plan = RunPlan(_settings(args))
    if args.redis_password:  # for Redis's requirepass: the workers' (derived from the secret, made first if missing)
        print(redis_password(ensure_secret(plan.secret_file), plan.settings.session.redis_password_file))
        return 0
    if args.from_stdin:
        changed = write_secret(plan.secret_file, sys.stdin.read().strip(), dry_run=args.dry_run)
    else:
        changed = not plan.secret_file.exists()
        if changed and not args.dry_run:
            ensure_secret(plan.secret_file, environ={})
    verb = ("would be written" if args.dry_run else "written") if changed else "unchanged"
    if args.stateful:
        print(f"changed={'yes' if changed else 'no'} comment={shlex.quote(f'secret {verb}: {plan.secret_file}')}")
    else:
        print(f"bokeh-stack: secret {verb}: {plan.secret_file}")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    from bokeh_stack.daemons.signin import users  # Argon2: only for this command

    try:
        return _change_users(args, users)
    except users.UsersError as e:
        print(f"bokeh-stack: {e}", file=sys.stderr)
        return 1


def _change_users(args: argparse.Namespace, users: Any) -> int:
    plan = RunPlan(_settings(args))
    path = plan.users_file
    known = users.read(path)
    if args.action == "list":
        for user in known.values():
            print(f"{user.name}" + (f"  groups: {', '.join(user.groups)}" if user.groups else ""))
        return 0
    name = users.check_name(args.name)
    if args.action == "remove":
        changed, verb = name in known, "removed"
        if not changed and not args.stateful:
            raise users.UsersError(f"no user {name!r} in {path}")
        known.pop(name, None)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
        before = known.get(name)
        changed = not (before and before.groups == users.check_groups(args.groups) and users.verify(before, password))
        verb = "changed" if before else "added"
        if changed:
            known[name] = users.make(name, password, args.groups)
    if changed and not args.dry_run:
        privileges.ensure_service_user(plan, lambda line: print(f"bokeh-stack: {line}"))
        users.write(path, known)
        privileges.own(plan, path, plan.signin_user)  # the sign-in process reads it (render hands it over too)
    said = (f"would be {verb}" if args.dry_run else verb) if changed else "unchanged"
    if args.stateful:
        print(f"changed={'yes' if changed else 'no'} comment={shlex.quote(f'user {name} {said} in {path}')}")
    else:
        print(f"bokeh-stack: user {name} {said} in {path}")
    if plan.settings.auth.mode != "password":
        print(f"bokeh-stack: note: auth.mode is {plan.settings.auth.mode}: these users sign in once it is password",
              file=sys.stderr)  # fmt: skip
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    plan = RunPlan(_settings(args))
    if args.runs:
        return 0 if plan.runs()[args.runs] else 1
    if args.json:
        print(json.dumps({"runs": plan.runs(), "users": plan.users(), **plan.paths()}, indent=2))
        return 0
    runs = " ".join(name for name, here in plan.runs().items() if here)
    users = " ".join(f"{role}={user}" for role, user in plan.users().items() if user)
    rows = {"runs": runs, "users": users or "(the user who starts it)", **plan.paths()}
    print("\n".join(f"{k:16} {v}" for k, v in rows.items()))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    return runner.up(_plan(args), detach=args.detach, dev=args.dev, verbose=args.verbose)


def cmd_restart(args: argparse.Namespace) -> int:
    plan = _plan(args)
    pid = supervision.shutdown(plan)
    if pid:
        runner.say(f"stopped the stack of {plan.run_dir} (supervisord pid {pid})")
    return runner.up(plan, detach=True)


def cmd_logs(args: argparse.Namespace) -> int:
    show(log_files(RunPlan(_settings(args)), args.name), args.lines, args.follow)
    return 0


if __name__ == "__main__":
    sys.exit(main())
