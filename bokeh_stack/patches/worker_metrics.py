"""A worker's own metrics, in the Prometheus text format at <prefix>/_bokeh_stack/metrics on the worker's port.

Bokeh counts nothing an operator needs, so each count is taken where Bokeh does the thing, by the same guarded
replacements as the fixes (fixes.Fix: checked against the installed Bokeh before anything is replaced). Gauges
(sessions, websockets) are read from Bokeh's own state when scraped, so they cannot drift. The ops process
(bokeh_stack/daemons/ops.py) scrapes every worker and adds the `worker` and `pool` labels; nginx never routes this path.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from bokeh_stack.config import limits
from bokeh_stack.config.expect import Expect
from bokeh_stack.config.handoff import restart_counts
from bokeh_stack.config.topology import route
from bokeh_stack.patches import one_write
from bokeh_stack.patches.patching import Fix, _replace

# Where supervisord's restart counter (bokeh_stack/daemons/restarts.py) keeps its counts; supervisord names the process.
RESTARTS_FILE_ENV = "BOKEH_STACK_RESTARTS_FILE"
PROCESS_NAME_ENV = "SUPERVISOR_PROCESS_NAME"
DISCARD_REASONS = ("closed", "orphan", "expired")
BUILD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The event loop runs a timer this often; the gauge is the largest delay in the last LAG_WINDOW_S.
LAG_INTERVAL_S = 0.25
LAG_WINDOW_S = 10.0


def app_label(url: str) -> str:
    """An app's label: its route without the slashes (`/cosine` -> `cosine`)."""
    return url.strip("/") or "/"


class LoopLag:
    """How late the event loop runs a timer: a blocked loop (a slow callback, a long gc) shows up here."""

    def __init__(self, interval_s: float = LAG_INTERVAL_S, window_s: float = LAG_WINDOW_S) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque()
        self._loop = None
        self._due = 0.0

    def start(self, loop) -> None:
        self._loop = loop
        self._due = loop.time() + self.interval_s
        loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.samples.append((now, max(0.0, now - self._due)))
        while self.samples and self.samples[0][0] < now - self.window_s:
            self.samples.popleft()
        self._due = now + self.interval_s
        self._loop.call_at(self._due, self._tick)

    def seconds(self) -> float:
        return max((lag for _, lag in self.samples), default=0.0)


class WorkerMetrics:
    """Every metric of one worker, in a registry of its own."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series double every counter for nothing an operator reads
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.created = Counter(
            "bokeh_stack_sessions_created", "Sessions created (an app's document built)", ["app"], registry=registry
        )
        self.discarded = Counter(
            "bokeh_stack_sessions_discarded",
            "Sessions discarded: closed (its websockets closed), orphan (never connected), expired (asked to end)",
            ["app", "reason"],
            registry=registry,
        )
        self.resumed = Counter(
            "bokeh_stack_sessions_resumed",
            "Sessions a tab reconnected to on a worker that did not have them: resumed (as its user left it), fresh "
            "(nothing kept for its token), failed (the store or the replay failed: a fresh session)",
            ["app", "outcome"],
            registry=registry,
        )
        self.received = Counter("bokeh_stack_messages_received", "Bokeh protocol messages received", registry=registry)
        self.sent = Counter("bokeh_stack_messages_sent", "Bokeh protocol messages sent", registry=registry)
        self.sent_bytes = Counter("bokeh_stack_sent_bytes", "Bytes sent in websocket frames", registry=registry)
        self.build = Histogram(
            "bokeh_stack_document_build_seconds",
            "Time to build a new session's document (the app's code run for it)",
            ["app"],
            buckets=BUILD_BUCKETS,
            registry=registry,
        )
        ProcessCollector(registry=registry)
        self.lag = LoopLag()
        self.tornado = None  # the worker's BokehTornado, once made
        registry.register(_LiveState(self))

    def know_apps(self, urls) -> None:
        """Every app's series from the start (at 0), so that rates and alerts do not wait for a first event."""
        for url in urls:
            app = app_label(url)
            self.created.labels(app)
            self.build.labels(app)
            for reason in DISCARD_REASONS:
                self.discarded.labels(app, reason)
            for outcome in limits.RESUME_OUTCOMES:
                self.resumed.labels(app, outcome)


