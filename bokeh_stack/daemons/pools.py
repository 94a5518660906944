"""The pools program: sizes the pools that size themselves and replaces workers past their recycle limits, on the
host where nginx and the workers run under one supervisord.

    python -m bokeh_stack.daemons.pools POOLS_JSON

Every few seconds it scrapes each serving worker of its pools (their connected sessions and memory; their age from
supervisord) and takes the step daemons/sizing.py decides. A worker joins a pool once it answers its probe: then
its `server` line goes into the pool's servers file, which nginx includes in the pool's upstream, and nginx reloads
(HUP: no connection is dropped, and the websockets open stay with the nginx processes that hold them). A worker
leaves the same way: out of the servers file and nginx reloaded first, then given time for the page views in flight
to open their websockets, then stopped (TERM: it closes its websockets cleanly, and the tabs reconnect to the
others, as their users left them where the session store keeps them). A replacement is started before the worker
it replaces leaves. Other workers are never touched.

A pool with no worker (min_workers 0, after idle_timeout_s with no session) has this program's waiting room as its
only server: a request (a page, a websocket) waits there while a worker starts, then goes on to it through the
waiting room, as any request nginx sends there before it has read the new servers. nginx's probe of the pool gets
200 there without waking it.

`bokeh-stack scale POOL N|auto` talks to it on its control socket."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import traceback
import xmlrpc.client
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path

from supervisor.xmlrpc import Faults

from bokeh_stack.config.files import write_atomically
from bokeh_stack.config.handoff import ManagedPool, PoolsConfig, PoolState, write_pools_state
from bokeh_stack.config.limits import RECYCLE_REASONS
from bokeh_stack.config.topology import POOLS, Endpoint, Target, supervisor_rpc, upstream_members, worker_process
from bokeh_stack.daemons import fleet, little_http
from bokeh_stack.daemons.sizing import Seen, Sizing, Step, next_step

INTERVAL_S = 2.0
READY_TIMEOUT_S = 120.0
# A worker out of nginx's upstream keeps serving this long at most before it stops, while the pages it sent (a
# session each, not connected yet) open their websockets. One that opens later reaches another worker, which
# builds its session from the page's token: the tab works, its app runs once more.
DRAIN_GRACE_S = 3.0
RELOAD_TIMEOUT_S = 5.0
# `bokeh-stack scale` waits this long for its steps: workers started at once, those stopped one after the other.
SCALE_TIMEOUT_S = READY_TIMEOUT_S + 10 * (DRAIN_GRACE_S + 10)
EVENTS_KEPT = 20
RUNNING = ("RUNNING", "STARTING")
# A worker in these states will not come back by itself (one that EXITED is restarted by supervisord).
GONE = ("STOPPED", "FATAL")


def log(line: str) -> None:
    print(f"{POOLS}: {line}", flush=True)


class Supervisor:
    """supervisord's API, one call a connection (xmlrpc's proxies are not for several threads), in threads."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    async def call(self, method: str, *args):
        def call():
            return getattr(supervisor_rpc(self.socket).supervisor, method)(*args)

        return await asyncio.to_thread(call)

    async def processes(self, program: str) -> dict[str, dict]:
        """group:name -> supervisord's info, for one program's processes."""
        infos = await self.call("getAllProcessInfo")
        return {f"{i['group']}:{i['name']}": i for i in infos if i["group"] == program}

    async def stop(self, process: str) -> None:
        try:
            await self.call("stopProcess", process)
        except xmlrpc.client.Fault:
            pass  # not running


def nginx_children(master: int) -> set[int]:
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                found.add(int(entry.name))
    return found


