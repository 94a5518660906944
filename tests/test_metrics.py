"""A worker's own metrics and the fleet scrape that merges them: what each count means, checked against what a
client did, on a real `python -m bokeh_stack.worker` on loopback."""

from __future__ import annotations

import asyncio
import math

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bokeh_stack.config import topology
from bokeh_stack.daemons import fleet
from bokeh_stack.patches import fixes, worker_metrics
from harness.pageview import open_page
from harness.stack import TEST_APPS, free_ports, wait_for

from .test_fixes import Worker


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    return sum(s.value for s in found if s.name == name and labels.items() <= s.labels.items())


def test_the_metrics_fit_the_pinned_bokeh():
    assert fixes.check(worker_metrics.FIXES) == {}


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """A worker with the ticker app whose unconnected sessions go after a second (orphan discards come quickly)."""
    tmp = tmp_path_factory.mktemp("metrics")
    extra = ("--check-unused-sessions", "200", "--unused-session-lifetime", "1000")
    w = Worker(tmp, [TEST_APPS / "ticker"], "m" * 48, extra=extra)
    yield w
    w.stop()


def scrape_worker(w: Worker) -> list:
    status, answer = w.get(topology.route("worker_metrics"))
    assert status == 200
    return samples(answer.split(b"\r\n\r\n", 1)[1].decode())


def test_a_worker_counts_sessions_by_state_and_how_they_end(counted):
    async def scenario():
        url = counted.url("/ticker")
        views = [await open_page(url) for _ in range(3)]
        found = scrape_worker(counted)
        assert value(found, "bokeh_stack_sessions", app="ticker", state="connected") == 3
        assert value(found, "bokeh_stack_websocket_connections") == 3
        assert value(found, "bokeh_stack_sessions_created_total", app="ticker") == 3
        assert value(found, "bokeh_stack_document_build_seconds_count", app="ticker") == 3
        assert value(found, "bokeh_stack_messages_received_total") >= 3  # each view's PULL-DOC
        assert value(found, "bokeh_stack_messages_sent_total") >= 6  # each view's ACK and document
        assert value(found, "bokeh_stack_sent_bytes_total") > 3 * 500  # each document is ~700 bytes of JSON

        # A page loaded whose websocket never opens: unconnected, then discarded as an orphan.
        assert counted.get("/ticker")[0] == 200
        found = scrape_worker(counted)
        assert value(found, "bokeh_stack_sessions", app="ticker", state="unconnected") == 1
        views[0].close()
        await asyncio.to_thread(
            wait_for,
            lambda: (
                value(f := scrape_worker(counted), "bokeh_stack_sessions_discarded_total", reason="closed") == 1
                and value(f, "bokeh_stack_sessions_discarded_total", reason="orphan") == 1
            ),
            20,
            "a closed and an orphan discard",
        )
        found = scrape_worker(counted)
        assert value(found, "bokeh_stack_sessions", state="connected") == 2
        assert value(found, "bokeh_stack_sessions", state="unconnected") == 0
        assert value(found, "bokeh_stack_sessions_discarded_total", reason="expired") == 0
        for view in views[1:]:
            view.close()

    asyncio.run(scenario())


def test_the_fleet_scrape_labels_every_worker_series_and_reports_a_silent_worker_down(counted):
    silent = free_ports(1)
    targets = [topology.Target("127.0.0.1", counted.port, "live"), topology.Target("127.0.0.1", silent, "gone")]
    found = asyncio.run(fleet.scrape(targets, topology.route("worker_metrics")))
    exposed = samples(generate_latest(fleet.FleetCollector(found)).decode())
    live, gone = f"127.0.0.1:{counted.port}", f"127.0.0.1:{silent}"
    assert value(exposed, "bokeh_stack_worker_up", worker=live, pool="live") == 1
    assert value(exposed, "bokeh_stack_worker_up", worker=gone, pool="gone") == 0, "down is 0, not missing"
    assert value(exposed, "nginx_up") == 0
    worker_series = [s for s in exposed if s.name.startswith(("bokeh_stack_", "process_"))]
    worker_series = [s for s in worker_series if s.name != "bokeh_stack_scrape_duration_seconds"]
    assert {s.name for s in worker_series} >= {
        "bokeh_stack_sessions", "bokeh_stack_sessions_created_total", "bokeh_stack_sessions_discarded_total",
        "bokeh_stack_websocket_connections", "bokeh_stack_messages_received_total", "bokeh_stack_messages_sent_total",
        "bokeh_stack_sent_bytes_total", "bokeh_stack_document_build_seconds_bucket",
        "bokeh_stack_event_loop_lag_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total",
        "process_open_fds",
    }  # fmt: skip
    assert all(s.labels["worker"] in (live, gone) and s.labels["pool"] in ("live", "gone") for s in worker_series)
    [summary, down] = fleet.summarize(found)
    assert summary.up and summary.rss_bytes > 10e6 and not down.up


def test_histogram_quantile_reads_buckets_as_prometheus_does():
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert fleet.quantile(0.5, buckets) == pytest.approx(0.1)
    assert fleet.quantile(0.95, buckets) == pytest.approx(0.75)
    assert fleet.quantile(0.95, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert fleet.quantile(0.99, [(1.0, 0.0), (math.inf, 5.0)]) == 1.0, "beyond the last bound: that bound"
    later = [(0.1, 60.0), (0.5, 100.0), (1.0, 110.0), (math.inf, 110.0)]
    assert fleet.bucket_delta(later, buckets) == ((0.1, 10.0), (0.5, 10.0), (1.0, 10.0), (math.inf, 10.0))
    restarted = [(0.1, 1.0), (0.5, 1.0), (1.0, 1.0), (math.inf, 1.0)]
    assert fleet.bucket_delta(restarted, buckets) == tuple(restarted), "a restarted worker counts from 0"


def test_nginx_stub_status_becomes_the_exporters_series():
    page = "Active connections: 3 \nserver accepts handled requests\n 17 16 42 \nReading: 0 Writing: 1 Waiting: 2 \n"
    found = fleet.Scrape({}, fleet._parse_stub_status(page), 0.01)
    exposed = samples(generate_latest(fleet.FleetCollector(found)).decode())
    assert {s.name: s.value for s in exposed if s.name.startswith("nginx_")} == {
        "nginx_up": 1, "nginx_connections_active": 3, "nginx_connections_reading": 0, "nginx_connections_writing": 1,
        "nginx_connections_waiting": 2, "nginx_connections_accepted_total": 17, "nginx_connections_handled_total": 16,
        "nginx_http_requests_total": 42,
    }  # fmt: skip
    assert fleet._parse_stub_status("<html>502 Bad Gateway</html>") is None
