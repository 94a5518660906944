"""Leaky.

A test app that leaks LEAK_MB of memory with every session it builds, as an app that caches each session's data
in a module that outlives the session does (bokeh #11477): the worker's resident memory grows until it is replaced.
"""

import builtins

from bokeh.models import Div
from bokeh.plotting import curdoc

LEAK_MB = 4

doc = curdoc()
kept = builtins.__dict__.setdefault("_leaky_app_kept", [])
if doc.session_context:  # a session; not `bokeh-stack check` running the app once
    kept.append(b"x" * (LEAK_MB << 20))  # written, so resident
doc.add_root(Div(text=f"this worker has leaked {len(kept) * LEAK_MB} MB", name="leak"))
doc.title = "Leaky"
