"""Numbers (and a few names) that nginx, supervisord, the workers and what reads them must agree on, each written
once and the others derived from it. The templates and the worker read them from here; tests/test_limits.py holds
each pair."""

from __future__ import annotations

# On SIGTERM a worker gives its open websockets this long to finish the message they are sending and close
# cleanly (bokeh_stack/patches/fixes.py, drain_on_sigterm) ...
DRAIN_TIMEOUT_S = 3
# ... and supervisord waits this long before it kills the worker: the drain plus time to exit.
STOP_WAIT_S = DRAIN_TIMEOUT_S + 2

# nginx reads request headers into at most this many buffers of this size (large_client_header_buffers): Bokeh's
# session tokens carry the page request's headers and cookies, so they can be large.
HEADER_BUFFERS = 4
HEADER_BUFFER_KB = 32
# A worker accepts larger headers than nginx lets through (with the headers nginx adds), so an oversized request
# gets nginx's 400 and never a 502 from a worker that hung up on it (tornado's own limit is 64 KiB).
WORKER_MAX_HEADER_BYTES = 2 * HEADER_BUFFERS * HEADER_BUFFER_KB * 1024


def websocket_read_timeout_s(keep_alive_ms: int) -> int:
    """How long nginx lets a websocket be silent: Bokeh pings every keep_alive_ms, so three pings, at least 60 s."""
    return max(60, 3 * keep_alive_ms // 1000)


# Sign-in forms one client address may post a minute, beyond a burst (nginx's guard against a flood; failed
# sign-ins have their own, lower limit in the sign-in process: settings auth.failed_per_minute).
SIGNIN_FORMS_PER_MIN = 30
SIGNIN_FORMS_BURST = 10

# A worker that has not answered the ops process (or sign-in's revocation) within this is reported down
# (bokeh_stack_worker_up 0): a whole scrape of a fleet stays under a second even when some worker hangs.
SCRAPE_TIMEOUT_S = 0.8

# What became of a session a tab reconnected to on a worker that did not have it (bokeh_stack/resume/): the label
# values of bokeh_stack_sessions_resumed_total, which the workers count and status and /ops show in this order.
RESUME_OUTCOMES = ("resumed", "fresh", "failed")

# Why a worker was replaced (settings recycle): the label values of bokeh_stack_worker_recycles_total, which the
# pools program counts (daemons/sizing.py decides) and the ops process exports.
RECYCLE_REASONS = ("rss", "age", "sessions")
