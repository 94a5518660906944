"""The Kubernetes manifests (kubernetes/, a kustomize base), on paper: validated against the current Kubernetes
schemas with kubernetes-validate, and checked against what the images and the settings say. No cluster runs them
here (docs/kubernetes.md says so); the same images and probes run for real in the compose and Swarm tests."""

from __future__ import annotations

import base64
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bokeh_stack.config.settings import load
from harness.stack import ROOT, SHIPPED_APPS

BASE = ROOT / "kubernetes"
KUSTOMIZATION = yaml.safe_load((BASE / "kustomization.yaml").read_text())
RESOURCES = [doc for name in KUSTOMIZATION["resources"] for doc in yaml.safe_load_all((BASE / name).read_text())]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def resource(kind: str, name: str) -> dict:
    [found] = [r for r in RESOURCES if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def generated_secret(name: str = "bokeh-stack-secret") -> dict:
    """A Secret as kustomize's secretGenerator makes it from the provisioned key file."""
    [generator] = [g for g in KUSTOMIZATION["secretGenerator"] if g["name"] == name]
    [entry] = generator["files"]
    key, _ = entry.split("=", 1)
    value = base64.b64encode(b"x" * 64).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]}, "data": {key: value}}


SECRETS = [generated_secret(g["name"]) for g in KUSTOMIZATION["secretGenerator"]]


def image_env(target: str) -> dict[str, str]:
    """The ENV of an image of docker/Dockerfile: its own stage's and those it is built FROM."""
    text = DOCKERFILE.replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    by_name = {stage.split("\n", 1)[0].split()[-1]: stage for stage in stages}
    env: dict[str, str] = {}
    name = target
    chain = []
    while name in by_name:
        chain.append(by_name[name])
        name = by_name[name].split()[0]
    for stage in reversed(chain):
        for line in re.findall(r"^ENV (.*)$", stage, flags=re.M):
            env |= dict(word.split("=", 1) for word in shlex.split(line))
    return env


def pod(deployment: str) -> dict:
    return resource("Deployment", deployment)["spec"]["template"]["spec"]


def settings_of(target: str):
    """The settings a pod of this image loads: the image's environment, then the ConfigMap's."""
    environ = {**image_env(target), **resource("ConfigMap", "bokeh-stack-settings")["data"]}
    return load(environ={**environ, "BOKEH_STACK_APPS_DIR": str(SHIPPED_APPS)})


