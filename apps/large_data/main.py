"""Large data.

Ten million points of an instrument's trace, shared by every session of a worker. The browser gets a min/max
decimation of what it shows (two points per pixel column, as binary arrays), a new one after each pan or zoom,
and the raw samples once zoomed in far enough.
"""

from bokeh.core.property.descriptors import UnsetValueError
from bokeh.events import RangesUpdate
from bokeh.models import ColumnDataSource, Div, Range1d
from bokeh.plotting import curdoc, figure
from decimation import build_series, window

COLUMNS = 1000  # the pixel columns assumed until the browser has laid out the plot

doc = curdoc()
context = doc.session_context
# Under a server, the worker's one copy (server_lifecycle.py); alone (a check), a copy of its own.
series = getattr(context.server_context, "large_data", None) if context else None
series = series if series is not None else build_series()

plot = figure(
    title=f"{len(series.y):,} points",
    x_range=Range1d(0, series.span, bounds=(0, series.span)),
    x_axis_label="seconds",
    height=400,
    sizing_mode="stretch_width",
    tools="xpan,xwheel_zoom,xbox_zoom,reset",
    active_scroll="xwheel_zoom",
    output_backend="webgl",
)
source = ColumnDataSource(window(series, 0, series.span, COLUMNS), name="window")
plot.line("x", "y", source=source)
shown = Div(text="", name="shown")
pending = {"range": None, "callback": None}


def columns() -> int:
    try:
        return plot.inner_width or COLUMNS
    except UnsetValueError:  # not laid out in a browser yet
        return COLUMNS


def draw() -> None:
    pending["callback"] = None
    x0, x1 = pending["range"]
    source.data = window(series, x0, x1, columns())
    kind = "raw samples" if (x1 - x0) / series.dt <= 2 * columns() else "min/max per pixel column"
    shown.text = f"{len(source.data['x']):,} points drawn ({kind}) for {x1 - x0:,.3f} s"


def ranges_changed(event: RangesUpdate) -> None:
    # BokehJS sends RangesUpdate once a pan or zoom ends (a wheel zoom once the wheel rests); the ones already
    # queued by then are drawn once, for the last range.
    pending["range"] = (event.x0, event.x1)
    if pending["callback"] is None:
        pending["callback"] = doc.add_next_tick_callback(draw)


plot.on_event(RangesUpdate, ranges_changed)
pending["range"] = (0, series.span)
draw()
doc.add_root(plot)
doc.add_root(shown)
doc.title = "Large data"
