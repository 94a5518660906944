"""The stack's topology, decided here and nowhere else: which programs it runs (their `python -m` modules and
supervisord names), where each listens and how another process reaches it (an `Endpoint`: a unix socket or
host:port), and which paths each serves (`ROUTES`, in the spirit of Bokeh's server/urls.py).

Every other module, the templates (through render, as plain values) and the Salt formula (through `bokeh-stack
plan --json`) take these facts from here. Standard library only: the daemons, the CLI and render all import it."""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import socket
import ssl
import time
import xmlrpc.client
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bokeh_stack.config.plan import RunPlan
    from bokeh_stack.config.pools import Pool
    from bokeh_stack.config.settings import Settings

# The programs: each one's module (`python -m`), and the supervisord names of those beside nginx. The workers'
# module stays bokeh_stack.worker (bokeh_stack/worker.py says why).
DAEMONS = "bokeh_stack.daemons"
MODULES = {
    "worker": "bokeh_stack.worker",
    **{
        name: f"{DAEMONS}.{name}"
        for name in ("watchdog", "restarts", "ops", "signin", "upstreams", "container", "app_check", "redis", "pools")
    },
}
NGINX = "nginx"
OPS = "bokeh_stack_ops"
SIGNIN = "bokeh_stack_signin"
UPSTREAMS = "bokeh_stack_upstreams"
RESTARTS = "bokeh_stack_restarts"
REDIS = "bokeh_stack_redis"
WATCHDOG = "bokeh_stack_watchdog"
POOLS = "bokeh_stack_pools"
# nginx's upstream that probes any worker (/healthz); each pool's is `<program>_probe`.
PROBE = "bokeh_stack_probe"
# nginx checks that an /ops dashboard's websocket comes from the page's own origin, then says so with this Origin.
OPS_TRUSTED_ORIGIN = "bokeh-stack-ops"
# supervisord's spelling of one of a program's numbered processes, in its config.
SUPERVISOR_PROCESS = "%(program_name)s_%(process_num)d"
SUPERVISOR_PORT = "%(process_num)d"
# Bokeh's switch for its checks of every document built: a worker leaves them out unless it is set ("true": `up
# --dev`); `bokeh-stack check` runs them (daemons/app_check.py).
VALIDATE_DOCUMENTS = "BOKEH_VALIDATE_DOC"


def worker_process(program: str, port: int | str) -> str:
    """A worker's process name: its pool's program and its port (supervisord's numprocs_start is the base port)."""
    return f"{program}_{port}"


def worker_port(process: str) -> int | None:
    """The port in a worker's process name (None: not a worker's name)."""
    _, _, port = process.rpartition("_")
    return int(port) if port.isdigit() else None


def probe_upstream(program: str) -> str:
    return f"{program}_probe"


@dataclass(frozen=True)
class Route:
    path: str
    served_by: str
    prefixed: bool = True  # under settings.prefix


# Every path a part of the stack serves; nginx's public routes to the apps (/<app>, /<app>/ws, /<app>/static) are
# the apps' own. `internal`: nginx's own subrequests, never a client's.
ROUTES = {
    "index": Route("/", "nginx, or sign-in when it is on (the apps this user may open)"),
    "healthz": Route("/healthz", "nginx: 200 while a worker answers its probe; /healthz/<pool> for one pool"),
    "static": Route("/static/", "nginx: BokehJS, from the compressed tree"),
    "favicon": Route("/favicon.ico", "nginx"),
    "login": Route("/login", "sign-in"),
    "login_callback": Route("/login/callback", "sign-in (OIDC)"),
    "logout": Route("/logout", "sign-in"),
    "signin_check": Route("/_bokeh_stack/signin/check/", "nginx internal: asks sign-in's check", prefixed=False),
    "probe": Route("/_bokeh_stack/probe/", "nginx internal: a worker's root page, no session", prefixed=False),
    "check": Route("/_check", "sign-in, for nginx: may this request open this app", prefixed=False),
    "required": Route("/_required", "sign-in, for nginx: the page instead of a refused one", prefixed=False),
    "forbidden": Route("/_forbidden", "sign-in, for nginx: the page for an app not this user's", prefixed=False),
    "worker_metrics": Route("/_bokeh_stack/metrics", "a worker, to the ops process only (nginx never routes it)"),
    "revoke": Route("/_bokeh_stack/revoke", "a worker, to sign-in only: close these users' websockets"),
    "ops": Route("/ops", "the ops process, on the ops listener", prefixed=False),
    "ops_ws": Route("/ops/ws", "the ops process, on the ops listener", prefixed=False),
    "metrics": Route("/metrics", "the ops process, on the ops listener: the whole fleet", prefixed=False),
    "nginx_status": Route("/_bokeh_stack/nginx_status", "nginx's ops listener, to the ops process", prefixed=False),
}


