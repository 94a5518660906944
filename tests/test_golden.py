"""Every rendered config, for a matrix of settings, compared with the files in tests/golden/: a change to what the
stack renders (nginx, supervisord, the workers' arguments, ops.json, signin.json, prometheus.yml, the index) shows
up here as a diff, and is made on purpose. After a deliberate change, write the files anew and explain the
difference in the commit:

    BOKEH_STACK_GOLDEN_UPDATE=1 .venv/bin/python -m pytest tests/test_golden.py

Machine-specific parts (this checkout, the virtualenv, the test's temporary directory, versions, app digests)
are replaced by placeholders, so the files are the same on every machine.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from bokeh_stack import __version__
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import load
from bokeh_stack.provisioning import render as rendering
from harness.stack import ROOT, SHIPPED_APPS

GOLDEN = Path(__file__).with_name("golden")
RUNTIME = Path("/srv/bokeh-stack-golden")
UPDATE = os.environ.get("BOKEH_STACK_GOLDEN_UPDATE") == "1"


def cases(tmp: Path) -> dict[str, dict[str, Any]]:
    tls = {"certificate": str(tmp / "cert.pem"), "key": str(tmp / "key.pem")}
    oidc = {"issuer": "https://id.example.org", "client_id": "dashboards", "client_secret_file": str(tmp / "oidc")}
    return {
        "defaults": {},
        "tls": {"tls": tls, "server_names": ["dashboards.example.org"]},
        "pools": {"pools": {"heavy": {"apps": ["streaming", "large_data"], "workers": 3}}, "workers": 1},
        "tcp": {"unix_sockets": False},
        "password": {"auth": {"mode": "password"}, "access": {"cosine": {"users": ["alice"], "groups": ["lab"]}}},
        "oidc": {"auth": {"mode": "oidc", "oidc": oidc}, "trusted_proxies": ["10.0.0.0/8"]},
        "balancer": {"role": "balancer", "worker_hosts": ["workers", "10.0.0.12"], "listen_address": "0.0.0.0"},
        "worker": {"role": "worker", "worker_address": "0.0.0.0"},
        "ipv6": {"listen_address": "::1", "server_names": ["localhost", "::1"]},
        "prefix": {"prefix": "/dashboards", "ops": {"server_names": ["ops.example.org"]}},
        "sizing": {
            "min_workers": 0,
            "max_workers": 3,
            "pools": {"steady": {"apps": ["streaming"], "workers": 2, "recycle": {"max_age_h": 24}}},
        },
    }


def rendered(name: str, overrides: dict[str, Any], tmp: Path) -> dict[str, str]:
    settings = load(
        environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(RUNTIME), **overrides}, cwd=ROOT
    )
    plan = RunPlan(settings, python="/usr/bin/python3", nginx_bin="/usr/sbin/nginx", euid=0)
    files = {}
    for path, text in rendering.outputs(plan).items():
        files[str(path.relative_to(RUNTIME)).replace("/", "__")] = placeholders(text, tmp)
    return files


def placeholders(text: str, tmp: Path) -> str:
    from bokeh import __version__ as bokeh_version

    for real, placeholder in (
        (str(tmp), "<tmp>"),
        (str(Path(rendering.bokeh_favicon()).parent), "<bokeh>"),
        (str(rendering.templates_root()), "<templates>"),
        (str(ROOT), "<repo>"),
        (sys.prefix, "<venv>"),
    ):
        text = text.replace(real, placeholder)
    text = re.sub(r"# app (\S+) [0-9a-f]{8,}", r"# app \1 <digest>", text)
    text = re.sub(r"(# bokeh-stack \S+ )[0-9a-f]{16}", r"\1<digest>", text)
    text = re.sub(r'("digest": )"[0-9a-f]+"', r'\1"<digest>"', text)
    for version, placeholder in ((bokeh_version, "<bokeh-version>"), (__version__, "<version>")):
        text = re.sub(rf"(?<![\d.]){re.escape(version)}(?![\d.])", placeholder, text)
    return text


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("golden")
    for name in ("cert.pem", "key.pem", "oidc"):
        (tmp / name).write_text("not read by rendering\n")
    return tmp


@pytest.mark.parametrize("case", list(cases(Path("/"))))
def test_every_rendered_config_is_what_it_was(case, tmp):
    files = rendered(case, cases(tmp)[case], tmp)
    directory = GOLDEN / case
    if UPDATE:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        for name, text in files.items():
            (directory / name).write_text(text)
    kept = {p.name: p.read_text() for p in directory.iterdir()} if directory.is_dir() else {}
    assert sorted(files) == sorted(kept), f"{case}: files rendered now vs tests/golden/{case}"
    for name, text in files.items():
        assert text == kept[name], f"{case}: {name} differs from tests/golden/{case}/{name} (see this module's doc)"
