"""The Salt formula applied for real: a fresh Debian container (our own dockerd), the repository as its file
server, `salt-call --local` inside it; then page views through the host's nginx, reached only through the port
published on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bokeh_stack.config.discovery import discover_apps
from harness.pageview import PageView, connect_and_pull, open_page, page_view, sign_in
from harness.stack import (
    ROOT,
    SHIPPED_APPS,
    TEST_APPS,
    Execution,
    executions_per_view,
    free_ports,
    page_views,
    run,
    stream_of_page_views,
    wait_for,
)

from .docker_engine import page_upstream, redis_record

pytestmark = pytest.mark.salt
HOST_IMAGE = "bokeh-stack-salt-host:test"
STACK_CLI, SETTINGS = "/opt/bokeh-stack/venv/bin/bokeh-stack", "/etc/bokeh-stack/settings.yaml"  # the formula's
SHIPPED = [source.name for source in discover_apps(SHIPPED_APPS)]


@dataclass
class Applied:
    seconds: float
    states: dict

    @classmethod
    def parse(cls, proc: subprocess.CompletedProcess, minion: str, start: float) -> Applied:
        """The states of `minion` from salt's JSON output; a run that produced none fails with Salt's own words."""
        try:
            states = json.loads(proc.stdout)[minion]
        except (ValueError, KeyError) as e:
            raise AssertionError(
                f"salt failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            ) from e
        assert isinstance(states, dict), states
        return cls(time.monotonic() - start, states)

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
    pillar_file: Path

    def salt(self, *args: str, timeout: float = 900) -> Applied:
        start = time.monotonic()
        proc = self.engine.docker(
            "exec", self.name, "/opt/salt/bin/salt-call", "--local", "-c", "/etc/salt-test", "--out=json",
            "--retcode-passthrough", *args, check=False, timeout=timeout,
        )  # fmt: skip
        return Applied.parse(proc, "local", start)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stack(self, *args: str) -> subprocess.CompletedProcess:
        """The bokeh-stack CLI on the host, as its operator runs it."""
        command = [STACK_CLI, *args, "--settings", SETTINGS]
        return self.engine.docker("exec", self.name, *command, check=False)

    def metrics(self) -> list:
        """The host's /metrics, from the host itself (its ops listener is on its loopback)."""
        fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9180/metrics').read().decode())"
        body = self.engine.docker("exec", self.name, "/opt/bokeh-stack/venv/bin/python", "-c", fetch).stdout
        return [s for family in text_string_to_metric_families(body) for s in family.samples]

    def workers_up(self) -> dict[str, float]:
        return {s.labels["worker"]: s.value for s in self.metrics() if s.name == "bokeh_stack_worker_up"}


@pytest.fixture(scope="module")
def host_image(engine):
    engine.docker("build", "-t", HOST_IMAGE, str(ROOT / "tests" / "salt-host"), timeout=900)
    return HOST_IMAGE


def start_host(engine, tmp: Path, pillar: dict, port: int | None = None, network: str | None = None) -> Host:
    """A fresh host: the formula and repository mounted read-only, a masterless minion config, its pillar, and
    the counter app (recording its executions in the host's /tmp/executions.txt) beside the shipped apps."""
    conf, pillar_dir, extra = tmp / "conf", tmp / "pillar", tmp / "extra"
    for directory in (conf, pillar_dir, extra / "apps"):
        directory.mkdir(parents=True)
    shutil.copytree(TEST_APPS / "counter", extra / "apps" / "counter")
    (conf / "minion").write_text(
        yaml.safe_dump(
            {
                "file_client": "local",
                "id": tmp.name,
                "file_roots": {"base": ["/srv/bokeh-stack/salt", "/srv/extra", "/srv/bokeh-stack"]},
                "pillar_roots": {"base": ["/srv/pillar"]},
            }
        )
    )
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - bokeh\n")
    (pillar_dir / "bokeh.sls").write_text(yaml.safe_dump({"bokeh": pillar}))
    name = f"bokeh-salt-{tmp.name}-{uuid.uuid4().hex[:8]}"
    options = ["--network", network] if network else []
    options += ["-p", f"127.0.0.1:{port}:80"] if port else []
    engine.docker(
        "run", "-d", "--init", "--name", name, "--hostname", tmp.name, *options,
        "-e", "COUNTER_RECORD_FILE=/tmp/executions.txt",
        "-v", f"{ROOT}:/srv/bokeh-stack:ro", "-v", f"{extra}:/srv/extra:ro",
        "-v", f"{conf}:/etc/salt-test:ro", "-v", f"{pillar_dir}:/srv/pillar:ro",
        HOST_IMAGE,
    )  # fmt: skip
    return Host(engine, name, port or 0, pillar_dir / "bokeh.sls")


