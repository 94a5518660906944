"""The Salt formula applied for real: a fresh Debian container (our own dockerd), the repository as its file
server, `salt-call --local` inside it; then page views through the host's nginx, reached only through the port
published on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest
import yaml

from bokeh_stack.pageview import page_view

from .stack import ROOT, TEST_APPS, free_ports, run, wait_for

pytestmark = pytest.mark.salt
HOST_IMAGE = "bokeh-stack-salt-host:test"
SHIPPED = ["cosine", "lifecycle", "press_me", "random_walk", "streaming"]


@dataclass
class Applied:
    seconds: float
    states: dict

    @property
    def failures(self) -> list[str]:
        return [f"{v['__id__']}: {v.get('comment')}" for v in self.states.values() if v["result"] is False]

    @property
    def changed(self) -> list[str]:
        return [v["__id__"] for v in self.states.values() if v.get("changes")]

    @property
    def pending(self) -> list[str]:
        return [v["__id__"] for v in self.states.values() if v["result"] is None]


@dataclass
class Host:
    engine: object
    name: str
    port: int

    def salt(self, *args: str, timeout: float = 900) -> Applied:
        start = time.monotonic()
        proc = self.engine.docker(
            "exec", self.name, "/opt/salt/bin/salt-call", "--local", "-c", "/etc/salt-test", "--out=json",
            "--retcode-passthrough", *args, check=False, timeout=timeout,
        )  # fmt: skip
        try:
            states = json.loads(proc.stdout)["local"]
        except (ValueError, KeyError) as e:
            raise AssertionError(
                f"salt-call failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            ) from e
        assert isinstance(states, dict), states
        return Applied(time.monotonic() - start, states)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def host_image(engine):
    engine.docker("build", "-t", HOST_IMAGE, str(ROOT / "tests" / "salt-host"), timeout=900)
    return HOST_IMAGE


@pytest.fixture(scope="module")
def host(engine, host_image, tmp_path_factory):
    """A fresh host: the formula and repository mounted read-only, a masterless minion config, a pillar."""
    tmp = tmp_path_factory.mktemp("salt")
    port = free_ports(1)
    conf, pillar, extra = tmp / "conf", tmp / "pillar", tmp / "extra"
    conf.mkdir()
    pillar.mkdir()
    (extra / "apps").mkdir(parents=True)
    shutil.copytree(TEST_APPS / "counter", extra / "apps" / "counter")
    (conf / "minion").write_text(
        yaml.safe_dump(
            {
                "file_client": "local",
                "id": "bokeh-host",
                "file_roots": {"base": ["/srv/bokeh-stack/salt", "/srv/extra", "/srv/bokeh-stack"]},
                "pillar_roots": {"base": ["/srv/pillar"]},
            }
        )
    )
    (pillar / "top.sls").write_text("base:\n  '*':\n    - bokeh\n")
    settings = {"server_names": ["127.0.0.1"], "public_origins": [f"127.0.0.1:{port}"], "workers": 2}
    (pillar / "bokeh.sls").write_text(yaml.safe_dump({"bokeh": {"settings": settings}}))
    name = f"bokeh-salt-{uuid.uuid4().hex[:8]}"
    engine.docker(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80",
        "-v", f"{ROOT}:/srv/bokeh-stack:ro", "-v", f"{extra}:/srv/extra:ro",
        "-v", f"{conf}:/etc/salt-test:ro", "-v", f"{pillar}:/srv/pillar:ro",
        host_image,
    )  # fmt: skip
    try:
        yield Host(engine, name, port)
    finally:
        engine.docker("rm", "-f", name, check=False)


def test_apply_provisions_a_fresh_host(host):
    first = host.salt("state.apply")
    print(f"\nfirst apply: {first.seconds:.0f} s, {len(first.changed)} states changed")
    assert first.failures == []
    assert "bokeh-service-running" in first.changed
    wait_for(lambda: http_status(host.url("/healthz")) == 200, 60, "the host's /healthz to say 200")
    for app in SHIPPED + ["counter"]:
        view = run(page_view(host.url(f"/{app}")))
        assert view.document.roots, app
    assert urllib.request.urlopen(host.url("/")).read().count(b"<li>") == len(SHIPPED) + 1


def http_status(url: str) -> int | None:
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_apply_again_changes_nothing(host):
    again = host.salt("state.apply")
    print(f"\nre-apply: {again.seconds:.0f} s")
    assert again.failures == [] and again.changed == [], again.changed
    dry = host.salt("state.apply", "test=True")
    assert dry.failures == [] and dry.pending == [] and dry.changed == [], dry.pending


def test_workers_run_as_the_stack_user_and_listen_on_loopback(host):
    ps = host.engine.docker(
        "exec", host.name, "sh", "-c", "cat /proc/[0-9]*/status 2>/dev/null | grep -E '^(Name|Uid)'"
    )
    names_uids = ps.stdout.split("Name:")[1:]
    workers = [entry for entry in names_uids if entry.split()[0] == "python" and "Uid" in entry]
    uid = host.engine.docker("exec", host.name, "id", "-u", "bokeh").stdout.strip()
    assert workers and all(entry.split("Uid:")[1].split()[0] == uid for entry in workers if "supervisord" not in entry)
    listening = host.engine.docker("exec", host.name, "cat", "/proc/net/tcp").stdout
    worker_sockets = [
        line for line in listening.splitlines()[1:] if line.split()[3] == "0A" and ":13EC" in line.split()[1]
    ]
    assert worker_sockets and all(line.split()[1].startswith("0100007F:") for line in worker_sockets)
