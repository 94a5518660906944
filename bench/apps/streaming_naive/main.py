"""Streaming, naively.

The bench's reference for streaming capacity: apps/streaming as first written, with two sources streamed on each
tick, so every session gets two PATCH-DOC messages ten times a second (apps/streaming sends one).
"""

import time

import numpy as np
from bokeh.events import DocumentReady
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataRange1d
from bokeh.palettes import Viridis256
from bokeh.plotting import curdoc, figure

PERIOD_MS, BATCH, CIRCLES, SERIES = 100, 5, 500, 600

doc = curdoc()
rng = np.random.default_rng()
circles = ColumnDataSource(data={"x": [], "y": [], "size": [], "color": []}, name="circles")
# `t` is the server's clock (ms since the epoch) when the point was made: clients can measure the delay.
series = ColumnDataSource(data={"t": [], "value": []}, name="series")

scatter = figure(title="Streamed circles", x_range=(0, 1), y_range=(0, 1), height=350, sizing_mode="stretch_width")
scatter.scatter("x", "y", size="size", color="color", alpha=0.6, source=circles)

timeline = figure(
    title="Following the end",
    x_axis_type="datetime",
    height=250,
    sizing_mode="stretch_width",
    x_range=DataRange1d(follow="end", follow_interval=20_000, range_padding=0),
)
timeline.line("t", "value", source=series, line_width=2)


def update() -> None:
    circles.stream(
        {
            "x": rng.random(BATCH).tolist(),
            "y": rng.random(BATCH).tolist(),
            "size": (rng.random(BATCH) * 20 + 5).tolist(),
            "color": [Viridis256[i] for i in rng.integers(0, 256, BATCH)],
        },
        rollover=CIRCLES,
    )
    last = series.data["value"][-1] if series.data["value"] else 0.0
    series.stream({"t": [time.time() * 1000], "value": [last + rng.standard_normal()]}, rollover=SERIES)


def start(event: DocumentReady) -> None:
    # Start only once a browser has rendered the page (see random_walk).
    if not doc.session_callbacks:
        doc.add_periodic_callback(update, PERIOD_MS)


doc.on_event(DocumentReady, start)
doc.add_root(column(scatter, timeline, sizing_mode="stretch_width"))
doc.title = "Streaming"
