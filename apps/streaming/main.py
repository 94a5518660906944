"""Streaming.

Coloured circles streamed ten times a second with a rollover, and a time series whose x range follows the
newest data.
"""

import time

import numpy as np
from bokeh.events import DocumentReady
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataRange1d
from bokeh.palettes import Viridis256
from bokeh.plotting import curdoc, figure

PERIOD_MS, KEEP = 100, 600

doc = curdoc()
rng = np.random.default_rng()
# Both plots draw from one source, so each tick is one stream() call: one message to the browser. Every stream()
# (or other change) is a message of its own, and its cost in the worker is mostly per message, not per value.
# `t` is the server's clock (ms since the epoch) when the point was made: clients can measure the delay.
source = ColumnDataSource(data={"t": [], "value": [], "x": [], "y": [], "size": [], "color": []}, name="stream")

scatter = figure(title="Streamed circles", x_range=(0, 1), y_range=(0, 1), height=350, sizing_mode="stretch_width")
scatter.scatter("x", "y", size="size", color="color", alpha=0.6, source=source)

timeline = figure(
    title="Following the end",
    x_axis_type="datetime",
    height=250,
    sizing_mode="stretch_width",
    x_range=DataRange1d(follow="end", follow_interval=20_000, range_padding=0),
)
timeline.line("t", "value", source=source, line_width=2)


def update() -> None:
    last = source.data["value"][-1] if source.data["value"] else 0.0
    source.stream(
        {
            "t": [time.time() * 1000],
            "value": [last + rng.standard_normal()],
            "x": [rng.random()],
            "y": [rng.random()],
            "size": [rng.random() * 20 + 5],
            "color": [Viridis256[rng.integers(0, 256)]],
        },
        rollover=KEEP,
    )


def start(event: DocumentReady) -> None:
    # Start only once a browser has rendered the page (see random_walk).
    if not doc.session_callbacks:
        doc.add_periodic_callback(update, PERIOD_MS)


doc.on_event(DocumentReady, start)
doc.add_root(column(scatter, timeline, sizing_mode="stretch_width"))
doc.title = "Streaming"
