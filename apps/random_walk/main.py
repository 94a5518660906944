"""Random walk.

A live random walk on a time axis: one new step every half second, the last 100 points kept.
"""

from datetime import datetime

import numpy as np
from bokeh.events import DocumentReady
from bokeh.models import ColumnDataSource
from bokeh.plotting import curdoc, figure

POINTS, PERIOD_MS = 100, 500

doc = curdoc()
rng = np.random.default_rng()
source = ColumnDataSource(data={"time": [datetime.now()], "value": [0.0]}, name="walk")

plot = figure(title="Random walk", x_axis_type="datetime", height=400, sizing_mode="stretch_width")
plot.line("time", "value", source=source, line_width=2)
plot.scatter("time", "value", source=source, size=4)


def step() -> None:
    last = source.data["value"][-1]
    source.stream({"time": [datetime.now()], "value": [last + rng.standard_normal()]}, rollover=POINTS)


def start(event: DocumentReady) -> None:
    # Start only once a browser has rendered the page: a page request that never opens its websocket
    # (a crawler, a link preview) then costs no CPU until Bokeh discards its session.
    if not doc.session_callbacks:
        doc.add_periodic_callback(step, PERIOD_MS)


doc.on_event(DocumentReady, start)
doc.add_root(plot)
doc.title = "Random walk"
