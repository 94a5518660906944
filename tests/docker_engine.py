"""A real Docker engine for the tests: our own dockerd on its own socket, started and stopped by PID, and the
`debian:bookworm-slim` base image built locally (debootstrap + docker import) where no registry is reachable.

The engine's data root and the debootstrap tarball are kept between runs on the same machine (the build cache
is what makes a second run fast); set DOCKER_TEST_ROOT to put them elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bokeh_stack.resume import record, redis_store

ROOT = Path(os.environ.get("DOCKER_TEST_ROOT", "/var/lib/bokeh-stack-test"))
RUN = Path("/run/bokeh-stack-test")
BASE_IMAGE = "debian:bookworm-slim"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


@dataclass
class Engine:
    host: str
    proc: subprocess.Popen

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, check=check, timeout=timeout
        )


def _answers(host: str) -> bool:
    env = {**os.environ, "DOCKER_HOST": host}
    return subprocess.run(["docker", "version"], env=env, capture_output=True, timeout=20).returncode == 0


def _stop_stale_engine(pidfile: Path) -> None:
    """Stop a dockerd that a killed earlier run left behind, if its pidfile names a live dockerd."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if pid > 1 and cmdline.split(b"\0")[0].endswith(b"dockerd") and str(RUN).encode() in cmdline:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)


def start_engine() -> Engine:
    if os.geteuid() != 0:
        raise RuntimeError("the Docker tests start their own dockerd and need root")
    if shutil.which("dockerd") is None:
        raise RuntimeError("dockerd is missing: `make test` installs docker.io")
    RUN.mkdir(parents=True, exist_ok=True)
    pidfile = RUN / "dockerd.pid"
    _stop_stale_engine(pidfile)
    pidfile.unlink(missing_ok=True)
    host = f"unix://{RUN / 'docker.sock'}"
    log = open(RUN / "dockerd.log", "ab")
    proc = subprocess.Popen(
        [
            "dockerd", "--host", host, "--data-root", str(ROOT / "docker"), "--exec-root", str(RUN / "exec"),
            "--pidfile", str(pidfile), "--storage-driver", "overlay2",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    engine = Engine(host, proc)
    deadline = time.monotonic() + 60
    while not _answers(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_engine(engine)
            raise RuntimeError(f"dockerd did not start; see {RUN / 'dockerd.log'}")
        time.sleep(0.5)
    return engine


def stop_engine(engine: Engine) -> None:
    """SIGTERM (dockerd stops its containers and containerd), then SIGKILL to its process group if it hangs."""
    engine.proc.terminate()
    try:
        engine.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(engine.proc.pid, signal.SIGKILL)
        engine.proc.wait()


def ensure_base_image(engine: Engine) -> None:
    """debian:bookworm-slim from debootstrap, with this machine's CA certificates (HTTPS may be inspected here)."""
    if engine.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return
    tarball = ROOT / "bookworm-minbase.tar"
    if not tarball.exists():
        _debootstrap(tarball)
    subprocess.run(
        ["docker", "import", str(tarball), BASE_IMAGE], env=engine.env, check=True, capture_output=True, timeout=300
    )


def _debootstrap(tarball: Path) -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates", "bookworm", str(rootfs)],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        for cert in HOST_CA_DIR.glob("*.crt"):
            shutil.copy(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
        subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True)
        subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=True, capture_output=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)


def upstream_addresses(nginx_logs: str) -> set[str]:
    """The worker addresses an nginx container reached last, as its upstreams program logged them
    (`nginx reaches workers at 10.0.1.3 10.0.1.4`; bokeh_stack/daemons/upstreams.py)."""
    lines = nginx_logs.splitlines()
    said = [line.rsplit("nginx reaches ", 1)[1] for line in lines if "nginx reaches workers at" in line]
    return set(said[-1].split(" at ", 1)[1].split()) if said else set()


def page_upstream(nginx_logs: str, path: str) -> str:
    """The worker address nginx's access log says served the last page view of `path` (its upstream=IP:PORT)."""
    served = [line for line in nginx_logs.splitlines() if f'"GET {path} HTTP/1.1" 200 ' in line]
    assert served, f"no page view of {path} in nginx's log"
    tried = served[-1].split(" upstream=", 1)[1].split(" urt=", 1)[0]  # "A:P" or, after a retry, "A:P, B:P"
    return tried.split(", ")[-1].rsplit(":", 1)[0]


def container_address(engine: Engine, container: str, network: str) -> str:
    networks = json.loads(engine.docker("inspect", container).stdout)[0]["NetworkSettings"]["Networks"]
    return networks[network]["IPAddress"]


def redis_record(
    engine: Engine,
    container: str,
    session_id: str,
    password: str = 'cat "$BOKEH_STACK_SESSION__REDIS_PASSWORD_FILE"',
    address: str = "127.0.0.1",
) -> list[str]:
    """A session's resume record in a Redis, as the workers wrote it (bokeh_stack/resume/redis_store.py), read in
    `container` with redis-cli and the password the shell command `password` prints (by default: the redis
    container's, from the file it shares with the workers)."""
    key = redis_store.PREFIX + record.key(session_id)
    read = f'REDISCLI_AUTH="$({password})" redis-cli -h {address} --raw LRANGE "$0" 0 -1'
    return engine.docker("exec", container, "sh", "-c", read, key).stdout.splitlines()
