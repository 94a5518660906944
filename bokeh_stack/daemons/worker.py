"""A bokeh-stack worker: `python -m bokeh_stack.worker [--plain | --warn-mismatch] [--no-metrics]
[--compression] [--client-session-ids] ARGS_FILE PORT`
runs `bokeh` with the arguments in ARGS_FILE (one per line, rendered from supervisor/worker.args.j2; {port}
replaced by PORT), with the stack's fixes to Bokeh (patches/fixes.py, patches/hardening.py) and its metrics
(patches/worker_metrics.py) checked and applied first. ARGS_FILE starts with the worker's own options, before
Bokeh's `serve`: `--python-path DIR` (put first on the import path) and `--function-app ROUTE=module:function`
(bokeh_stack/patches/function_apps.py), each as often as needed; `--resume-store DIR|URL`, `--resume-max-bytes N`,
`--resume-except APP` (each excepted app) and `--redis-password-file FILE`, to resume sessions (bokeh_stack/resume/)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from bokeh_stack.config.expect import Expect, unmet
from bokeh_stack.patches import fixes
from bokeh_stack.patches.patching import Fix, FixTargetChanged

# The line a worker logs once it listens (Bokeh names its URLs only on a TCP port): the tests read it.
LISTENING = "bokeh-stack worker listening on"
USAGE = (
    "usage: python -m bokeh_stack.worker [--plain | --warn-mismatch] [--no-metrics] [--compression] "
    "[--client-session-ids] ARGS_FILE PORT"
)
FLAGS = ("--plain", "--warn-mismatch", "--no-metrics", "--compression", "--client-session-ids")
OPTIONS = (
    "--python-path", "--function-app", "--resume-store", "--resume-max-bytes", "--resume-except",
    "--redis-password-file",
)  # fmt: skip
# What serve_function_apps assumes of Bokeh's serve command.
SERVE_EXPECTS = (
    Expect("bokeh.command.subcommands.serve:Serve.invoke", uses=("customize_applications", "files", "Application")),
    Expect("bokeh.command.subcommands.serve:Serve.customize_applications", params=("args", "applications")),
)


def read_args(args_file: str, port: str) -> list[str]:
    with open(args_file) as f:
        return [line.replace("{port}", port) for line in f.read().splitlines() if line and not line.startswith("#")]


@dataclass
class Options:
    """The worker's own options, before `serve` in ARGS_FILE."""

    python_path: list[str] = field(default_factory=list)
    function_apps: dict[str, str] = field(default_factory=dict)  # route -> module:function
    resume_store: str = ""  # settings session.store, made a directory or a redis:// URL; empty: no resume
    resume_max_bytes: int = 0
    resume_except: list[str] = field(default_factory=list)
    redis_password_file: str = ""  # settings session.redis_password_file; empty: derived from the secret


def split_options(args: list[str]) -> tuple[Options, list[str]]:
    """The worker's own options before `serve`, and Bokeh's arguments."""
    options = Options()
    while args and args[0] in OPTIONS and len(args) > 1:
        option, value, args = args[0], args[1], args[2:]
        if option == "--python-path":
            options.python_path.append(value)
        elif option == "--function-app":
            from bokeh_stack.patches.function_apps import parse

            route, function = parse(value)
            options.function_apps[route] = function
        elif option == "--resume-store":
            options.resume_store = value
        elif option == "--resume-max-bytes":
            options.resume_max_bytes = int(value)
        elif option == "--redis-password-file":
            options.redis_password_file = value
        else:
            options.resume_except.append(value)
    return options, args


