"""Talk to the stack's supervisord and probe its workers."""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from .render import Layout
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


def start_supervisord(layout: Layout, secret: str) -> subprocess.Popen:
    """supervisord in the foreground, in its own process group, with the secret in its environment only."""
    env = {**os.environ, "BOKEH_SECRET_KEY": secret}
    return subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(layout.supervisord_conf)],
        env=env,
        start_new_session=True,
    )


def _get_status(
    address: str, port: int, path: str, timeout: float, headers: dict | None = None, tls: bool = False
) -> int | None:
    """The HTTP status of a GET, or None if nothing answers. Over TLS the certificate is not checked: this asks a
    local nginx whether it serves, by address, not by the name its certificate is for."""
    if tls:
        conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def probe(address: str, port: int, prefix: str = "", timeout: float = 2.0) -> float | None:
    """Seconds a worker takes to answer its cheap probe (its root page: no session), or None if it does not."""
    start = time.perf_counter()
    ok = _get_status(address, port, f"{prefix}/", timeout) == 200
    return time.perf_counter() - start if ok else None


def healthz(s: Settings, timeout: float = 5.0) -> int | None:
    """The status nginx's /healthz answers (200: a worker answers), or None if nginx does not answer."""
    address = local_address(s.listen_address)
    host = {"Host": f"{s.server_names[0]}:{s.public_port}"}
    return _get_status(address, s.public_port, f"{s.prefix}/healthz", timeout, host, tls=s.tls_on)


def workers(layout: Layout) -> list[Worker]:
    """Every worker process of the stack, as supervisord sees it, with a probe of each."""
    s = layout.settings
    pools = {pool.program: pool for pool in s.pools}
    found = []
    for info in rpc(layout.socket).supervisor.getAllProcessInfo():
        pool = pools.get(info["group"])
        if pool is None:
            continue
        port = int(info["name"].rsplit("_", 1)[1])
        running = info["statename"] in ("STARTING", "RUNNING")  # STARTING: up for less than startsecs
        seconds = probe(s.worker_address, port, s.prefix) if running else None
        found.append(
            Worker(
                name=info["name"],
                pool=pool.name,
                port=port,
                state=info["statename"],
                pid=info["pid"],
                uptime_s=(info["now"] - info["start"]) if running else 0,
                probe_ok=seconds is not None,
                probe_ms=None if seconds is None else seconds * 1000,
            )
        )
    return found


def log_tail(layout: Layout, process_name: str, lines: int = 20) -> str:
    path = layout.settings.log_dir / f"{process_name}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    # python -m bokeh_stack.supervision SOCKET: exit 0 if a supervisord answers there (provisioners' `unless`).
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m bokeh_stack.supervision SOCKET")
    sys.exit(0 if supervisord_running(Path(sys.argv[1])) else 1)
