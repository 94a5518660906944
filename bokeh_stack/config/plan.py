"""The run plan: where every file of a running stack lives and which programs it runs, derived from the settings
in this one place. The templates, the CLI, the container entrypoint and the Salt formula (through the CLI) take
their paths from here; `bokeh-stack plan` prints them."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bokeh_stack.config.pools import Pool
from bokeh_stack.config.settings import Settings
from bokeh_stack.config.values import runs_nginx, runs_workers


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def this_python() -> str:
    """This environment's interpreter by one name, however bokeh-stack was started (`bokeh-stack` runs
    bin/python3, `python -m bokeh_stack` bin/python): the rendered worker commands must not differ with it."""
    python3 = Path(sys.prefix) / "bin" / "python3"
    return str(python3) if python3.exists() else sys.executable


# Started as root with no `user` setting, the workers and nginx's workers run as this system user.
SERVICE_USER = "bokeh-stack"
# Started as root, the sign-in process runs as this system user: it alone reads the sign-in key and the users file.
SIGNIN_USER = "bokeh-stack-signin"
# Started as root, the group `<workers' user>-sockets` holds the users who talk over the stack's unix sockets (the
# workers' user, as whom nginx's workers run too, and the sign-in user), and owns the directories that hold them:
# one group per workers' user, so that stacks run by different users cannot reach each other's sockets.
SOCKETS_GROUP_SUFFIX = "-sockets"
# The longest path a unix socket may have (Linux: 108 bytes with the terminating NUL).
UNIX_PATH_MAX = 107


def static_tree(run_dir: Path, bokeh_version: str) -> Path:
    """The static files nginx serves for this Bokeh (bokeh_stack/provisioning/static_files.py builds it)."""
    return run_dir / "static" / f"bokeh-{bokeh_version}"


@dataclass(frozen=True)
class RunPlan:
    # What a host may run (`bokeh-stack plan --runs NAME`: the Salt formula asks rather than derive it).
    PROGRAMS = ("nginx", "workers", "signin", "redis")

    settings: Settings
    python: str = field(default_factory=this_python)
    nginx_bin: str = field(default_factory=lambda: find_nginx() or "/usr/sbin/nginx")
    euid: int = field(default_factory=os.geteuid)

    # What runs here (setting `role`).
    @property
    def with_nginx(self) -> bool:
        return runs_nginx(self.settings.role)

    @property
    def with_workers(self) -> bool:
        return runs_workers(self.settings.role)

    @property
    def with_signin(self) -> bool:
        """The sign-in process runs beside nginx (settings auth.mode)."""
        return self.with_nginx and self.settings.auth_on

    @property
    def with_redis(self) -> bool:
        """redis-server runs here for the workers' session records (settings redis.run)."""
        return self.settings.redis.run

    @property
    def with_pools(self) -> bool:
        """The pools program runs here: a pool sizes itself or recycles its workers (one host, role all)."""
        return self.with_nginx and self.with_workers and any(pool.managed for pool in self.settings.pools)

    # Who runs it. Only root can name users. Started by another user, everything runs as that user; started as
    # root, the workers and nginx's worker processes run as `user` (SERVICE_USER unless set), supervisord and
    # nginx's master as root.
    @property
    def worker_user(self) -> str | None:
        return self.settings.user or (SERVICE_USER if self.euid == 0 else None)

    @property
    def nginx_user(self) -> str | None:
        return self.worker_user

    @property
    def signin_user(self) -> str | None:
        """Who runs the sign-in process: started as root, a user of its own (never the workers', who run app code);
        started by another user, that user."""
        return SIGNIN_USER if self.euid == 0 and self.with_signin else None

    @property
    def sockets_group(self) -> str | None:
        if self.euid != 0 or not self.worker_user or self.worker_user == "root":
            return None
        return f"{self.worker_user}{SOCKETS_GROUP_SUFFIX}"

    @property
    def app_user(self) -> str | None:
        """Whom this process must become to run app code (`bokeh-stack check`, the check at start): the workers'
        user when that is not who runs this."""
        return self.worker_user if self.euid == 0 else None

    @property
    def supervisord_user(self) -> str | None:
        return "root" if self.euid == 0 else None

    # Where everything is.
    @property
    def run_dir(self) -> Path:
        return self.settings.runtime_dir

    @property
    def log_dir(self) -> Path:
        return self.settings.log_dir

    @property
    def secret_file(self) -> Path:
        return self.settings.secret_file

    @property
    def supervisord_conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    @property
    def supervisord_pid(self) -> Path:
        return self.run_dir / "supervisord.pid"

    @property
    def socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def args_dir(self) -> Path:
        return self.run_dir / "workers"

    def args_file(self, pool: Pool) -> Path:
        return self.args_dir / f"{pool.program}.args"

    @property
    def sockets_dir(self) -> Path:
        """The workers' unix sockets (settings.worker_sockets): their user's alone, nginx's workers run as it too."""
        return self.run_dir / "sockets"

    def worker_socket(self, port: int | str) -> Path:
        """Worker `port`'s unix socket, when the workers are on unix sockets (config/topology.py decides). Named by
        the port alone (unique on a host): a unix socket's path may not exceed UNIX_PATH_MAX bytes."""
        return self.sockets_dir / f"{port}.sock"

    @property
    def conf_dir(self) -> Path:
        return self.run_dir / "nginx"

    @property
    def nginx_conf(self) -> Path:
        return self.conf_dir / "nginx.conf"

    @property
    def nginx_site_conf(self) -> Path:
        """The http-level part (upstreams, servers), included by nginx.conf; a system nginx can include it too."""
        return self.conf_dir / "bokeh-stack.conf"

    @property
    def nginx_pid(self) -> Path:
        return self.run_dir / "nginx.pid"

    @property
    def nginx_temp(self) -> Path:
        return self.run_dir / "nginx-temp"

    @property
    def html_dir(self) -> Path:
        return self.run_dir / "html"

    @property
    def static_tree(self) -> Path:
        from bokeh import __version__

        return static_tree(self.run_dir, __version__)

    @property
    def ops_dir(self) -> Path:
        """The ops process's own directory: it runs as the workers' user, who may not write to run_dir."""
        return self.run_dir / "ops"

    @property
    def sessions_dir(self) -> Path:
        """What each session's user did, to resume it (settings session.store empty): the workers' user's alone."""
        return self.run_dir / "sessions"

    @property
    def redis_conf(self) -> Path:
        """redis-server's config as rendered, without its password (added at start: bokeh_stack/daemons/redis.py)."""
        return self.run_dir / "redis.conf"

    @property
    def redis_dir(self) -> Path:
        """redis-server's own directory (its config with the password): the workers' user's alone."""
        return self.run_dir / "redis"

    @property
    def resume_store(self) -> str | None:
        """Where the workers keep sessions to resume (a directory, or a redis:// URL); None: they keep none."""
        store = self.settings.session.store
        return None if store == "off" else store or str(self.sessions_dir)

    def pool_members(self, pool: Pool) -> Path:
        """The `server` lines of a pool that changes as it runs, which nginx includes in its upstream and the pools
        program rewrites (then reloads nginx)."""
        return self.conf_dir / f"{pool.program}.servers"

    @property
    def pools_file(self) -> Path:
        """The pools, their bounds and their workers' places, for the pools program (rendered from the settings)."""
        return self.run_dir / "pools.json"

    @property
    def pools_state(self) -> Path:
        """What the pools program says of each pool (its workers, its target, its last steps): status and the ops
        process read it."""
        return self.run_dir / "pools-state.json"

    @property
    def pools_dir(self) -> Path:
        """The pools program's waiting room: nginx sends a pool with no worker there (wake_socket)."""
        return self.run_dir / "pools"

    @property
    def wake_socket(self) -> Path:
        return self.pools_dir / "wake.sock"

    @property
    def pools_control(self) -> Path:
        """The pools program's control socket (`bokeh-stack scale`): its user's alone."""
        return self.run_dir / "pools.sock"

    @property
    def ops_socket(self) -> Path:
        """The ops process (bokeh_stack/daemons/ops.py) listens here; nginx's ops listener is its only way in."""
        return self.ops_dir / "ops.sock"

    @property
    def ops_file(self) -> Path:
        """What the ops process scrapes and where (rendered from the settings, read at its start)."""
        return self.run_dir / "ops.json"

    @property
    def signin_dir(self) -> Path:
        """The sign-in process's own directory, its user's alone (nginx's workers run as it too)."""
        return self.run_dir / "signin"

    @property
    def signin_socket(self) -> Path:
        """The sign-in process (bokeh_stack/daemons/signin/) listens here; nginx is its only way in."""
        return self.signin_dir / "signin.sock"

    @property
    def signin_file(self) -> Path:
        """Who may come in, and the index's apps, for the sign-in process (rendered from the settings)."""
        return self.run_dir / "signin.json"

    @property
    def users_file(self) -> Path:
        return self.settings.users_file

    @property
    def signin_key_file(self) -> Path:
        """The sign-in cookies' key, beside the users file (balancers that share one share the other); made at
        provision time, read by the sign-in process alone."""
        return self.users_file.with_name("signin.key")

    @property
    def revoked_file(self) -> Path:
        """Sign-in cookies signed out before they expire (daemons/signin/rules.py), beside the users file."""
        return self.users_file.with_name("signin-revoked.json")

    @property
    def restarts_file(self) -> Path:
        """Restarts of each worker, kept by supervisord's event listener (bokeh_stack/daemons/restarts.py)."""
        return self.run_dir / "restarts.json"

    @property
    def prometheus_config(self) -> Path:
        """A Prometheus scrape config for this stack's /metrics."""
        return self.run_dir / "prometheus.yml"

    def process_log(self, process_name: str) -> Path:
        return self.log_dir / f"{process_name}.log"

    @property
    def nginx_error_log(self) -> str:
        """nginx writes its errors to stderr; supervisord keeps them here (rotated), or on its stdout."""
        return "/dev/stdout" if self.settings.log_to_stdout else str(self.process_log("nginx-error"))

    @property
    def access_log(self) -> str:
        return "/dev/stdout" if self.settings.log_to_stdout else str(self.log_dir / "nginx-access.log")

    def runs(self) -> dict[str, bool]:
        """What this host runs, by PROGRAMS."""
        runs = (self.with_nginx, self.with_workers, self.with_signin, self.with_redis)
        return dict(zip(self.PROGRAMS, runs, strict=True))

    def users(self) -> dict[str, str | None]:
        """Who runs what (None: the user who starts the stack)."""
        return {"workers": self.worker_user, "signin": self.signin_user, "sockets_group": self.sockets_group}

    def in_dir(self, directory: Path) -> RunPlan:
        """The same plan with every runtime file under `directory` (a candidate config, `render --out`)."""
        settings = dataclasses.replace(
            self.settings, runtime_dir=directory, log_dir=directory / "logs", secret_file=directory / "secret"
        )
        return dataclasses.replace(self, settings=settings)

    def paths(self) -> dict[str, str]:
        """Every path of the plan by name (`bokeh-stack plan`)."""
        names = [
            "run_dir", "log_dir", "secret_file", "supervisord_conf", "supervisord_pid", "socket", "args_dir",
            "sockets_dir", "conf_dir", "nginx_conf", "nginx_site_conf", "nginx_pid", "html_dir", "nginx_error_log",
            "access_log", "sessions_dir", "ops_dir", "ops_socket", "ops_file", "signin_dir", "signin_socket",
            "signin_file", "users_file", "signin_key_file", "revoked_file", "restarts_file", "prometheus_config",
            "redis_conf", "redis_dir", "pools_file", "pools_state", "pools_dir", "wake_socket", "pools_control",
        ]  # fmt: skip
        return {name: str(getattr(self, name)) for name in names}
