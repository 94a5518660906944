"""The files one process of the stack hands another, each schema written once: render writes ops.json,
signin.json and pools.json from the settings, the ops process, the sign-in process and the pools program read them
at start; supervisord's restart listener writes restarts.json, `bokeh-stack status` and the workers' metrics read
it; the pools program writes pools-state.json, status and the ops process read it. Standard library only."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bokeh_stack.config.files import write_atomically
from bokeh_stack.config.topology import Endpoint, Target, worker_process


def _text(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2) + "\n"


@dataclass(frozen=True)
class OpsConfig:
    """ops.json, read by the ops process (bokeh_stack/daemons/ops.py): what it scrapes, from where, how often."""

    socket: str
    targets: tuple[Target, ...]
    metrics_path: str
    # nginx's stub_status: address, port, path
    nginx_status: tuple[str, int, str]
    interval_s: float
    history: int
    # Each pool's fewest and most workers, and where the pools program says which of its workers serve.
    pools: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    pools_state: str = ""

    def text(self) -> str:
        return _text(self)

    @property
    def nginx_status_at(self) -> tuple[Endpoint, str]:
        host, port, path = self.nginx_status
        return Endpoint(host, port), path

    @classmethod
    def read(cls, path: Path) -> OpsConfig:
        raw = json.loads(Path(path).read_text())
        return cls(
            socket=raw["socket"],
            targets=tuple(Target(**t) for t in raw["targets"]),
            metrics_path=raw["metrics_path"],
            nginx_status=tuple(raw["nginx_status"]),  # type: ignore[arg-type]
            interval_s=float(raw["interval_s"]),
            history=int(raw["history"]),
            pools={name: (int(lo), int(hi)) for name, (lo, hi) in raw.get("pools", {}).items()},
            pools_state=raw.get("pools_state", ""),
        )


@dataclass(frozen=True)
class SigninConfig:
    """signin.json, read by the sign-in process (bokeh_stack/daemons/signin): who may come in, and what the index
    shows."""

    socket: str
    mode: str
    prefix: str
    session_hours: int
    failed_per_minute: int
    users_file: str
    key_file: str
    revoked_file: str
    # Every worker (Target fields) and the path where each closes a signed-out user's websockets.
    workers: list[dict[str, Any]]
    revoke_path: str
    oidc: dict[str, Any]
    access: dict[str, dict[str, list[str]]]
    apps: list[dict[str, Any]]
    versions: dict[str, str]
    templates: str

    def text(self) -> str:
        return _text(self)

    @property
    def targets(self) -> list[Target]:
        return [Target(**t) for t in self.workers]

    @classmethod
    def read(cls, path: Path) -> SigninConfig:
        return cls(**json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class Restarts:
    """restarts.json, kept by supervisord's restart listener (bokeh_stack/daemons/restarts.py): how often
    supervisord restarted each process on its own, in the run of the supervisord with this pid."""

    supervisord_pid: int
    counts: dict[str, int]

    @classmethod
    def read(cls, path: Path) -> Restarts | None:
        try:
            data = json.loads(Path(path).read_text())
            counts = {str(name): int(n) for name, n in data.get("counts", {}).items()}
            return cls(int(data.get("supervisord_pid", 0)), counts)
        except (OSError, ValueError, AttributeError, TypeError):
            return None

    def write(self, path: Path) -> None:
        # Read by the workers (their restart counter), under supervisord's umask 027.
        text = json.dumps({"supervisord_pid": self.supervisord_pid, "counts": self.counts}, sort_keys=True)
        write_atomically(path, text, mode=0o644)


def restart_counts(path: Path) -> dict[str, int]:
    """Process name -> restarts, from the file the listener keeps ({} if there is none yet)."""
    found = Restarts.read(path)
    return found.counts if found else {}


@dataclass(frozen=True)
class ManagedPool:
    """One pool the pools program runs: its bounds and limits, and each of its worker slots as (port, where the
    program probes and scrapes it, its nginx `server`)."""

    name: str
    program: str
    apps: tuple[str, ...]
    min_workers: int
    max_workers: int
    sessions_per_worker: int
    idle_timeout_s: int
    recycle: dict[str, int]
    slots: tuple[tuple[int, str, str], ...]
    members_file: str

    def process(self, port: int) -> str:
        """supervisord's name for the worker at `port` (group:name)."""
        return f"{self.program}:{worker_process(self.program, port)}"


@dataclass(frozen=True)
class PoolsConfig:
    """pools.json, read by the pools program (bokeh_stack/daemons/pools.py)."""

    supervisor_socket: str
    control_socket: str
    wake_socket: str
    wake_server: str  # the waiting room as nginx's `server`
    state_file: str
    probe_path: str
    metrics_path: str
    # How long a page of a pool with no worker is held while one starts (within nginx's page timeout).
    hold_s: float
    pools: tuple[ManagedPool, ...]

    def text(self) -> str:
        return _text(self)

    @classmethod
    def read(cls, path: Path) -> PoolsConfig:
        raw = json.loads(Path(path).read_text())
        pools = tuple(
            ManagedPool(**{**p, "apps": tuple(p["apps"]), "slots": tuple(tuple(slot) for slot in p["slots"])})
            for p in raw.pop("pools")
        )
        return cls(**raw, pools=pools)


@dataclass
class PoolState:
    """One pool as the pools program last said: the ports of the workers nginx sends page views to, how many it
    aims at (pinned: by `bokeh-stack scale`), its recycles by reason, its last steps (time, what, why)."""

    serving: list[int]
    target: int
    bounds: str
    pinned: bool = False
    recycles: dict[str, int] = dataclasses.field(default_factory=dict)
    events: list[tuple[float, str]] = dataclasses.field(default_factory=list)


def write_pools_state(path: Path, supervisord_pid: int, pools: dict[str, PoolState]) -> None:
    # Read by the ops process (the workers' user), under supervisord's umask 027.
    states = {name: dataclasses.asdict(state) for name, state in pools.items()}
    text = json.dumps({"supervisord_pid": supervisord_pid, "pools": states})
    write_atomically(path, text, mode=0o644)


def read_pools_state(path: Path | str, supervisord_pid: int) -> dict[str, PoolState]:
    """Each pool's state, as the pools program of the supervisord with this pid wrote it; {} if there is none (no
    path, not written yet, or left by an earlier supervisord)."""
    try:
        data = json.loads(Path(path).read_text()) if path else {}
        if int(data.get("supervisord_pid", 0)) != supervisord_pid:
            return {}
        return {
            name: PoolState(**{**p, "events": [tuple(e) for e in p.get("events", [])]})
            for name, p in data.get("pools", {}).items()
        }
    except (OSError, ValueError, AttributeError, TypeError):
        return {}