def route(name: str, prefix: str = "") -> str:
    r = ROUTES[name]
    return f"{prefix}{r.path}" if r.prefixed else r.path


def routes(prefix: str) -> dict[str, str]:
    """Every route's path as served under `prefix` (what the templates get)."""
    return {name: route(name, prefix) for name in ROUTES}


# Addresses.


def url_host(address: str) -> str:
    """An address as a URL or an nginx `listen` names it (an IPv6 one in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def local_address(address: str) -> str:
    """Where this host reaches a service bound to `address` (a wildcard bind: on loopback)."""
    return "127.0.0.1" if address in ("0.0.0.0", "::") else address


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def host_port(host: str, port: int | str) -> str:
    return f"{url_host(host)}:{port}"


@dataclass(frozen=True)
class Endpoint:
    """Where a process listens: a unix socket, or host:port. Written as nginx's `server` and the watchdog's command
    line name it: `unix:/path` or `host:port` (an IPv6 host in brackets)."""

    host: str = ""
    port: int = 0
    socket: str = ""

    def __str__(self) -> str:
        return f"unix:{self.socket}" if self.socket else host_port(self.host, self.port)

    @property
    def url(self) -> str:
        """Its URL with no path: http://host:port, or nginx's http://unix:/path: for a unix socket."""
        return f"http://{self}:" if self.socket else f"http://{self}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        if text.startswith("unix:"):
            return cls(socket=text.removeprefix("unix:"))
        host, _, port = text.rpartition(":")
        return cls(host.strip("[]"), int(port))

    def get_status(self, path: str, timeout: float, headers: dict | None = None, tls: bool = False) -> int | None:
        """The HTTP status of a GET, or None if nothing answers. Over TLS the certificate is not checked: this asks
        a local nginx whether it serves, by address, not by the name its certificate is for."""
        if self.socket:
            conn: http.client.HTTPConnection = _UnixHTTPConnection(self.socket, timeout)
        elif tls:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=_unchecked_tls())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            return conn.getresponse().status
        except (OSError, http.client.HTTPException):
            # Not an HTTP answer is no answer: e.g. a TCP connection to a port nobody listens on yet, in the
            # ephemeral range, can connect to itself and read back its own request.
            return None
        finally:
            conn.close()

    def probe(self, prefix: str = "", timeout: float = 2.0) -> float | None:
        """Seconds a worker takes to answer its cheap probe (its root page: no session), or None if it does not."""
        start = time.perf_counter()
        ok = self.get_status(f"{prefix}/", timeout) == 200
        return time.perf_counter() - start if ok else None

    async def request(self, path: str, timeout: float, body: bytes | None = None) -> str | None:
        """The body of an HTTP/1.0 GET (or POST of `body`) that answers 200, or None: a few lines, so that the
        daemons need no HTTP client."""
        host = "localhost" if self.socket else str(self)
        head = f"{'GET' if body is None else 'POST'} {path} HTTP/1.0\r\nHost: {host}\r\n"
        head += "\r\n" if body is None else f"Content-Length: {len(body)}\r\n\r\n"
        try:
            async with asyncio.timeout(timeout):
                if self.socket:
                    reader, writer = await asyncio.open_unix_connection(self.socket)
                else:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                try:
                    writer.write(head.encode() + (body or b""))
                    await writer.drain()
                    response = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError):
            return None
        status_head, _, content = response.partition(b"\r\n\r\n")
        status = status_head.split(b"\r\n", 1)[0].split()
        return content.decode("utf-8", "replace") if len(status) > 1 and status[1] == b"200" else None


