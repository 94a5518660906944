"""An interrupted `make bench` goes on where it stopped (bench/checkpoint.py): a part it finished is taken as it
was measured, by a run of the same commit with the same options, and by nothing else."""

from __future__ import annotations

from bench.checkpoint import Checkpoint
from bench.churn import Census, ChurnPoint
from bench.report import Results


def _results() -> Results:
    return Results(workers=2, concurrency=8, setups=["single", "stack"])


def test_a_finished_part_is_kept_for_the_same_commit_and_options_only(tmp_path):
    path = tmp_path / ".benchmarks.partial.pickle"
    identity = {"commit": "abc123", "options": {"workers": 2, "churn": "500,5000"}}
    measured = _results()
    measured.churn = {"stack": [ChurnPoint(sessions=500, rss_mb=80.0, left=Census(0, 0, 0))]}
    measured.pagecost_apps = {"explorer": "its page cost"}
    first = Checkpoint(path, identity)
    first.save("churn", measured)
    first.save("pagecost", measured)

    again = _results()
    second = Checkpoint(path, identity)
    assert second.restore("churn", again) and second.restore("pagecost", again)
    assert again.churn == measured.churn and again.pagecost_apps == {"explorer": "its page cost"}
    assert not second.restore("static", again), "a part that never finished is measured again"

    for other in ({**identity, "commit": "def456"}, {**identity, "options": {"workers": 3, "churn": "500,5000"}},
                  {**identity, "commit": "abc123+changes"}):  # fmt: skip
        assert not Checkpoint(path, other).restore("churn", _results()), other
    second.clear()
    assert not path.exists() and not Checkpoint(path, identity).restore("churn", _results())


def test_a_damaged_checkpoint_is_measured_again(tmp_path):
    path = tmp_path / ".benchmarks.partial.pickle"
    path.write_bytes(b"not a pickle")
    assert not Checkpoint(path, {"commit": "abc123", "options": {}}).restore("churn", _results())
