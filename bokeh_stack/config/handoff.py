"""The files one process of the stack hands another, each schema written once: render writes ops.json and
signin.json from the settings, the ops process and the sign-in process read them at start; supervisord's restart
listener writes restarts.json, `bokeh-stack status` and the workers' metrics read it. Standard library only."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bokeh_stack.config.files import write_atomically
from bokeh_stack.config.topology import Endpoint, Target


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