def _unchecked_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def supervisor_rpc(socket_path: Path | str) -> xmlrpc.client.ServerProxy:
    """supervisord's XML-RPC interface, on its unix socket."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{socket_path}")
    return xmlrpc.client.ServerProxy("http://localhost", transport=transport)


# The workers.


def worker_endpoint(plan: RunPlan, port: int | str) -> Endpoint:
    """Where this host reaches its worker `port` (or a placeholder for it: "{port}", SUPERVISOR_PORT)."""
    if plan.settings.worker_sockets:
        return Endpoint(socket=str(plan.worker_socket(port)))
    return Endpoint(local_address(plan.settings.worker_address), port)  # type: ignore[arg-type]


def upstream_servers(plan: RunPlan, pool: Pool, ports: Iterable[int] | None = None) -> list[str]:
    """nginx's servers of a pool's upstream: each worker (those at `ports`; None: those it starts with) on each
    worker host."""
    s = plan.settings
    ports = pool.start_ports if ports is None else ports
    if s.worker_sockets:
        return [str(worker_endpoint(plan, port)) for port in ports]
    return [host_port(host, port) for host in s.worker_hosts for port in ports]


def upstream_members(servers: Iterable[str]) -> str:
    """The `server` lines of a pool's upstream, nginx's probes' and the pools program's (which rewrites them as
    the pool changes). No failure accounting (max_fails=0): a worker that is down refuses at once and nginx tries
    the next one (proxy_next_upstream), and a restarted worker gets its sessions back the moment it listens. With
    max_fails=1, a burst of reconnecting tabs after a worker restart got "no live upstreams" (502) from the hash
    upstream."""
    return "".join(f"    server {server} max_fails=0;\n" for server in servers)


def upstream_names(s: Settings) -> tuple[str, ...]:
    """The worker hosts nginx's upstreams name (not addresses; none when the workers are on unix sockets): the
    names bokeh_stack.daemons.upstreams resolves again and again."""
    return () if s.worker_sockets else tuple(h for h in s.worker_hosts if not is_ip(h))


@dataclass(frozen=True)
class Target:
    """One worker to reach (scrape, revoke, probe): by TCP (host, port) or by its unix socket; its `worker` label
    names it as nginx's upstream does (host:port), or by its process name on a unix socket, and its pool."""

    host: str
    port: int
    pool: str
    socket: str = ""
    name: str = ""

    @property
    def worker(self) -> str:
        return self.name if self.socket else host_port(self.host, self.port)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.port, self.socket)


def local_target(plan: RunPlan, pool: Pool, port: int) -> Target:
    """Where this host reaches its worker `port` of `pool` (`bokeh-stack status`, probes, restarts)."""
    endpoint = worker_endpoint(plan, port)
    address = local_address(plan.settings.worker_address)
    return Target(address, port, pool.name, endpoint.socket, worker_process(pool.program, port))


def local_targets(plan: RunPlan, pool: Pool) -> list[tuple[int, Target]]:
    """The workers of one pool on this host, by port."""
    return [(port, local_target(plan, pool, port)) for port in pool.ports]


def targets(plan: RunPlan) -> list[Target]:
    """Every worker of every pool on every worker host: what the balancer scrapes and asks to revoke."""
    s = plan.settings
    if s.worker_sockets:
        return [t for pool in s.pools for _, t in local_targets(plan, pool)]
    hosts = [local_address(host) for host in s.worker_hosts]
    return [Target(host, port, pool.name) for host in hosts for pool in s.pools for port in pool.ports]


def resolve(hosts: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Every address behind each name, sorted; () for a name that does not resolve now."""
    found: dict[str, tuple[str, ...]] = {}
    for name in hosts:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        found[name] = tuple(sorted({info[4][0] for info in infos}))
    return found


async def resolve_targets(targets: Iterable[Target]) -> list[Target]:
    """A worker host name that stands for several addresses (compose's `--scale workers=N`) is each of them."""
    targets = list(targets)
    # Each name once, not once per port; one that does not resolve stays, by name (it will not answer).
    found = await asyncio.to_thread(resolve, {t.host for t in targets if not t.socket})
    resolved: list[Target] = []
    for target in targets:
        addresses = () if target.socket else found[target.host]
        if len(addresses) <= 1:
            resolved.append(target)
        else:
            resolved += [Target(address, target.port, target.pool) for address in addresses]
    return resolved


# nginx and the ops listener.


def public_endpoint(s: Settings) -> Endpoint:
    """Where this host reaches its own nginx's public listener (TLS when it is on)."""
    return Endpoint(local_address(s.listen_address), s.public_port)


def ops_endpoint(s: Settings) -> Endpoint:
    """Where this host reaches its ops listener."""
    return Endpoint(local_address(s.ops.address), s.ops.port)


def healthz(s: Settings, timeout: float = 5.0) -> int | None:
    """The status nginx's /healthz answers (200: a worker answers), or None if nginx does not answer."""
    host = {"Host": f"{s.server_names[0]}:{s.public_port}"}
    return public_endpoint(s).get_status(route("healthz", s.prefix), timeout, host, tls=s.tls_on)