@pytest.mark.parametrize("doc", [*RESOURCES, *SECRETS], ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_is_valid_against_current_kubernetes(doc):
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_settings_are_the_compose_settings():
    """The ConfigMap holds docker-compose.yml's settings with the same defaults, and the Secret's file."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-settings"]
    fallbacks = {k: re.fullmatch(r"\$\{\w+:-(.*)\}", v).group(1) for k, v in compose.items()}
    data = resource("ConfigMap", "bokeh-stack-settings")["data"]
    assert {k: v for k, v in data.items() if k in fallbacks} == {k: v for k, v in fallbacks.items() if k in data}
    assert set(data) - set(fallbacks) == {"BOKEH_STACK_SECRET_FILE"}
    [mount] = [m for m in pod("workers")["containers"][0]["volumeMounts"] if m["name"] == "secret"]
    assert Path(data["BOKEH_STACK_SECRET_FILE"]).parent == Path(mount["mountPath"])
    assert Path(data["BOKEH_STACK_SECRET_FILE"]).name == generated_secret()["data"].popitem()[0]


def test_nginx_reaches_every_worker_port_through_the_headless_service():
    workers = settings_of("workers")
    nginx = settings_of("nginx")
    service = resource("Service", "workers")
    assert service["spec"]["clusterIP"] == "None", "headless: the name resolves to every ready pod"
    assert nginx.worker_hosts == (service["metadata"]["name"],)
    assert nginx.worker_ports == workers.worker_ports
    container_ports = [p["containerPort"] for p in pod("workers")["containers"][0]["ports"]]
    assert container_ports == list(workers.worker_ports)
    assert sorted(p["port"] for p in service["spec"]["ports"]) == sorted(workers.worker_ports)
    served = {p["name"]: p["containerPort"] for p in pod("nginx")["containers"][0]["ports"]}
    assert served == {"http": nginx.port, "ops": nginx.ops.port}


@pytest.mark.parametrize("service", ["workers", "nginx", "redis"])
def test_probes_are_the_stacks_own_health_checks(service):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]["healthcheck"]["test"]
    [container] = pod(service)["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == compose[1:], probe


@pytest.mark.parametrize("service", ["workers", "nginx", "redis"])
def test_pods_run_as_the_images_user_on_a_read_only_root(service):
    uid = int(re.search(r"useradd .*--uid (\d+)", DOCKERFILE).group(1))
    spec = pod(service)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == uid == spec["securityContext"]["fsGroup"]
    [container] = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert image_env(service)["BOKEH_STACK_RUNTIME_DIR"] in writable and "/tmp" in writable
    assert spec["automountServiceAccountToken"] is False


def test_the_workers_keep_their_sessions_in_the_redis_service_behind_its_own_password():
    """As in Compose and Swarm: the workers' store is the redis Service, and Redis's password a Secret of its own
    that the redis and worker pods mount where their settings say; the workers' secret is not in the redis pod."""
    env = {e["name"]: e["value"] for e in pod("workers")["containers"][0]["env"]}
    workers = load(environ={**image_env("workers"), **env, "BOKEH_STACK_APPS_DIR": str(SHIPPED_APPS)})
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["workers"]["environment"]
    assert workers.session.store == compose["BOKEH_STACK_SESSION__STORE"] == "redis://redis:6379/0"
    service = resource("Service", "redis")
    assert [p["port"] for p in service["spec"]["ports"]] == [6379] and service["metadata"]["name"] == "redis"
    [password] = generated_secret("bokeh-stack-redis-password")["data"]
    for deployment in ("workers", "redis"):
        [container] = pod(deployment)["containers"]
        path = Path({e["name"]: e["value"] for e in container["env"]}["BOKEH_STACK_SESSION__REDIS_PASSWORD_FILE"])
        secret = {v["name"]: v.get("secret", {}).get("secretName") for v in pod(deployment)["volumes"]}
        [mount] = [m for m in container["volumeMounts"] if secret.get(m["name"]) == "bokeh-stack-redis-password"]
        assert (path.parent, path.name) == (Path(mount["mountPath"]), password), deployment
    assert "bokeh-stack-secret" not in {v.get("secret", {}).get("secretName") for v in pod("redis")["volumes"]}


def test_a_rolling_update_keeps_a_worker_serving_and_a_drain_takes_one_pod_at_a_time():
    deployment = resource("Deployment", "workers")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budget = resource("PodDisruptionBudget", "workers")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["workers"]
    grace = int(compose["stop_grace_period"].rstrip("s"))
    assert pod("workers")["terminationGracePeriodSeconds"] == grace, "the same time to drain as in compose"


def docs_yaml(kind_or_key: str) -> dict:
    """The YAML block of docs/kubernetes.md that is a `kind_or_key` (a kind, or its top-level key)."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "kubernetes.md").read_text(), flags=re.S)
    [found] = [d for d in map(yaml.safe_load, blocks) if d.get("kind") == kind_or_key or kind_or_key in d]
    return found


def test_the_workers_autoscaler_sizes_their_pods_by_connected_sessions_as_a_pool_sizes_itself():
    component = yaml.safe_load((BASE / "autoscaling" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component", "an overlay opts in: without the metric, an autoscaler would not scale"
    [hpa] = [yaml.safe_load((BASE / "autoscaling" / name).read_text()) for name in component["resources"]]
    kubernetes_validate.validate(hpa, kubernetes_validate.latest_version(), strict=True)
    target = hpa["spec"]["scaleTargetRef"]
    deployment = resource(target["kind"], target["name"])
    [patch] = component["patches"]
    assert patch["target"] == {"kind": target["kind"], "name": target["name"]}
    assert yaml.safe_load(patch["patch"]) == [{"op": "remove", "path": "/spec/replicas"}]
    assert "replicas" in deployment["spec"], "the autoscaler, not an apply, sets the replicas"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], "a drained pod's tabs have somewhere to go"

    # As on one host: sessions_per_worker for each of a pod's workers, idle_timeout_s before a pod goes.
    workers = settings_of("workers")
    [metric] = hpa["spec"]["metrics"]
    assert float(metric["pods"]["target"]["averageValue"]) == workers.sessions_per_worker * len(workers.worker_ports)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == workers.idle_timeout_s

    # The metric, as documented: Prometheus scrapes each worker of a pod, the Prometheus Adapter sums by pod.
    monitor = docs_yaml("PodMonitor")
    ports = {p["name"] for p in pod("workers")["containers"][0]["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} == ports
    assert {e["path"] for e in monitor["spec"]["podMetricsEndpoints"]} == {"/_bokeh_stack/metrics"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["selector"]["matchLabels"].items()
    [rule] = docs_yaml("rules")["rules"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert 'bokeh_stack_sessions{state="connected",' in rule["metricsQuery"], "the workers' own series"
