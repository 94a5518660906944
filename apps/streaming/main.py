"""Streaming.

One instrument's readings streamed ten times a second to every tab: coloured circles with a rollover, and a time
series whose x range follows the newest data.
"""

import instrument
from bokeh.events import DocumentReady
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataRange1d
from bokeh.plotting import curdoc, figure

from bokeh_stack.feed import Feed

PERIOD_MS, KEEP = 100, 600

doc = curdoc()
# Every tab shows the same readings: the worker reads the instrument once per tick and sends one message per tab
# (a Feed), instead of each session computing and streaming its own. Both plots draw from one source, so a tick is
# one message to the browser.
feed = Feed.shared("instrument", instrument.read, period_ms=PERIOD_MS, rollover=KEEP)
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


def start(event: DocumentReady) -> None:
    # Start only once a browser has rendered the page (see random_walk).
    feed.attach(source)


doc.on_event(DocumentReady, start)
doc.add_root(column(scatter, timeline, sizing_mode="stretch_width"))
doc.title = "Streaming"
