"""`make bench` keeps each part it measured in docs/benchmarks.parts.json (bench/parts.py) and measures only what is not
kept there for the same code and options: a run that stops goes on where it stopped, in a later sitting too, and a
change measures again the parts whose code it touches, and only those."""

from __future__ import annotations

import json
import math
import subprocess

from bench.churn import Census, ChurnPoint
from bench.parts import Parts, decode, encode
from bench.report import Results
from bench.streaming import Capacity, Step

# In a checkout: part "churn" is measured by bench.churn, which imports bench.census; "static" by bench.static.
MODULES = {"churn": "bench.churn", "static": "bench.static", "latency": "bench.static"}
OPTIONS = {"workers": 2, "churn": "500,5000"}


def _git(root, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def _checkout(tmp_path):
    root = tmp_path / "checkout"
    for path, text in {
        "bokeh_stack/__init__.py": "",
        "bench/churn.py": "from bench.census import Census\n",
        "bench/census.py": "class Census: ...\n",
        "bench/setups.py": "class Setup: ...\n",
        "bench/static.py": "import json\n",
        "docs/index.md": "# docs\n",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    _git(root.parent, "init", "-q", str(root))
    _commit(root)
    return root


def _commit(root) -> None:
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "change")


def _measured() -> Results:
    results = Results(workers=2, concurrency=8, setups=["single", "stack"])
    results.churn = {"stack": [ChurnPoint(sessions=500, rss_mb=80.0, left=Census(0, 0, 0))]}
    results.static = {"stack": "static"}
    return results


def test_results_come_back_from_json_as_they_were_measured():
    results = Results(workers=2, concurrency=8, setups=["stack"])
    results.capacity = {("stack", "streaming"): Capacity(450, [Step(450, 0.97, 0.7, 1.1)])}
    results.pageviews = {("stack", True): (1.5, float("nan"))}
    back = decode(json.loads(json.dumps(encode(results))))
    assert back.capacity == results.capacity and back.setups == ["stack"]
    assert back.pageviews[("stack", True)][0] == 1.5 and math.isnan(back.pageviews[("stack", True)][1])


def test_a_part_is_kept_for_its_code_and_options_across_runs(tmp_path):
    root, path = _checkout(tmp_path), tmp_path / "benchmarks.parts.json"
    first = Parts(path, OPTIONS, MODULES, root)
    first.save("churn", _measured())
    first.save("static", _measured())
    kept = json.loads(path.read_text())["parts"]["churn"]
    assert kept["commit"] and kept["measured"] and kept["options"] == OPTIONS

    again = Results(workers=2, concurrency=8, setups=["single", "stack"])
    second = Parts(path, OPTIONS, MODULES, root)
    assert second.restore("churn", again) and again.churn == _measured().churn
    assert not second.restore("latency", Results(2, 8, [])), "a part never measured is measured"
    assert not Parts(path, {**OPTIONS, "workers": 3}, MODULES, root).restore("churn", Results(2, 8, []))

    (root / "docs" / "index.md").write_text("# more docs\n")
    _commit(root)
    assert Parts(path, OPTIONS, MODULES, root).restore("churn", Results(2, 8, [])), "docs are not code measured"

    (root / "bench" / "census.py").write_text("class Census: pass\n")  # churn's code (imported), not static's
    assert not Parts(path, OPTIONS, MODULES, root).restore("churn", Results(2, 8, [])), "changes not committed"
    _commit(root)
    third = Parts(path, OPTIONS, MODULES, root)
    assert not third.restore("churn", Results(2, 8, [])) and third.restore("static", Results(2, 8, []))

    static = json.loads(path.read_text())["parts"]["static"]
    (root / "bokeh_stack" / "__init__.py").write_text("VERSION = 2\n")
    third.save("static", _measured())
    assert "not committed" in third.measured["static"]
    assert json.loads(path.read_text())["parts"]["static"] == static, "what uncommitted code measured is not kept"

    _commit(root)
    assert Parts(path, OPTIONS, MODULES, root).restore("static", Results(2, 8, [])) is False, "the product changed"
    fourth = Parts(path, OPTIONS, MODULES, root)
    fourth.save("static", _measured())
    assert Parts(path, OPTIONS, MODULES, root).restore("static", Results(2, 8, [])), "measured again on this code"
    data = json.loads(path.read_text())
    data["parts"]["static"]["host"] = "elsewhere, 64 cores"
    path.write_text(json.dumps(data))
    assert not Parts(path, OPTIONS, MODULES, root).restore("static", Results(2, 8, [])), "another machine's figures"


def test_an_unreadable_parts_file_means_every_part_is_measured(tmp_path):
    path = tmp_path / "benchmarks.parts.json"
    path.write_text("not json")
    assert not Parts(path, OPTIONS, MODULES, _checkout(tmp_path)).restore("churn", Results(2, 8, []))