class Nginx:
    """Reloads nginx through supervisord, one reload at a time, and waits until its new workers run."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.lock = asyncio.Lock()

    async def reload(self) -> None:
        async with self.lock:
            try:
                master = (await self.supervisor.call("getProcessInfo", "nginx"))["pid"]
                before = nginx_children(master) if master else set()
                await self.supervisor.call("signalProcess", "nginx", "HUP")
            except (OSError, xmlrpc.client.Fault) as e:
                log(f"could not reload nginx: {e}")
                return
            deadline = time.monotonic() + RELOAD_TIMEOUT_S
            while not nginx_children(master) - before and time.monotonic() < deadline:
                await asyncio.sleep(0.02)


class PoolRunner:
    """One pool: which of its workers serve, and the one step it takes at a time."""

    def __init__(self, cfg: ManagedPool, config: PoolsConfig, supervisor: Supervisor, nginx: Nginx) -> None:
        self.cfg, self.config, self.supervisor, self.nginx = cfg, config, supervisor, nginx
        self.slots = {port: (endpoint, server) for port, endpoint, server in cfg.slots}
        self.serving: list[int] = []
        self.sizing = Sizing(target=cfg.min_workers)
        self.busy = asyncio.Lock()
        self.awake = asyncio.Event()
        self.first_rss: dict[int, float] = {}
        self.recycles = dict.fromkeys(RECYCLE_REASONS, 0)
        self.events: deque[tuple[float, str]] = deque(maxlen=EVENTS_KEPT)
        self.changed: Callable[[], None] = lambda: None  # the program writes its state file

    def say(self, text: str) -> None:
        self.events.append((time.time(), text))
        log(f"pool {self.cfg.name}: {text}")
        self.changed()

    def state(self) -> PoolState:
        bounds = f"{self.cfg.min_workers}..{self.cfg.max_workers}"
        return PoolState(
            sorted(self.serving), self.sizing.target, bounds, self.sizing.pinned is not None, dict(self.recycles),
            list(self.events),
        )  # fmt: skip

    async def adopt(self) -> None:
        """At start: the workers running now serve (this program restarted), and the pool gets its fewest (nginx
        reads its servers file once they serve: as rendered, it names the first ones)."""
        infos = await self.supervisor.processes(self.cfg.program)
        self.serving = [p for p in self.slots if self.state_of(infos, p) in RUNNING]
        if self.serving:
            self.say(f"serving with the {len(self.serving)} workers running")
        if len(self.serving) < self.cfg.min_workers:
            async with self.busy:
                await self.add(self.cfg.min_workers - len(self.serving), "the pool's min_workers")
        else:
            await self.publish()

    async def write_members(self) -> bool:
        """The pool's servers file as `serving` says (the waiting room when empty); True if it changed."""
        servers = [self.slots[p][1] for p in sorted(self.serving)] or [self.config.wake_server]
        text, path = upstream_members(servers), Path(self.cfg.members_file)
        if path.exists() and path.read_text() == text:
            return False
        write_atomically(path, text, mode=0o644)
        return True

    async def publish(self) -> None:
        """nginx sends page views to the serving workers (its servers file, reloaded); status and /ops say so."""
        if await self.write_members():
            await self.nginx.reload()
        if self.serving:
            self.awake.set()
        else:
            self.awake.clear()
        self.changed()

    async def look(self) -> list[Seen]:
        """The serving workers as they are now; those supervisord no longer runs (stopped by hand, given up)
        leave the pool."""
        infos = await self.supervisor.processes(self.cfg.program)
        gone = [p for p in self.serving if self.state_of(infos, p) in GONE]
        if gone:
            self.serving = [p for p in self.serving if p not in gone]
            self.say(f"{', '.join(map(str, gone))} stopped, not by this program: out of the pool")
            await self.publish()
        targets = [self.target_of(p) for p in self.serving]
        found = await fleet.scrape(targets, self.config.metrics_path)
        by_port = {t.port: s for t, s in zip(targets, fleet.summarize(found), strict=True)}
        seen = []
        for port in self.serving:
            info, summary = infos.get(self.cfg.process(port), {}), by_port[port]
            rss = summary.rss_bytes / 1e6 if summary.up else None
            if rss is not None:
                self.first_rss.setdefault(port, rss)
            age = float(info["now"] - info["start"]) if info.get("start") else None
            up = summary.up
            seen.append(
                Seen(port, summary.connected if up else None, rss, age, summary.created if up else None,
                     self.first_rss.get(port))
            )  # fmt: skip
        return seen

    def state_of(self, infos: dict[str, dict], port: int) -> str:
        """supervisord's state of the worker at `port` (one it does not list: as stopped)."""
        return infos.get(self.cfg.process(port), {}).get("statename", "STOPPED")

    def target_of(self, port: int) -> Target:
        endpoint = Endpoint.parse(self.slots[port][0])
        name = worker_process(self.cfg.program, port)
        return Target(endpoint.host, endpoint.port or port, self.cfg.name, endpoint.socket, name)

    async def tick(self, now: float) -> None:
        if self.busy.locked():
            return
        async with self.busy:
            seen = await self.look()
            step = next_step(self.cfg, seen, self.sizing, now)
            if step:
                await self.take(step, len(seen))

    async def take(self, step: Step, serving: int) -> None:
        if step.kind == "add":
            await self.add(max(1, self.sizing.target - serving), step.why)
        elif step.kind == "remove" and step.port is not None:
            await self.remove(step.port, step.why)
        elif step.kind == "recycle" and step.port is not None:
            if await self.add(1, f"to replace {step.port}: {step.why}"):
                await self.remove(step.port, f"replaced: {step.why}")
                self.recycles[step.reason] += 1

    async def add(self, count: int, why: str) -> list[int]:
        """Start `count` workers in free places at once; those that answer their probe join the pool."""
        infos = await self.supervisor.processes(self.cfg.program)
        free = [p for p in self.slots if p not in self.serving and self.state_of(infos, p) not in RUNNING][:count]
        if not free:
            self.say(f"no place for another worker ({why})")
            return []
        started = time.monotonic()
        ready = [p for p, ok in zip(free, await asyncio.gather(*map(self.start, free)), strict=True) if ok]
        if ready:
            self.serving += ready
            await self.publish()
            took = time.monotonic() - started
            self.say(f"+{' +'.join(map(str, ready))} in {took:.1f} s ({why}): {len(self.serving)} serving")
        return ready

    async def start(self, port: int) -> bool:
        """Start the worker at `port` and wait until it answers its probe; one that does not is stopped again."""
        process = self.cfg.process(port)
        self.first_rss.pop(port, None)
        try:
            await self.supervisor.call("startProcess", process, False)
        except xmlrpc.client.Fault as e:
            self.say(f"could not start {port}: {e.faultString}")
            return False
        endpoint = Endpoint.parse(self.slots[port][0])
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if await endpoint.request(self.config.probe_path, 2.0) is not None:
                return True
            state = (await self.supervisor.call("getProcessInfo", process))["statename"]
            if state in ("FATAL", "STOPPED"):
                self.say(f"{port} did not start ({state}): see its log")
                return False
            await asyncio.sleep(0.1)
        self.say(f"{port} did not answer within {READY_TIMEOUT_S:.0f} s: stopped")
        await self.supervisor.stop(process)
        return False

    async def remove(self, port: int, why: str) -> None:
        """Out of nginx's upstream first, then stopped once the pages it sent have their websockets."""
        self.serving = [p for p in self.serving if p != port]
        await self.publish()
        target = self.target_of(port)
        deadline = time.monotonic() + DRAIN_GRACE_S
        while time.monotonic() < deadline:
            found = await fleet.scrape([target], self.config.metrics_path)
            if not fleet.summarize(found)[0].unconnected:
                break
            await asyncio.sleep(0.5)
        await self.supervisor.stop(self.cfg.process(port))
        self.first_rss.pop(port, None)
        self.say(f"-{port} ({why}): {len(self.serving)} serving")

    async def worker_for(self, request: little_http.Request) -> str | None:
        """Where a request that nginx sent to the waiting room goes: a serving worker (started for it if the pool
        has none), the same one for a page and its websocket (by the affinity cookie); None if none serves within
        hold_s."""
        if not await self.wake():
            return None
        key = re.search(r"(?:^|;\s*)bokeh_affinity=([0-9a-f]+)", request.headers.get("cookie", ""))
        ports = sorted(self.serving)
        if not ports:
            return None
        return self.slots[ports[zlib.crc32(key.group(1).encode()) % len(ports) if key else 0]][0]

    async def wake(self) -> bool:
        """A visitor came to a pool with no worker: one starts. True once one serves (within hold_s)."""
        if not self.serving:
            async with self.busy:  # the first visitor's request starts it; the others find it started
                if not self.serving:
                    if self.sizing.pinned == 0:
                        self.sizing.pinned = None  # put to sleep by an operator, woken by a visitor
                    self.sizing.target = max(1, self.sizing.target)
                    await self.add(1, "a visitor")
        try:
            await asyncio.wait_for(self.awake.wait(), self.config.hold_s)
        except TimeoutError:
            return False
        return True

    async def scale(self, count: int | None) -> str:
        """An operator's step: the pool pinned at `count` (None: it sizes itself again), taken now."""
        lo, hi = self.cfg.min_workers, self.cfg.max_workers
        if count is not None and not lo <= count <= hi:
            raise ValueError(f"pool {self.cfg.name} runs {lo}..{hi} workers: {count} is outside")
        async with self.busy:
            self.sizing.pinned = count
            if count is None:
                self.say("sizes itself again (bokeh-stack scale auto)")
                return f"pool {self.cfg.name} sizes itself again: {len(self.serving)} serving"
            self.sizing.target = count
            if count > len(self.serving):
                await self.add(count - len(self.serving), "bokeh-stack scale")
            while len(self.serving) > count:
                await self.remove(sorted(self.serving)[-1], "bokeh-stack scale")
        undo = f"`bokeh-stack scale {self.cfg.name} auto` lets it size itself again"
        return f"pool {self.cfg.name}: {len(self.serving)} serving, held at {count} ({undo})"


