"""Dashboard.

The bench's page-view app, a typical dashboard page of about a hundred models: two linked figures of 500 points, a
slider, a select and a 50-row table. It records every execution of its code, one line per session built, in
$COUNTER_RECORD_FILE (the format of tests/apps/counter).
"""

import os
import socket

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, DataTable, NumberFormatter, Select, Slider, TableColumn
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

SHAPES = {"sine": np.sin, "cosine": np.cos, "square": lambda v: np.sign(np.sin(v))}
x = np.linspace(0, 4 * np.pi, 500)
source = ColumnDataSource(data={"x": x, "y": np.sin(x), "dy": np.cos(x)})

wave = figure(title="Signal", height=300, sizing_mode="stretch_width", tools="pan,wheel_zoom,box_select,reset")
wave.line("x", "y", source=source, line_width=2)
wave.scatter("x", "y", source=source, size=4, alpha=0.5)
slope = figure(title="Slope", height=300, x_range=wave.x_range, sizing_mode="stretch_width", tools=wave.tools)
slope.line("x", "dy", source=source, line_width=2, color="firebrick")

frequency = Slider(title="Frequency", start=0.1, end=5, step=0.1, value=1)
shape = Select(title="Shape", value="sine", options=list(SHAPES))
table = DataTable(
    source=ColumnDataSource(data={"x": x[:50], "y": np.sin(x[:50])}),
    columns=[TableColumn(field=f, title=f, formatter=NumberFormatter(format="0.000")) for f in ("x", "y")],
    height=280,
    sizing_mode="stretch_width",
)


def update(attr: str, old: object, new: object) -> None:
    y = SHAPES[shape.value](frequency.value * x)
    source.data = {"x": x, "y": y, "dy": np.gradient(y, x)}
    table.source.data = {"x": x[:50], "y": y[:50]}


frequency.on_change("value", update)
shape.on_change("value", update)
doc.add_root(column(row(frequency, shape), wave, slope, table, sizing_mode="stretch_width"))
doc.title = "Dashboard"
