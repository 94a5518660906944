"""Every setting of a bokeh-stack deployment, defined once: its type, its default, its documentation and the check
of its value. defaults.yaml, what users read, is written from this model (`python -m bokeh_stack.config.model`,
held by tests/test_settings.py); config/settings.py layers a settings file, BOKEH_STACK_* variables and flags over
these defaults and validates the result here.

A check here looks at one value. What needs several settings, the apps or the host (files, ports, app code) is
checked in config/checks.py, config/discovery.py and config/pools.py."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import yaml
from pydantic import Field, StrictBool
from pydantic_settings import BaseSettings, SettingsConfigDict

from bokeh_stack.config.groups import Auth, Group, Nginx, Ops, PoolSpec, Recycle, Redis, Session, Tls, Watchdog
from bokeh_stack.config.values import (
    Address,
    FixMismatch,
    FrameAncestors,
    HostNames,
    Names,
    Networks,
    Origins,
    Port,
    Positive,
    Prefix,
    Role,
    SafePath,
    ServerNames,
    UserName,
    Workers,
    ZeroOrPositive,
)


class Settings(BaseSettings):
    """The settings of a bokeh-stack deployment, with their defaults. Every provisioner (the local runner, the
    container entrypoint, the Salt formula) starts from these, then overrides them from a settings file,
    BOKEH_STACK_* environment variables and command-line flags, in that order."""

    # The layers are config/settings.py's (a file, YAML-typed variables, flags, the record of `up`): the model
    # validates what they make, and names the environment's prefix and nesting.
    model_config = SettingsConfigDict(env_prefix="BOKEH_STACK_", env_nested_delimiter="__", extra="forbid", frozen=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **sources: Any):
        return (init_settings,)

    apps_dir: SafePath = Field(
        "apps",
        description=(
            "Directory of Bokeh apps, each served at /NAME: every subdirectory NAME with a main.py (or main.ipynb), "
            "and every NAME.py script and NAME.ipynb notebook (notebooks need `pip install 'bokeh-stack[notebooks]'`). "
            "Names starting with _ or . are not apps (helper modules, checkpoints)."
        ),
    )
    function_apps: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Apps that are a function of a program's own, `function(doc)` building each session's document as for "
            'Bokeh\'s FunctionHandler, by route: e.g. {dask_status: "mypkg.dashboards:make_document"} serves '
            "/dask_status. They join the pools like the apps in apps_dir."
        ),
    )
    python_path: Names = Field(
        (),
        description=(
            "Directories (absolute paths) put first on the workers' import path, for code that is not installed in "
            "their Python environment (function_apps' packages, modules the apps import)."
        ),
    )
    runtime_dir: SafePath = Field(
        "",
        description=(
            "Where rendered configs, logs, pid files and the generated secret live. Empty: the user's state "
            "directory, $XDG_STATE_HOME/bokeh-stack (~/.local/state/bokeh-stack), so that `bokeh-stack up` writes "
            "nothing where it is run."
        ),
    )
    role: Role = Field(
        "all",
        description=(
            "What this host runs: all (nginx and the workers), balancer (nginx only) or worker (the workers only)."
        ),
    )
    user: UserName = Field(
        "",
        description=(
            "The user the workers (app code) and nginx's worker processes run as; only root can choose. Empty: the "
            "user who starts the stack, or, started as root, the system user bokeh-stack (created on first start, "
            "no login, no home)."
        ),
    )
    allow_root: StrictBool = Field(False, description="Running app code as root needs both `user: root` and this.")
    listen_address: Address = Field(
        "127.0.0.1",
        description=(
            "The public entry: nginx listens here. 127.0.0.1: this machine only; 0.0.0.0 (or an address of this "
            "machine's) to serve other machines too (the compose file and the Salt formula do)."
        ),
    )
    port: Port = Field(8080, description="The port nginx listens on.")
    server_names: ServerNames = Field(
        ("localhost", "127.0.0.1"),
        description=("Host names nginx answers for; any other Host header gets 421 from the default server."),
    )
    public_origins: Origins = Field(
        (),
        description=(
            "Origins (host[:port]) browsers load the apps from. Empty: every server name at `port`. Set it when "
            "clients reach nginx through another port or name (a published container port, a TLS proxy)."
        ),
    )
    prefix: Prefix = Field("", description="Serve everything under a path, e.g. /dashboards. Empty: at the root.")
    trusted_proxies: Networks = Field(
        (),
        description=(
            "Proxies in front of nginx (a cloud load balancer, a TLS-terminating proxy) as CIDRs, e.g. [10.0.0.0/8]. "
            "From them alone nginx takes the client's address from X-Forwarded-For (the page and websocket limits, "
            "nginx's logs and the apps' request.remote_ip see the real client) and the scheme from X-Forwarded-Proto "
            "(https: pages use wss:// and cookies are Secure). Anyone else's X-Forwarded-* headers are ignored."
        ),
    )
    auth: Auth = Field(default_factory=Auth, description="Sign-in.")
    access: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Who may open which app, once signed in, e.g. {cosine: {users: [alice], groups: [lab]}}. An app not listed "
            "is open to every signed-in user; the index lists only the apps a user may open."
        ),
    )
    worker_address: Address = Field(
        "127.0.0.1",
        description=("Workers: `bokeh serve` processes bound to worker_address, on consecutive ports from base_port."),
    )
    base_port: Port = Field(5100, description="The default pool's first port (workers on TCP).")
    worker_hosts: HostNames = Field(
        (),
        description=(
            "Where nginx reaches the workers: host names or addresses, each running every pool's workers "
            "(containers: the workers' service name; several hosts: each worker host). Empty: worker_address."
        ),
    )
    unix_sockets: StrictBool = Field(
        True,
        description=(
            "On a single host (role all, no worker_hosts) the workers listen on unix sockets in "
            "<runtime_dir>/sockets/, which only their user (nginx's too) can enter: other local users reach them "
            "through nginx alone. false: TCP ports on worker_address from base_port, open to every local user. "
            "Containers and worker hosts always use TCP."
        ),
    )
    workers: Workers = Field(
        2, description="Workers of the default pool, which serves every app not assigned to another pool."
    )
    min_workers: ZeroOrPositive | None = Field(
        None,
        description=(
            "A pool sizes itself when min_workers or max_workers differ from workers (one host, role all): it adds a "
            "worker while its connected sessions per worker pass sessions_per_worker, up to max_workers, and removes "
            "one, drained, after idle_timeout_s below that, down to min_workers. 0: an app nobody uses holds no "
            "worker; its next visitor's page waits while one starts. null: workers. These four are the default "
            "pool's; each pool may set its own."
        ),
    )
    max_workers: Positive | None = Field(None, description="The most workers the default pool runs. null: workers.")
    sessions_per_worker: Positive = Field(
        50, description="Connected sessions (open tabs) per worker past which a pool that sizes itself adds one."
    )
    idle_timeout_s: Positive = Field(
        300, description="How long a pool stays below sessions_per_worker with a worker to spare before it drops it."
    )
    recycle: Recycle = Field(
        default_factory=Recycle,
        description=(
            "Workers past any of these limits are replaced, one worker of a pool at a time: a new worker starts, "
            "then the old one stops taking page views and closes its tabs' websockets; the tabs reconnect to the "
            "others (as their users left them: session.store). Every pool's, unless it sets its own."
        ),
    )
    pools: dict[str, PoolSpec] = Field(
        default_factory=dict,
        description=(
            "Extra pools, each its own supervisord program and nginx upstream, e.g. pools: {heavy: {apps: [streaming], "
            "workers: 2}}. A pool may set base_port; otherwise pools take consecutive port ranges after the default "
            "pool."
        ),
    )
    session: Session = Field(default_factory=Session, description="Bokeh sessions and their websockets.")
    nginx: Nginx = Field(default_factory=Nginx, description="nginx's limits.")
    frame_ancestors: FrameAncestors = Field(
        "'self'",
        description=(
            "Which pages may show the apps in a frame: Content-Security-Policy frame-ancestors, e.g. \"'self'\", "
            "\"'none'\" or \"'self' https://intranet.example.com\"."
        ),
    )
    tls: Tls = Field(default_factory=Tls, description="HTTPS.")
    watchdog: Watchdog = Field(default_factory=Watchdog, description="Hung workers.")
    ops: Ops = Field(default_factory=Ops, description="The operators' listener.")
    redis: Redis = Field(default_factory=Redis, description="A Redis for the workers' session records.")
    worker_fixes: StrictBool = Field(
        True,
        description=(
            "bokeh-stack's fixes inside each worker (bokeh_stack/patches/fixes.py: orphan-session clean-up, clean "
            "websocket close on restart, TCP_NODELAY, ...). false runs plain `bokeh serve`: only to tell Bokeh's "
            "behaviour from ours."
        ),
    )
    worker_fix_mismatch: FixMismatch = Field(
        "stop",
        description=(
            "Each fix checks at worker start that the Bokeh code it replaces is still what it was written for. "
            "stop: a worker whose Bokeh does not fit exits, naming the fix and the Bokeh version; warn: it runs "
            "without that fix."
        ),
    )
    stats_log_ms: ZeroOrPositive = Field(
        60000, description="Worker statistics in the worker logs, this often (0: none)."
    )
    mem_log_ms: ZeroOrPositive = Field(60000, description="Worker memory in the worker logs, this often (0: none).")
    log_dir: SafePath = Field("", description="Empty: <runtime_dir>/logs. Ignored when log_to_stdout is true.")
    log_to_stdout: StrictBool = Field(False, description="Logs on standard output (containers) instead of files.")
    secret_file: SafePath = Field(
        "",
        description=("Empty: <runtime_dir>/secret, generated on first run. BOKEH_SECRET_KEY in the environment wins."),
    )


ENV_PREFIX: str = Settings.model_config["env_prefix"]
ENV_NESTING: str = Settings.model_config["env_nested_delimiter"]


def defaults() -> dict[str, Any]:
    """Every setting's default, nested as in a settings file (lists as lists)."""
    return Settings().model_dump(mode="json")


def defaults_yaml() -> str:
    """defaults.yaml: every setting with its default and its documentation, as users read it."""
    lines = [*_comment(Settings.__doc__ or "", ""), ""]
    values = defaults()
    for name, field in Settings.model_fields.items():
        lines += _entry(name, field, values[name], "")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _entry(name: str, field: Any, value: Any, indent: str) -> list[str]:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, Group):
        lines = [*_comment(field.description or "", indent), f"{indent}{name}:"]
        for sub, sub_field in annotation.model_fields.items():
            lines += _entry(sub, sub_field, value[sub], indent + "  ")
        return lines
    text = yaml.safe_dump({name: value}, default_flow_style=True, width=10_000).strip()
    return [*_comment(field.description or "", indent), f"{indent}{text.removeprefix('{').removesuffix('}')}"]


def _comment(text: str, indent: str) -> list[str]:
    text = " ".join(text.split())
    return textwrap.wrap(text, 116 - len(indent), initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")


if __name__ == "__main__":
    sys.stdout.write(defaults_yaml())