class Program:
    def __init__(self, config: PoolsConfig) -> None:
        self.config = config
        self.supervisor = Supervisor(config.supervisor_socket)
        nginx = Nginx(self.supervisor)
        self.pools = {p.name: PoolRunner(p, config, self.supervisor, nginx) for p in config.pools}
        self.by_app = {app: runner for runner in self.pools.values() for app in runner.cfg.apps}
        for runner in self.pools.values():
            runner.changed = self.write_state
        self.supervisord_pid = 0
        self.servers: list[asyncio.Server] = []

    def write_state(self) -> None:
        pools = {name: runner.state() for name, runner in self.pools.items()}
        write_pools_state(Path(self.config.state_file), self.supervisord_pid, pools)

    async def run(self) -> None:
        self.supervisord_pid = await self.supervisor.call("getPID")
        self.servers = [
            await little_http.serve_unix(self.config.wake_socket, self.waiting_room, mode=0o660),
            await little_http.serve_unix(self.config.control_socket, self.control, mode=0o600),
        ]
        await asyncio.gather(*(runner.adopt() for runner in self.pools.values()))
        self.write_state()
        log(f"running {', '.join(f'{n} ({len(r.serving)} serving)' for n, r in self.pools.items())}")
        while True:
            await asyncio.sleep(INTERVAL_S)
            now = time.monotonic()
            await asyncio.gather(*(self.guarded(runner.tick(now)) for runner in self.pools.values()))
            self.write_state()

    @staticmethod
    async def guarded(step) -> None:
        """A step that fails is logged, and the next look starts from what is."""
        try:
            await step
        except xmlrpc.client.Fault as e:
            if e.faultCode != Faults.SHUTDOWN_STATE:  # the stack is stopping
                log(f"a step failed: {e}")
        except OSError as e:
            log(f"a step failed: {e}")
        except Exception:  # a bug: its traceback in the log, and the pools go on
            log(f"a step failed:\n{traceback.format_exc()}")

    async def waiting_room(self, request: little_http.Request) -> little_http.Response | little_http.Relay:
        """nginx's requests for a pool with no worker (or before nginx has read its new servers): each waits for a
        worker, then goes on to it as if nginx had sent it there."""
        if request.path == self.config.probe_path:
            return little_http.Response(200, "idle: its first visitor starts a worker\n")
        runner = self.by_app.get(request.app(self.config.probe_path))
        if runner is None:
            return little_http.Response(404, "no such app\n")
        try:
            endpoint = await runner.worker_for(request)
        except (OSError, xmlrpc.client.Fault) as e:
            log(f"could not wake pool {runner.cfg.name}: {e}")
            endpoint = None
        self.write_state()
        if endpoint:
            return little_http.Relay(endpoint)
        return little_http.Response(503, little_http.waiting_page(request.same_site), {"Retry-After": "2"}, html=True)

    async def control(self, request: little_http.Request) -> little_http.Response:
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and parts == ["state"]:
            return little_http.Response(200, json.dumps({n: r.state().__dict__ for n, r in self.pools.items()}))
        if request.method == "POST" and len(parts) == 3 and parts[0] == "scale":
            runner = self.pools.get(parts[1])
            if runner is None:
                known = ", ".join(self.pools) or "none"
                return little_http.Response(404, f"no pool {parts[1]!r} sizes itself here (those that do: {known})")
            try:
                said = await runner.scale(None if parts[2] == "auto" else int(parts[2]))
            except ValueError as e:
                return little_http.Response(400, str(e))
            self.write_state()
            return little_http.Response(200, said)
        return little_http.Response(404, "GET /state, POST /scale/POOL/N|auto")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bokeh_stack.daemons.pools POOLS_JSON", file=sys.stderr)
        return 2
    return asyncio.run(run_until_stopped(Program(PoolsConfig.read(Path(argv[0])))))


async def run_until_stopped(program: Program) -> int:
    task = asyncio.ensure_future(program.run())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass  # supervisord stops it; the workers stay as they are
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
