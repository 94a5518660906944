"""Talk to the stack's supervisord and probe its workers."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from .fleet import Target, local_target
from .plan import RunPlan
from .secret import ENV_VAR, ensure_secret
from .settings import Settings, local_address


@dataclass(frozen=True)
class Worker:
    name: str
    pool: str
    port: int
    state: str
    pid: int
    uptime_s: int
    probe_ok: bool
    probe_ms: float | None


def rpc(socket: Path) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy("http://localhost", transport=SupervisorTransport(None, None, f"unix://{socket}"))


def supervisord_running(socket: Path) -> int | None:
    """The pid of the supervisord answering on this socket, or None."""
    if not socket.exists():
        return None
    try:
        return rpc(socket).supervisor.getPID()
    except (OSError, xmlrpc.client.Fault):
        return None


# supervisord's, so its logs and what its processes write are for root and the stack's group only (logs hold what
# clients sent). supervisord sets its `umask` setting only when it goes to the background: its starters set it too.
UMASK = 0o027


def supervisord_command(
    plan: RunPlan, foreground: bool = True, silent: bool = False
) -> tuple[list[str], dict[str, str]]:
    """How to start the stack's supervisord: its command line, and its environment with the checked secret (the
    workers' BOKEH_SECRET_KEY; generated on first start). The one way every starter starts it: `bokeh-stack up`,
    `bokeh-stack supervisord` (containers, Salt, the systemd unit)."""
    env = dict(os.environ)
    if plan.with_workers:
        env[ENV_VAR] = ensure_secret(plan.secret_file)
    argv = [plan.python, "-m", "supervisor.supervisord", "-c", str(plan.supervisord_conf)]
    if foreground:  # silent: its log only in its log file, not also on stdout
        argv += ["--nodaemon"] + (["--silent"] if silent else [])
    return argv, env


def start_supervisord(plan: RunPlan, foreground: bool = True, silent: bool = False) -> subprocess.Popen:
    """supervisord as a child in its own process group (in the background: the child exits once it is there)."""
    argv, env = supervisord_command(plan, foreground, silent)
    return subprocess.Popen(argv, env=env, start_new_session=True, umask=UMASK)


def shutdown(plan: RunPlan, timeout_s: float = 60) -> int | None:
    """Stop the stack running from this plan's runtime dir (supervisord stops every worker and nginx, then exits);
    returns the pid that ran it, or None if nothing ran. Raises TimeoutError if it is still there after timeout_s."""
    pid = supervisord_running(plan.socket)
    if pid is None:
        return None
    try:
        rpc(plan.socket).supervisor.shutdown()
    except (OSError, xmlrpc.client.Fault):
        pass  # already on its way out
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"supervisord (pid {pid}) still runs {timeout_s:.0f} s after shutdown")
        time.sleep(0.1)
    return pid


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie has stopped; only its parent can reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _unchecked_tls() -> ssl.SSLContext:
    """TLS without checking the certificate (a local nginx asked by address, not by its certificate's name)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (a worker's, settings.worker_sockets)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def get_status(
    address: str,
    port: int,
    path: str,
    timeout: float,
    headers: dict | None = None,
    tls: bool = False,
    unix_socket: str = "",
) -> int | None:
    """The HTTP status of a GET, or None if nothing answers. Over TLS the certificate is not checked: this asks a
    local nginx whether it serves, by address, not by the name its certificate is for."""
    if unix_socket:
        conn: http.client.HTTPConnection = UnixHTTPConnection(unix_socket, timeout)
    elif tls:
        conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=_unchecked_tls())
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        # Not an HTTP answer is no answer: e.g. a TCP connection to a port nobody listens on yet, in the
        # ephemeral range, can connect to itself and read back its own request.
        return None
    finally:
        conn.close()


def probe(address: str, port: int, prefix: str = "", timeout: float = 2.0, unix_socket: str = "") -> float | None:
    """Seconds a worker takes to answer its cheap probe (its root page: no session), or None if it does not."""
    start = time.perf_counter()
    ok = get_status(address, port, f"{prefix}/", timeout, unix_socket=unix_socket) == 200
    return time.perf_counter() - start if ok else None


def probe_target(target: Target, prefix: str = "", timeout: float = 2.0) -> float | None:
    return probe(target.host, target.port, prefix, timeout, target.socket)


def healthz(s: Settings, timeout: float = 5.0) -> int | None:
    """The status nginx's /healthz answers (200: a worker answers), or None if nginx does not answer."""
    address = local_address(s.listen_address)
    host = {"Host": f"{s.server_names[0]}:{s.public_port}"}
    return get_status(address, s.public_port, f"{s.prefix}/healthz", timeout, host, tls=s.tls_on)


def workers(plan: RunPlan) -> list[Worker]:
    """Every worker process of the stack, as supervisord sees it, with a probe of each."""
    s = plan.settings
    pools = {pool.program: pool for pool in s.pools}
    found = []
    for info in rpc(plan.socket).supervisor.getAllProcessInfo():
        pool = pools.get(info["group"])
        if pool is None:
            continue
        port = int(info["name"].rsplit("_", 1)[1])
        running = info["statename"] in ("STARTING", "RUNNING")  # STARTING: up for less than startsecs
        seconds = probe_target(local_target(plan, pool, port), s.prefix) if running else None
        found.append(
            Worker(
                name=info["name"],
                pool=pool.name,
                port=port,
                # supervisord says STARTING until startsecs (watchdog.start_grace_s) have passed; a worker that
                # answers serves, so it is RUNNING to anyone who asks.
                state="RUNNING" if running and seconds is not None else info["statename"],
                pid=info["pid"],
                uptime_s=(info["now"] - info["start"]) if running else 0,
                probe_ok=seconds is not None,
                probe_ms=None if seconds is None else seconds * 1000,
            )
        )
    return found


def services(plan: RunPlan) -> dict[str, tuple[str, int]]:
    """The stack's other processes (nginx, the ops process, the listeners): name -> (state, pid)."""
    pools = {pool.program for pool in plan.settings.pools}
    return {
        info["name"]: (info["statename"], info["pid"])
        for info in rpc(plan.socket).supervisor.getAllProcessInfo()
        if info["group"] not in pools and not info["group"].endswith("_watchdog")
    }


def log_tail(plan: RunPlan, process_name: str, lines: int = 20) -> str:
    path = plan.process_log(process_name)
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