def serve_function_apps(function_apps: dict[str, str]) -> None:
    """Add each function app to what `bokeh serve` serves, through Serve.customize_applications (the hook Bokeh's
    serve command offers for it). Given no app file, Bokeh serves an empty app at /: left out then."""
    from bokeh.command.subcommands.serve import Serve

    from bokeh_stack.patches import function_apps as functions

    original = Serve.customize_applications

    def customize_applications(self: Serve, args: Any, applications: dict[str, Any]) -> dict[str, Any]:
        applications = original(self, args, applications)
        if not args.files:
            applications.pop("/", None)
        for route, spec in function_apps.items():
            applications[f"/{route}"] = functions.application(spec)
        return applications

    Serve.customize_applications = customize_applications  # type: ignore[method-assign]


def log_where_it_listens() -> None:
    """One log line, on a unix socket as on a TCP port, once the server listens: through Serve.customize_server,
    the hook Bokeh's serve command offers for its Server."""
    import logging

    from bokeh.command.subcommands.serve import Serve

    original = Serve.customize_server

    def customize_server(self: Serve, server: Any) -> Any:
        if not server.port:
            # nginx (the workers' user) and the sign-in process (a member of the directory's group, which closes
            # signed-out users' websockets) connect (privileges.sockets_dir).
            os.chmod(server.unix_socket, 0o660)
        where = f"{server.address or '*'}:{server.port}" if server.port else f"unix socket {server.unix_socket}"
        logging.getLogger("bokeh.server.server").info("%s %s", LISTENING, where)  # Bokeh's level: INFO
        return original(self, server)

    Serve.customize_server = customize_server  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    flags = set()
    while argv and argv[0] in FLAGS:
        flags.add(argv.pop(0))
    if len(argv) != 2 or not argv[1].isdigit() or {"--plain", "--warn-mismatch"} <= flags:
        sys.exit(USAGE)
    options, args = split_options(read_args(*argv))
    sys.path[:0] = options.python_path
    chosen: tuple[Fix, ...] = ()
    # --plain (setting worker_fixes: false) runs Bokeh as it is, to tell its behaviour from ours; the metrics only
    # count (setting ops.metrics: false leaves them out, to measure what they cost).
    if "--plain" not in flags:
        from bokeh_stack.patches import hardening

        chosen += fixes.FIXES + hardening.FIXES
        if "--client-session-ids" in flags:  # settings session.client_session_ids: the operator allows them
            chosen = tuple(fix for fix in chosen if fix.name != "no_client_session_ids")
    if options.resume_store and "--plain" not in flags:  # settings session.store
        from bokeh_stack.config import secret
        from bokeh_stack.resume import sessions

        try:
            redis_password = secret.redis_password(os.environ.get(secret.ENV_VAR, ""), options.redis_password_file)
        except secret.SecretError as e:  # a tab then resumes on nothing (Redis refuses), but every page is served
            print(f"bokeh-stack worker: {e}", file=sys.stderr)
            redis_password = ""
        sessions.configure(options.resume_store, options.resume_max_bytes, options.resume_except, redis_password)
        chosen += sessions.FIXES
        if warm := getattr(sessions.config.store, "warm", None):  # on the loop the server will run (Redis)
            from tornado.ioloop import IOLoop

            IOLoop.current().add_callback(warm)
    if "--compression" in flags:  # settings session.compression
        from bokeh_stack.patches import one_write

        chosen += one_write.COMPRESSION
    if "--no-metrics" not in flags:
        from bokeh_stack.patches import worker_metrics

        chosen += worker_metrics.FIXES
    try:
        fixes.apply(chosen, on_mismatch="warn" if "--warn-mismatch" in flags else "stop")
    except FixTargetChanged as e:
        sys.exit(f"bokeh-stack worker: {e}")
    if options.function_apps:
        from bokeh_stack.patches.function_apps import EXPECTS

        changed = unmet((*EXPECTS, *SERVE_EXPECTS))
        if changed:
            sys.exit(f"bokeh-stack worker: function apps do not fit this Bokeh: {'; '.join(changed)}")
        serve_function_apps(options.function_apps)
    log_where_it_listens()
    from bokeh.command.bootstrap import main as bokeh_main

    bokeh_main(["bokeh", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
