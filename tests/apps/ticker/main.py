"""Ticker.

A light streaming test app: four times a second it streams the server's clock (ms since the epoch) into the
source `ticks`, from the first DocumentReady on, as the shipped apps start their periodic work. Light enough
that twenty Chromium tabs on two cores keep up with it.
"""

import time

from bokeh.events import DocumentReady
from bokeh.models import ColumnDataSource, Div
from bokeh.plotting import curdoc

doc = curdoc()
ticks = ColumnDataSource(data={"t": []}, name="ticks")


def tick() -> None:
    ticks.stream({"t": [time.time() * 1000]}, rollover=20)


def start(event: DocumentReady) -> None:
    if not doc.session_callbacks:
        doc.add_periodic_callback(tick, 250)


doc.on_event(DocumentReady, start)
doc.add_root(Div(text="ticking", name="ticker"))
doc.add_root(ticks)  # a source no view refers to must be a root to reach the browser
doc.title = "Ticker"
