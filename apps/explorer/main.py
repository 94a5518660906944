"""Explorer.

A signal to explore with widgets: the wave, its frequency and noise, a zoomable plot, points to select and a
table of them, and what the app works out from all of that. What a user did here comes back after a restart
(bokeh-stack resumes sessions): the status line says when a session was resumed, and on which worker.
"""

import os

import numpy as np
from bokeh.events import DocumentReady
from bokeh.layouts import column, row
from bokeh.models import Button, ColumnDataSource, DataTable, Div, Select, Slider, TableColumn, TabPanel, Tabs
from bokeh.plotting import curdoc, figure

from bokeh_stack import resumed

WAVES = {"sine": np.sin, "square": lambda t: np.sign(np.sin(t)), "sawtooth": lambda t: (t / np.pi) % 2 - 1}
POINTS = 200

doc = curdoc()
frequency = Slider(start=1, end=10, value=2, step=1, title="frequency", name="frequency")
wave = Select(title="wave", options=list(WAVES), value="sine", name="wave")
noise = Slider(start=0, end=1, value=0.1, step=0.05, title="noise", name="noise")
reseed = Button(label="new noise", name="reseed")
source = ColumnDataSource(data={"x": [], "y": []}, name="signal")
plot = figure(height=350, sizing_mode="stretch_width", tools="pan,box_zoom,box_select,reset", name="plot")
plot.scatter("x", "y", source=source, size=6, selection_color="crimson")
table = DataTable(source=source, columns=[TableColumn(field="x"), TableColumn(field="y")], height=350, name="table")
tabs = Tabs(tabs=[TabPanel(child=plot, title="plot"), TabPanel(child=table, title="table")], name="tabs")
summary = Div(name="summary")
status = Div(name="status", styles={"color": "#666"})
seed = 0


def derive() -> None:
    """The signal for the widgets' values, and its summary: what the app works out from what the user did."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 2 * np.pi, POINTS)
    y = WAVES[wave.value](frequency.value * x) + noise.value * rng.standard_normal(POINTS)
    source.data = {"x": x, "y": y}
    describe()


def describe() -> None:
    picked = source.selected.indices
    chosen = f"{len(picked)} selected, mean {np.mean(source.data['y'][picked]):.3f}" if picked else "none selected"
    summary.text = f"{wave.value} at {frequency.value} Hz, noise {noise.value:g} (seed {seed}): {chosen}"


def new_noise() -> None:
    global seed
    seed += 1
    derive()


for widget in (frequency, wave, noise):
    widget.on_change("value", lambda attr, old, new: derive())
source.selected.on_change("indices", lambda attr, old, new: describe())
reseed.on_click(new_noise)


def ready(event: DocumentReady) -> None:
    back = resumed(doc)  # known from the start of a resumed session's replay, which begins with this event
    status.text = f"worker {os.getpid()}" + (f", resumed with {back.messages} of your changes" if back else "")


derive()
doc.on_event(DocumentReady, ready)
doc.add_root(column(row(wave, frequency, noise, reseed), tabs, summary, status, sizing_mode="stretch_width"))
doc.title = "Explorer"
