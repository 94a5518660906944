"""Worker hosts that come and go behind one name: Swarm's dnsrr service, `docker compose up --scale workers=N`.

Open-source nginx resolves an upstream server's name once, when it loads its config. This program, beside nginx
under the same supervisord, resolves the names again every few seconds and, when the addresses behind one
change, reloads nginx gracefully (HUP): new page views reach new workers within seconds, none go to removed ones,
and connections already open (websockets) stay with the nginx processes that opened them. A name that resolves
to nothing (every worker task down at once) keeps the addresses nginx has: a reload would fail on it.

    python -m bokeh_stack.daemons.upstreams SUPERVISORD_SOCKET NAME...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from bokeh_stack.config.topology import UPSTREAMS, resolve, supervisor_rpc

# New tasks get page views within this plus nginx's reload (the bound: 15 s).
INTERVAL_S = 2.0
# How long a starting balancer waits for its worker hosts' names before it gives up (Swarm starts the services
# in no order; the workers' tasks are named in DNS once they run).
START_TIMEOUT_S = 180.0

Addresses = dict[str, tuple[str, ...]]


def unresolved(addresses: Addresses) -> list[str]:
    return [name for name, found in addresses.items() if not found]


def changes(old: Addresses, new: Addresses) -> str:
    """What changed, as `workers: +10.0.1.7 -10.0.1.5`."""
    parts = []
    for name in new:
        added = sorted(set(new[name]) - set(old.get(name, ())))
        removed = sorted(set(old.get(name, ())) - set(new[name]))
        if added or removed:
            parts.append(f"{name}: " + " ".join([f"+{a}" for a in added] + [f"-{r}" for r in removed]))
    return "; ".join(parts)


def wait_until_resolved(hosts: tuple[str, ...], log: Callable[[str], None], timeout_s: float = START_TIMEOUT_S) -> None:
    """Before nginx first loads its config (it refuses a name it cannot resolve): wait for every name."""
    deadline = time.monotonic() + timeout_s
    said = 0.0
    while missing := unresolved(resolve(hosts)):
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(
                f"the worker hosts {', '.join(missing)} did not resolve within {timeout_s:.0f} s: "
                f"is the workers service running, on a network this service shares?"
            )
        if now - said >= 10:
            log(f"waiting for the worker hosts {', '.join(missing)} to resolve (their workers not started yet?)")
            said = now
        time.sleep(1)


def describe(addresses: Addresses) -> str:
    """`workers at 10.0.1.3 10.0.1.4`, a name a clause."""
    return "; ".join(f"{name} at {' '.join(found) or 'nothing'}" for name, found in addresses.items())


def watch(reload: Callable[[], None], hosts: tuple[str, ...], log: Callable[[str], None], interval_s: float) -> None:
    loaded = resolve(hosts)
    log(f"nginx reaches {describe(loaded)}")
    kept: Addresses = {}
    while True:
        time.sleep(interval_s)
        now = resolve(hosts)
        if now == loaded:
            continue
        if missing := unresolved(now):
            if now != kept:
                log(f"{', '.join(missing)} resolves to nothing now: nginx keeps {describe(loaded)}")
                kept = now
            continue
        reload()
        log(f"worker hosts changed ({changes(loaded, now)}), nginx reloaded: nginx reaches {describe(now)}")
        loaded, kept = now, {}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    supervisor = supervisor_rpc(Path(argv[0])).supervisor

    def log(line: str) -> None:
        print(f"{UPSTREAMS}: {line}", flush=True)

    watch(lambda: supervisor.signalProcess("nginx", "HUP"), tuple(argv[1:]), log, INTERVAL_S)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