class _LiveState:
    """Gauges read from Bokeh's state at each scrape, and the restart count supervisord's listener keeps."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []  # nothing to check at registration; collect() reads live state

    def collect(self):
        tornado = self.metrics.tornado
        sessions = GaugeMetricFamily(
            "bokeh_stack_sessions", "Sessions: connected (an open websocket) or unconnected", labels=["app", "state"]
        )
        websockets = GaugeMetricFamily("bokeh_stack_websocket_connections", "Open websocket connections")
        callbacks = GaugeMetricFamily(
            "bokeh_stack_session_callbacks",
            "Periodic, timeout and next-tick callbacks of the live sessions' documents",
            labels=["app"],
        )
        if tornado is not None:
            for url, context in tornado.applications.items():
                all_sessions = list(context.sessions)
                connected = sum(1 for s in all_sessions if s.connection_count)
                sessions.add_metric([app_label(url), "connected"], connected)
                sessions.add_metric([app_label(url), "unconnected"], len(all_sessions) - connected)
                callbacks.add_metric([app_label(url)], sum(len(s.document.session_callbacks) for s in all_sessions))
            websockets.add_metric([], len(tornado._clients))
        yield sessions
        yield websockets
        yield callbacks
        yield GaugeMetricFamily("bokeh_stack_worker_threads", "Threads of the worker process", threading.active_count())
        yield GaugeMetricFamily(
            "bokeh_stack_event_loop_lag_seconds",
            f"Largest delay of the event loop running a timer, over the last {LAG_WINDOW_S:.0f} s",
            value=self.metrics.lag.seconds(),
        )
        restart_count = _restarts()
        if restart_count is not None:
            yield CounterMetricFamily(
                "bokeh_stack_worker_restarts", "Times supervisord restarted this worker after it exited", restart_count
            )


def _restarts() -> int | None:
    path, name = os.environ.get(RESTARTS_FILE_ENV), os.environ.get(PROCESS_NAME_ENV)
    return restart_counts(path).get(name, 0) if path and name else None


_metrics: WorkerMetrics | None = None  # made by install(): importing this module registers nothing


def current() -> WorkerMetrics | None:
    return _metrics


def install() -> None:
    """Count sessions, discards, messages and document builds; serve the metrics on the worker's own port."""
    from bokeh.server.contexts import ApplicationContext
    from bokeh.server.session import ServerSession
    from bokeh.server.tornado import BokehTornado
    from bokeh.server.views.ws import WSHandler
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
    from tornado.web import RequestHandler

    global _metrics
    metrics = _metrics = WorkerMetrics()

    class MetricsHandler(RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", CONTENT_TYPE_LATEST)
            self.set_header("Cache-Control", "no-store")
            self.write(generate_latest(metrics.registry))

    tornado_init = BokehTornado.__init__

    def init_with_metrics(self, applications, *args, extra_patterns=None, **kwargs) -> None:
        extra_patterns = [*(extra_patterns or []), (route("worker_metrics"), MetricsHandler)]
        tornado_init(self, applications, *args, extra_patterns=extra_patterns, **kwargs)
        metrics.tornado = self
        metrics.know_apps(self.applications)

    tornado_start = BokehTornado.start

    def start_with_lag(self) -> None:
        tornado_start(self)
        metrics.lag.start(self.io_loop.asyncio_loop)

    create_session = ApplicationContext.create_session_if_needed

    async def create_timed(self, session_id, request=None, token=None):
        if session_id in self._sessions or session_id in self._pending_sessions:
            return await create_session(self, session_id, request, token)
        start = time.perf_counter()
        session = await create_session(self, session_id, request, token)
        app = app_label(self.url)
        metrics.build.labels(app).observe(time.perf_counter() - start)
        metrics.created.labels(app).inc()
        return session

    subscribe = ServerSession.subscribe

    def subscribe_marked(self, connection) -> None:
        self._bokeh_stack_connected = True
        subscribe(self, connection)

    discard = ApplicationContext._discard_session

    async def discard_counted(self, session, should_discard) -> None:
        if session.expiration_requested:
            reason = "expired"
        else:
            reason = "closed" if getattr(session, "_bokeh_stack_connected", False) else "orphan"
        await discard(self, session, should_discard)
        if session.id not in self._sessions:
            metrics.discarded.labels(app_label(self.url), reason).inc()

    handle = WSHandler._handle

    async def handle_counted(self, message):
        metrics.received.inc()
        return await handle(self, message)

    send_message = WSHandler.send_message

    async def send_counted(self, message) -> None:
        metrics.sent.inc()
        await send_message(self, message)

    write_message = WSHandler.write_message

    async def write_counted(self, message, binary: bool = False, locked: bool = True) -> None:
        if isinstance(message, bytes):
            metrics.sent_bytes.inc(len(message))
        elif isinstance(message, str):
            metrics.sent_bytes.inc(len(message) if message.isascii() else len(message.encode()))
        await write_message(self, message, binary, locked)

    def written_counted(messages: int, payload_bytes: int) -> None:  # one write per message (patches/one_write.py)
        metrics.sent.inc(messages)
        metrics.sent_bytes.inc(payload_bytes)

    _replace(one_write, "written", written_counted)
    _replace(BokehTornado, "__init__", init_with_metrics)
    _replace(BokehTornado, "start", start_with_lag)
    _replace(ApplicationContext, "create_session_if_needed", create_timed)
    _replace(ServerSession, "subscribe", subscribe_marked)
    _replace(ApplicationContext, "_discard_session", discard_counted)
    _replace(WSHandler, "_handle", handle_counted)
    _replace(WSHandler, "send_message", send_counted)
    _replace(WSHandler, "write_message", write_counted)


CONTEXT = "bokeh.server.contexts:ApplicationContext"
TORNADO = "bokeh.server.tornado:BokehTornado"
WS = "bokeh.server.views.ws:WSHandler"
FIXES = (
    Fix(
        "metrics",
        install,
        (
            Expect(f"{TORNADO}.__init__", params=("applications", "extra_patterns")),
            Expect(f"{TORNADO}.start", coroutine=False),
            Expect(f"{TORNADO}.new_connection", uses=("_clients",)),
            Expect(f"{TORNADO}.applications"),
            Expect(f"{TORNADO}.io_loop"),
            Expect(
                f"{CONTEXT}.create_session_if_needed",
                coroutine=True,
                params=("session_id", "request", "token"),
                uses=("_sessions", "_pending_sessions", "initialize_document"),
            ),
            Expect(f"{CONTEXT}.sessions"),
            Expect(f"{CONTEXT}.url"),
            Expect(f"{CONTEXT}._discard_session", coroutine=True, uses=("_sessions",)),
            Expect("bokeh.server.session:ServerSession.subscribe", coroutine=False, params=("connection",)),
            Expect("bokeh.server.session:ServerSession.expiration_requested"),
            Expect("bokeh.server.session:ServerSession.connection_count"),
            Expect("bokeh.server.session:ServerSession.document"),
            Expect("bokeh.document.document:Document.session_callbacks"),
            Expect(f"{WS}._handle", coroutine=True, params=("message",)),
            Expect(f"{WS}.send_message", coroutine=True, params=("message",)),
            Expect(f"{WS}.write_message", coroutine=True, params=("message", "binary", "locked")),
            Expect(f"{WS}._async_open", uses=("new_connection",)),
        ),
    ),
)
