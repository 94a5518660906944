"""Cosine.

A sine wave whose amplitude and line alpha follow a cosine, updated every 50 ms, over a reference curve read
from the app's data/ directory.
"""

import csv
from pathlib import Path

import numpy as np
from bokeh.driving import cosine
from bokeh.events import DocumentReady
from bokeh.plotting import curdoc, figure

PERIOD_MS = 50

doc = curdoc()
x = np.linspace(0, 4 * np.pi, 80)
y = np.sin(x)

with open(Path(__file__).parent / "data" / "reference.csv", newline="") as f:
    rows = list(csv.DictReader(f))
reference_x = [float(row["x"]) for row in rows]
reference_y = [float(row["y"]) for row in rows]

plot = figure(title="Cosine", height=400, sizing_mode="stretch_width", y_range=(-1.2, 1.2))
plot.line(reference_x, reference_y, color="#999999", line_dash="dashed", line_width=2, legend_label="reference")
wave = plot.line(x, y, color="navy", line_width=4, legend_label="sin(x) x cos(t)")
plot.legend.location = "bottom_left"


@cosine(w=0.03)
def update(step: float) -> None:
    wave.data_source.data["y"] = y * step
    wave.glyph.line_alpha = 1 - 0.8 * abs(step)


def start(event: DocumentReady) -> None:
    # Start only once a browser has rendered the page (see random_walk).
    if not doc.session_callbacks:
        doc.add_periodic_callback(update, PERIOD_MS)


doc.on_event(DocumentReady, start)
doc.add_root(plot)
doc.title = "Cosine"
