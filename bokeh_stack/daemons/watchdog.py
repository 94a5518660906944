"""The workers' watchdog, a supervisord event listener (one for every worker of the host):

    python -m bokeh_stack.daemons.watchdog TIMEOUT_S PATH PROCESS=ENDPOINT...

On every TICK_5, each RUNNING worker PROCESS (supervisord's group:name) must answer a GET of PATH at ENDPOINT
(host:port, or unix:/path of its socket) with 200 within TIMEOUT_S, or it is restarted through supervisord's API: a
hung worker (deadlock, stuck C call, SIGSTOP) comes back. The workers are probed at once, so one hung worker costs
the others nothing. A worker still starting (STARTING: within watchdog.start_grace_s) or stopped (a pool that sizes
itself keeps places for workers it does not run) is left alone."""

from __future__ import annotations

import os
import sys
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor

from bokeh_stack.config.topology import Endpoint
from supervisor import childutils

USAGE = "usage: python -m bokeh_stack.daemons.watchdog TIMEOUT_S PATH PROCESS=ENDPOINT..."


def answers(endpoint: str, path: str, timeout: float) -> bool:
    return Endpoint.parse(endpoint).get_status(path, timeout) == 200


def running(rpc: xmlrpc.client.ServerProxy, processes: list[str]) -> list[str]:
    states = {f"{i['group']}:{i['name']}": i["statename"] for i in rpc.supervisor.getAllProcessInfo()}
    return [process for process in processes if states.get(process) == "RUNNING"]


def hung(workers: dict[str, str], path: str, timeout: float, pool: ThreadPoolExecutor) -> list[str]:
    """The workers (of process -> endpoint) that do not answer, probed at once."""
    results = pool.map(lambda process: answers(workers[process], path, timeout), workers)
    return [process for process, ok in zip(workers, results, strict=True) if not ok]


def restart(rpc: xmlrpc.client.ServerProxy, process: str, path: str, timeout: float) -> None:
    print(f"{process} did not answer GET {path} within {timeout:g} s: restarting it", file=sys.stderr, flush=True)
    try:
        rpc.supervisor.stopProcess(process)
    except xmlrpc.client.Fault:
        pass  # it stopped on its own meanwhile
    rpc.supervisor.startProcess(process, False)


def parse(argv: list[str]) -> tuple[float, str, dict[str, str]] | None:
    if len(argv) < 3 or not all("=" in arg for arg in argv[2:]):
        return None
    workers = dict(arg.split("=", 1) for arg in argv[2:])
    return float(argv[0]), argv[1], workers


def main(argv: list[str]) -> int:
    parsed = parse(argv)
    if parsed is None:
        print(USAGE, file=sys.stderr)
        return 2
    timeout, path, workers = parsed
    rpc = childutils.getRPCInterface(os.environ)
    with ThreadPoolExecutor(max_workers=min(32, len(workers))) as pool:
        while True:
            headers, _payload = childutils.listener.wait(sys.stdin, sys.stdout)
            if headers["eventname"].startswith("TICK"):
                try:
                    live = {process: workers[process] for process in running(rpc, list(workers))}
                    for process in hung(live, path, timeout, pool):
                        restart(rpc, process, path, timeout)
                except (OSError, xmlrpc.client.Fault) as e:
                    print(f"watchdog: {e}", file=sys.stderr, flush=True)
            childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