@pytest.fixture(scope="module")
def host(engine, host_image, tmp_path_factory, wheel):
    port = free_ports(1)
    settings = {"server_names": ["127.0.0.1"], "public_origins": [f"127.0.0.1:{port}"], "workers": 2}
    # A pool that may grow to 3 (docs/pools.md): its 2 workers are started by the pools program, under Salt too.
    settings.update(max_workers=3, idle_timeout_s=3600)
    host = start_host(engine, tmp_path_factory.mktemp("single"), {"settings": settings}, port=port)
    try:
        yield host
    finally:
        engine.docker("rm", "-f", host.name, check=False)


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


def test_workers_run_as_the_stack_user_and_listen_on_unix_sockets_only(host):
    # Every process's command line and real uid (a slim image has no ps).
    script = 'for p in /proc/[0-9]*; do echo "$(tr "\\0" " " < $p/cmdline)|$(grep ^Uid: $p/status)"; done 2>/dev/null'
    output = host.engine.docker("exec", host.name, "sh", "-c", script).stdout
    processes = [line.rsplit("|", 1) for line in output.splitlines() if "|Uid:" in line]
    uid = host.engine.docker("exec", host.name, "id", "-u", "bokeh").stdout.strip()
    workers = [status.split()[1] for command, status in processes if "bokeh_stack.worker" in command]
    assert len(workers) == 2 and set(workers) == {uid}, processes
    listening = host.engine.docker("exec", host.name, "cat", "/proc/net/tcp").stdout
    worker_ports = [
        line for line in listening.splitlines()[1:] if line.split()[3] == "0A" and ":13EC" in line.split()[1]
    ]
    assert worker_ports == [], "one host: no worker on a TCP port"
    unix = host.engine.docker("exec", host.name, "cat", "/proc/net/unix").stdout
    assert {"/var/lib/bokeh-stack/sockets/5100.sock", "/var/lib/bokeh-stack/sockets/5101.sock"} <= {
        line.split()[-1] for line in unix.splitlines()[1:] if len(line.split()) == 8
    }, unix


