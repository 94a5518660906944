"""Lifecycle.

Sliders set the update period and the number of points of a random line. Each session's update callback
starts when the page is shown and ends with the session; the worker's live counts are shown below
(add ?census to the URL to also count the documents in the worker's memory).
"""

import gc
import os
import time

import numpy as np
from bokeh.document import Document
from bokeh.events import DocumentReady
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div, Slider
from bokeh.plotting import curdoc, figure

doc = curdoc()
rng = np.random.default_rng()
context = doc.session_context
state = getattr(context.server_context, "lifecycle", None) if context else None  # None: not under a server
session_id = context.id if context else "standalone"

period = Slider(title="Update period (ms)", start=100, end=2000, step=100, value=500)
points = Slider(title="Points", start=10, end=500, step=10, value=100)
source = ColumnDataSource(data={"x": np.arange(points.value), "y": rng.random(points.value)})

plot = figure(title="A random line", height=350, sizing_mode="stretch_width")
plot.line("x", "y", source=source, line_width=2)


def counted(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


if state is not None:
    if "census" in context.request.arguments:
        state.census.add(session_id)  # a census (this page with ?census) counts what the other sessions left
    sessions = len(state.sessions - state.census)
    text = f"This worker (pid {os.getpid()}): {counted(sessions, 'session')}, "
    text += f"{counted(state.ticking(2.5), 'live update callback')}"
    if "census" in context.request.arguments:  # also count the documents in memory (walks the heap)
        gc.collect()  # what a collection frees is not left behind (the stack's workers collect in batches)
        documents = sum(
            isinstance(o, Document) and getattr(o.session_context, "id", None) not in state.census
            for o in gc.get_objects()
        )
        text += f", {counted(documents, 'document')} in memory"
    stats = Div(text=text)
else:
    stats = Div(text="Not running under a Bokeh server")
stats.css_classes = ["lifecycle-stats"]


def update() -> None:
    n = points.value
    source.data = {"x": np.arange(n), "y": rng.random(n)}
    if state is not None:
        state.last_tick[session_id] = time.monotonic()


def restart(attr: str, old: int, new: int) -> None:
    for callback in list(doc.session_callbacks):
        doc.remove_periodic_callback(callback)
    doc.add_periodic_callback(update, period.value)


def start(event: DocumentReady) -> None:
    # Start only once a browser has rendered the page (see random_walk).
    if not doc.session_callbacks:
        restart("value", None, period.value)


period.on_change("value", restart)
doc.on_event(DocumentReady, start)
doc.add_root(column(row(period, points, sizing_mode="stretch_width"), plot, stats, sizing_mode="stretch_width"))
doc.title = "Lifecycle"
