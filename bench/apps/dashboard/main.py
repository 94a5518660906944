"""Dashboard.

The bench's page-view app: a typical small dashboard (a line of 200 points, a slider, a text), which records every
execution of its code, one line per session built, in $COUNTER_RECORD_FILE (the format of tests/apps/counter).
"""

import os
import socket

import numpy as np
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div, Slider
from bokeh.plotting import curdoc, figure

doc = curdoc()
record = os.environ.get("COUNTER_RECORD_FILE")
if record and doc.session_context:
    port = os.environ.get("SUPERVISOR_PROCESS_NAME", "standalone_0").rsplit("_", 1)[1]
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{port} {doc.session_context.id} dashboard {socket.gethostname()}\n".encode())
    finally:
        os.close(fd)

x = np.linspace(0, 4 * np.pi, 200)
source = ColumnDataSource(data={"x": x, "y": np.sin(x)})
plot = figure(title="A wave", height=300, sizing_mode="stretch_width")
plot.line("x", "y", source=source, line_width=2)
frequency = Slider(title="Frequency", start=0.1, end=5, step=0.1, value=1)


def change(attr: str, old: float, new: float) -> None:
    source.data = {"x": x, "y": np.sin(new * x)}


frequency.on_change("value", change)
doc.add_root(column(frequency, plot, Div(text="A small dashboard"), sizing_mode="stretch_width"))
doc.title = "Dashboard"
