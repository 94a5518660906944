"""Large data, naively.

The same ten million points as apps/large_data, all of them in the plot's source: every page sends them all to
the browser, which pans and zooms without asking the server again.
"""

import numpy as np
from bokeh.models import ColumnDataSource
from bokeh.plotting import curdoc, figure
from decimation import build_series  # apps/large_data, on the workers' python_path (bench/large_data.py)

doc = curdoc()
context = doc.session_context
series = context.server_context.large_data if context else build_series()
source = ColumnDataSource({"x": np.arange(len(series.y)) * series.dt, "y": series.y}, name="window")
plot = figure(title=f"{len(series.y):,} points", height=400, sizing_mode="stretch_width", output_backend="webgl")
plot.line("x", "y", source=source)
doc.add_root(plot)