def test_the_operator_sees_the_fleet_on_the_host(host):
    status = host.stack("status", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert [(w["port"], w["state"]) for w in shown["workers"]] == [(5100, "RUNNING"), (5101, "RUNNING")]
    assert shown["services"]["bokeh_stack_ops"]["state"] == "RUNNING"
    assert host.workers_up() == {"bokeh_default_5100": 1.0, "bokeh_default_5101": 1.0}  # unix sockets: by name
    assert http_status(host.url("/metrics")) == 404, "not on the public port"


def test_a_pillar_change_restarts_workers_one_at_a_time(host):
    pillar = yaml.safe_load(host.pillar_file.read_text())
    pillar["bokeh"]["settings"]["session"] = {"keep_alive_ms": 20000}
    host.pillar_file.write_text(yaml.safe_dump(pillar))
    changed = host.salt("state.apply")
    assert changed.failures == []
    assert sorted(changed.changed) == ["bokeh-config-applied", "bokeh-config-settings"]
    [applied] = [v for v in changed.states.values() if v["__id__"] == "bokeh-config-applied"]
    comment = applied["comment"] + json.dumps(applied["changes"])
    assert "reloaded nginx" in comment
    assert comment.index("restarted bokeh_default_5100") < comment.index("restarted bokeh_default_5101")
    assert run(page_view(host.url("/counter"))).document.roots
    assert host.salt("state.apply").changed == []


def test_a_pillar_turns_sign_in_on_with_its_users(host):
    password = "a long passphrase"  # made by the test, like a private pillar: never in git
    pillar = yaml.safe_load(host.pillar_file.read_text())
    pillar["bokeh"]["settings"].update(auth={"mode": "password"}, access={"cosine": {"users": ["alice"]}})
    pillar["bokeh"]["users"] = {"alice": {"password": password, "groups": ["lab"]}}
    host.pillar_file.write_text(yaml.safe_dump(pillar))
    applied = host.salt("state.apply")
    assert applied.failures == []
    assert {"bokeh-signin-user-alice", "bokeh-config-applied"} <= set(applied.changed)
    assert password not in json.dumps(applied.states), "the password is in no state's output"
    assert http_status(host.url("/cosine")) == 200 and urllib.request.urlopen(host.url("/cosine")).url.endswith(
        "/login?next=%2Fcosine"
    ), "signed out: the sign-in page"
    status, jar, _ = run(sign_in(host.url("").rstrip("/"), "alice", password))
    assert status == 303
    assert run(page_view(host.url("/cosine"), jar=jar)).document.roots
    again = host.salt("state.apply")
    assert again.failures == [] and again.changed == [], again.changed


def test_clean_removes_what_the_formula_installed(host):
    cleaned = host.salt("state.apply", "bokeh.clean")
    assert cleaned.failures == []
    paths = "/opt/bokeh-stack /etc/bokeh-stack /var/lib/bokeh-stack /var/log/bokeh-stack"
    left = host.engine.docker("exec", host.name, "sh", "-c", f"ls -d {paths} 2>/dev/null; getent passwd bokeh; true")
    assert left.stdout.strip() == ""
    processes = host.engine.docker("exec", host.name, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
    assert not {"supervisord", "bokeh_stack.worker", "nginx"} & set(processes.split()), processes
    assert http_status(host.url("/healthz")) is None


def test_multi_host_balancer_and_two_worker_hosts(engine, host_image, tmp_path_factory, wheel):
    """One balancer and two worker hosts on a private network; page views through the balancer's published port."""
    network = f"bokeh-salt-net-{uuid.uuid4().hex[:8]}"
    engine.docker("network", "create", network)
    hosts: list[Host] = []
    try:
        workers = [start_host(engine, tmp_path_factory.mktemp(f"worker{i}"), {}, network=network) for i in (1, 2)]
        hosts += workers
        addresses = [
            engine.docker(
                "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", w.name
            ).stdout.strip()
            for w in workers
        ]
        port = free_ports(1)
        public = {"server_names": ["127.0.0.1"], "public_origins": [f"127.0.0.1:{port}"], "workers": 2}
        secret = secrets.token_urlsafe(48)  # made by the test, like a private pillar: never in git
        # Both worker hosts keep their sessions in the Redis the second one runs (pillar.example's layout).
        store = {"session": {"store": f"redis://{addresses[1]}:6379/0"}}
        runs_redis = [{}, {"redis": {"run": True, "address": addresses[1]}}]
        for worker, address, redis in zip(workers, addresses, runs_redis, strict=True):
            settings = {**public, **store, **redis, "worker_address": address}
            worker.pillar_file.write_text(
                yaml.safe_dump({"bokeh": {"role": "worker", "secret": secret, "settings": settings}})
            )
        balancer_pillar = {"role": "balancer", "settings": {**public, "worker_hosts": addresses}}
        balancer = start_host(engine, tmp_path_factory.mktemp("balancer"), balancer_pillar, port=port, network=network)
        hosts.append(balancer)

        with ThreadPoolExecutor(3) as pool:
            applied = list(pool.map(lambda h: h.salt("state.apply"), hosts))
        print(f"\nmulti-host apply (3 hosts at once): {max(a.seconds for a in applied):.0f} s")
        assert [a.failures for a in applied] == [[], [], []]
        wait_for(lambda: http_status(balancer.url("/healthz")) == 200, 60, "the balancer's /healthz to say 200")
        # The balancer's one scrape holds every worker of both hosts, reached over the internal network; each is up
        # before the page views that must reach them all (a host's apply may end before its workers listen).
        every = {f"{address}:{port}" for address in addresses for port in (5100, 5101)}

        def all_up() -> bool:
            try:
                return balancer.workers_up() == dict.fromkeys(every, 1.0)
            except subprocess.CalledProcessError:  # its ops listener not answering yet
                return False

        wait_for(all_up, 60, "every worker up, as the balancer sees them")

        views = run(page_views([balancer.url("/counter")] * 40, concurrency=4))
        records = []
        for worker in workers:
            text = engine.docker("exec", worker.name, "cat", "/tmp/executions.txt", check=False).stdout
            records += [Execution(int(p), s, a, h) for p, s, a, h in (line.split() for line in text.splitlines())]
        per_view, per_worker = executions_per_view(records, views)
        print(f"multi-host: {per_view:.2f} executions per page view, sessions per worker {dict(per_worker)}")
        assert per_view == 1.0
        assert len({w.split(":")[0] for w in per_worker}) == 2, "sessions on both worker hosts"
        assert len(per_worker) == 4, "on every worker of both hosts"

        # A tab on the first worker host, used: its record goes to the Redis on the second.
        tab = run(_tab_on(balancer, "/explorer", addresses[0]))
        password = f"{STACK_CLI} secret --redis-password --settings {SETTINGS}"  # as an operator gets it
        wait_for(lambda: len(redis_record(engine, workers[1].name, tab.session_id, password, addresses[1])) >= 4, 10,
                 "the tab's record in the second host's Redis")  # fmt: skip

        # A stopped host's address goes silent (no refusal): a request nginx sends to one of its workers waits
        # proxy_connect_timeout (1 s), then goes to the next worker. Slower, never failed.
        engine.docker("kill", workers[0].name)
        stream = run(stream_of_page_views(balancer.url("/counter"), 8.0))
        print(f"one worker host stopped: {stream}")
        assert stream.done >= 8 and stream.failures == [], f"{stream}: {stream.failures[:3]}"
        # The tab, back through the balancer with its token, on the other host: as its user left it.
        doc = run(_reconnect(balancer.url("/explorer"), tab.token))
        assert doc.select_one({"name": "wave"}).value == "square" and doc.select_one({"name": "frequency"}).value == 7
        assert doc.select_one({"name": "summary"}).text.startswith("square at 7 Hz")
        assert "resumed with" in doc.select_one({"name": "status"}).text
        gone = {f"{addresses[0]}:{port}" for port in (5100, 5101)}
        assert {w for w, up in balancer.workers_up().items() if up == 0} == gone
    finally:
        for host in hosts:
            engine.docker("rm", "-f", host.name, check=False)
        engine.docker("network", "rm", network, check=False)


async def _tab_on(balancer: Host, path: str, address: str, tries: int = 20) -> PageView:
    """A tab of `path` that the balancer sent to the worker host at `address` (its access log says), used: a wave
    and a frequency chosen. Tabs that landed elsewhere leave."""
    log = "/var/log/bokeh-stack/nginx-access.log"
    for _ in range(tries):
        tab = await open_page(balancer.url(path), document_ready=True)
        served = await asyncio.to_thread(balancer.engine.docker, "exec", balancer.name, "cat", log)
        if page_upstream(served.stdout, path) == address:
            await tab.change(tab.document.select_one({"name": "wave"}), value="square")
            await tab.change(tab.document.select_one({"name": "frequency"}), value=7)
            return tab
        tab.close(1001)
    raise AssertionError(f"no page view of {path} reached {address} in {tries}")


async def _reconnect(url: str, token: str):
    origin = url.split("/", 3)
    ws, _, doc = await connect_and_pull(url, token, {"Origin": f"{origin[0]}//{origin[2]}"}, timeout=15)
    ws.close()
    return doc


SSH_IMAGE = "bokeh-stack-ssh-host:test"


def test_salt_ssh_from_a_workstation(engine, tmp_path, wheel):
    """salt-ssh from this machine (the workstation) to a fresh Debian host with only python3 and sshd."""
    salt_ssh = ROOT / ".venv-salt" / "bin" / "salt-ssh"
    if not salt_ssh.exists():
        pytest.fail("Salt is not installed: `make test` makes .venv-salt")
    engine.docker("build", "-t", SSH_IMAGE, str(ROOT / "tests" / "ssh-host"), timeout=900)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh_port = free_ports(2)
    http_port = ssh_port + 1
    name = f"bokeh-ssh-{uuid.uuid4().hex[:8]}"
    engine.docker(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{ssh_port}:22", "-p", f"127.0.0.1:{http_port}:80",
        "-v", f"{key}.pub:/etc/ssh/test_authorized_keys:ro", SSH_IMAGE,
    )  # fmt: skip
    try:
        conf, pillar = tmp_path / "conf", tmp_path / "pillar"
        conf.mkdir()
        pillar.mkdir()
        (conf / "master").write_text(yaml.safe_dump({
            "root_dir": str(tmp_path / "root"),
            "file_roots": {"base": [str(ROOT / "salt"), str(ROOT)]},
            "pillar_roots": {"base": [str(pillar)]},
        }))  # fmt: skip
        (conf / "roster").write_text(yaml.safe_dump({
            "dashboards": {"host": "127.0.0.1", "port": ssh_port, "user": "root", "priv": str(key)},
        }))  # fmt: skip
        (pillar / "top.sls").write_text("base:\n  '*':\n    - bokeh\n")
        settings = {"server_names": ["127.0.0.1"], "public_origins": [f"127.0.0.1:{http_port}"], "workers": 2}
        (pillar / "bokeh.sls").write_text(yaml.safe_dump({"bokeh": {"settings": settings}}))
        wait_for(lambda: subprocess.run(["ssh-keyscan", "-p", str(ssh_port), "127.0.0.1"], capture_output=True).stdout,
                 30, "sshd to answer")  # fmt: skip

        def salt_ssh_apply(*args: str) -> Applied:
            start = time.monotonic()
            proc = subprocess.run(
                [str(salt_ssh), "-c", str(conf), "--roster-file", str(conf / "roster"), "-i", "--out=json",
                 "dashboards", "state.apply", *args],
                capture_output=True, text=True, timeout=1200,
            )  # fmt: skip
            return Applied.parse(proc, "dashboards", start)

        first = salt_ssh_apply()
        print(f"\nsalt-ssh first apply: {first.seconds:.0f} s")
        assert first.failures == []
        url = f"http://127.0.0.1:{http_port}"
        wait_for(lambda: http_status(f"{url}/healthz") == 200, 60, "the host's /healthz to say 200")
        for app in SHIPPED:
            assert run(page_view(f"{url}/{app}")).document.roots, app
        again = salt_ssh_apply()
        print(f"salt-ssh re-apply: {again.seconds:.0f} s")
        assert again.failures == [] and again.changed == [], again.changed
    finally:
        engine.docker("rm", "-f", name, check=False)
