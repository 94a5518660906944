"""Server and session hooks of the lifecycle app.

The worker keeps one LifecycleState (on the server context) that main.py updates: the sessions alive, and
when each session's update callback last ran. A session that ends must leave nothing running behind it.
"""

import logging
import time

log = logging.getLogger("lifecycle")


class LifecycleState:
    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.last_tick: dict[str, float] = {}  # session id -> monotonic time of its callback's last run
        self.census: set[str] = set()  # sessions that only count the others (main.py, ?census)

    def ticking(self, within_s: float) -> int:
        """Callbacks that really ran in the last `within_s` seconds: the ones still alive."""
        now = time.monotonic()
        return sum(1 for t in self.last_tick.values() if now - t < within_s)


def on_server_loaded(server_context):
    server_context.lifecycle = LifecycleState()
    log.info("lifecycle app loaded")


def on_server_unloaded(server_context):
    log.info("lifecycle app unloaded")


def on_session_created(session_context):
    session_context.server_context.lifecycle.sessions.add(session_context.id)


def on_session_destroyed(session_context):
    # Bokeh has already removed the document's periodic callbacks when this runs; what is left is the app's
    # own per-session state, and forgetting it here is what keeps a long-lived worker's memory flat.
    state = session_context.server_context.lifecycle
    state.sessions.discard(session_context.id)
    state.last_tick.pop(session_context.id, None)
    state.census.discard(session_context.id)
