"""A worker's watchdog, a supervisord event listener (one per worker):

    python -m bokeh_stack.daemons.watchdog TIMEOUT_S PROCESS ENDPOINT PATH

On every TICK_5, a RUNNING worker PROCESS must answer a GET of PATH at ENDPOINT (host:port, or unix:/path of its
socket) with 200 within TIMEOUT_S, or it is restarted through supervisord's API: a hung worker (deadlock, stuck C
call, SIGSTOP) comes back. A worker still starting (STARTING: within watchdog.start_grace_s) is left alone."""

from __future__ import annotations

import os
import sys
import xmlrpc.client

from bokeh_stack.config.topology import Endpoint
from supervisor import childutils

USAGE = "usage: python -m bokeh_stack.daemons.watchdog TIMEOUT_S PROCESS ENDPOINT PATH"


def answers(endpoint: str, path: str, timeout: float) -> bool:
    return Endpoint.parse(endpoint).get_status(path, timeout) == 200


def watch(rpc: xmlrpc.client.ServerProxy, timeout: float, process: str, endpoint: str, path: str) -> None:
    try:
        if rpc.supervisor.getProcessInfo(process)["statename"] != "RUNNING":
            return
    except xmlrpc.client.Fault:
        return
    if answers(endpoint, path, timeout):
        return
    print(f"{process} did not answer GET {path} within {timeout:g} s: restarting it", file=sys.stderr, flush=True)
    try:
        rpc.supervisor.stopProcess(process)
    except xmlrpc.client.Fault:
        pass  # it stopped on its own meanwhile
    rpc.supervisor.startProcess(process, False)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(USAGE, file=sys.stderr)
        return 2
    timeout, process, endpoint, path = float(argv[0]), *argv[1:]
    rpc = childutils.getRPCInterface(os.environ)
    while True:
        headers, _payload = childutils.listener.wait(sys.stdin, sys.stdout)
        if headers["eventname"].startswith("TICK"):
            try:
                watch(rpc, timeout, process, endpoint, path)
            except (OSError, xmlrpc.client.Fault) as e:
                print(f"watchdog of {process}: {e}", file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
