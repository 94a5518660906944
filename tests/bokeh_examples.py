"""A corpus written after Bokeh's own example server apps (bokeh/examples/server/app: sliders, ohlc, selection
histogram, crossfilter, export_csv, contour and fourier animations, events, light/dark, patch, widgets), for
tests/test_equivalence.py: each `make_document(doc)` builds what its example builds, from the same kinds of models,
with its own data (Bokeh's sample data is not installed) and the same callbacks."""

from __future__ import annotations

import numpy as np
from bokeh.events import ButtonClick, DoubleTap, MouseWheel, Tap
from bokeh.layouts import column, gridplot, row
from bokeh.models import (
    Button,
    CheckboxGroup,
    ColorBar,
    ColumnDataSource,
    CustomJS,
    DataTable,
    DatePicker,
    DateRangeSlider,
    Div,
    HoverTool,
    LinearColorMapper,
    MultiChoice,
    NumberFormatter,
    RadioButtonGroup,
    RangeSlider,
    Select,
    Slider,
    Spinner,
    TableColumn,
    TabPanel,
    Tabs,
    TextAreaInput,
    TextInput,
    Toggle,
)
from bokeh.palettes import Viridis256
from bokeh.plotting import figure
from bokeh.plotting.contour import contour_data
from bokeh.themes import Theme

RNG_SEED = 12


def sliders(doc) -> None:
    """examples/server/app/sliders.py: a sine wave whose offset, amplitude, phase and frequency four sliders set."""
    x = np.linspace(0, 4 * np.pi, 200)
    source = ColumnDataSource(data={"x": x, "y": np.sin(x)})
    plot = figure(height=400, width=400, title="my sine wave", tools="crosshair,pan,reset,save,wheel_zoom")
    plot.line("x", "y", source=source, line_width=3, line_alpha=0.6)
    text = TextInput(title="title", value="my sine wave")
    offset = Slider(title="offset", value=0.0, start=-5.0, end=5.0, step=0.1)
    amplitude = Slider(title="amplitude", value=1.0, start=-5.0, end=5.0, step=0.1)
    phase = Slider(title="phase", value=0.0, start=0.0, end=2 * np.pi)
    freq = Slider(title="frequency", value=1.0, start=0.1, end=5.1, step=0.1)

    def update_title(attr, old, new):
        plot.title.text = text.value

    def update_data(attr, old, new):
        source.data = {"x": x, "y": amplitude.value * np.sin(freq.value * x + phase.value) + offset.value}

    text.on_change("value", update_title)
    for w in (offset, amplitude, phase, freq):
        w.on_change("value", update_data)
    doc.add_root(row(column(text, offset, amplitude, phase, freq), plot, width=800))
    doc.title = "Sliders"


def ohlc(doc) -> None:
    """examples/server/app/ohlc: a streamed price with moving averages and MACD, a theme, rollover, and a patch."""
    rng = np.random.default_rng(RNG_SEED)
    source = ColumnDataSource(
        {k: [] for k in ("time", "average", "low", "high", "open", "close", "ma", "macd", "macd9", "macdh", "color")}
    )
    p = figure(height=500, tools="xpan,xwheel_zoom,xbox_zoom,reset", x_axis_type=None, y_axis_location="right")
    p.x_range.follow, p.x_range.follow_interval, p.x_range.range_padding = "end", 100, 0
    p.line(x="time", y="average", alpha=0.2, line_width=3, color="navy", source=source)
    p.line(x="time", y="ma", alpha=0.8, line_width=2, color="orange", source=source)
    p.segment(x0="time", y0="low", x1="time", y1="high", line_width=2, color="black", source=source)
    p.segment(x0="time", y0="open", x1="time", y1="close", line_width=8, color="color", source=source)
    p2 = figure(height=250, x_range=p.x_range, tools="xpan,xwheel_zoom,xbox_zoom,reset", y_axis_location="right")
    p2.line(x="time", y="macd", color="red", source=source)
    p2.line(x="time", y="macd9", color="blue", source=source)
    p2.segment(x0="time", y0=0, x1="time", y1="macdh", line_width=6, color="black", alpha=0.5, source=source)
    mean, stddev = (
        Slider(title="mean", value=0, start=-0.01, end=0.01, step=0.001),
        Slider(title="stddev", value=0.04, start=0.01, end=0.1, step=0.01),
    )
    mavg = Select(value="10", options=["10", "20", "50", "100"])
    state = {"t": 0, "price": 100.0}

    def update():
        state["t"] += 1
        change = float(rng.normal(mean.value, stddev.value))
        open_, close = state["price"], state["price"] + change
        state["price"] = close
        new = {
            "time": [state["t"]],
            "open": [open_],
            "high": [max(open_, close) + 0.1],
            "low": [min(open_, close) - 0.1],
            "close": [close],
            "average": [(open_ + close) / 2],
            "ma": [close],
            "macd": [change],
            "macd9": [change / 2],
            "macdh": [change / 2],
            "color": ["#D5E1DD" if close > open_ else "#F2583E"],
        }
        source.stream(new, 300)
        if state["t"] > 1:
            source.patch({"ma": [(len(source.data["ma"]) - 1, close * 0.99)]})

    doc.add_root(column(row(mean, stddev, mavg), gridplot([[p], [p2]], toolbar_location="left", width=1000)))
    doc.add_periodic_callback(update, 50)
    doc.theme = Theme(json={"attrs": {"Plot": {"background_fill_color": "#dddddd"}, "Grid": {"grid_line_alpha": 0.5}}})
    doc.title = "OHLC"


def selection_histogram(doc) -> None:
    """examples/server/app/selection_histogram.py: a scatter with marginal histograms that follow the selection."""
    rng = np.random.default_rng(RNG_SEED)
    x = np.hstack((rng.normal(2, 1, 500), rng.normal(-2, 0.5, 500)))
    y = np.hstack((rng.normal(2, 0.5, 500), rng.normal(-2, 1, 500)))
    source = ColumnDataSource(data={"x": x, "y": y})
    p = figure(tools="pan,wheel_zoom,box_select,lasso_select,reset", width=600, height=600, title="Linked Histograms")
    r = p.scatter("x", "y", source=source, size=3, color="#3A5785", alpha=0.6)
    hhist, hedges = np.histogram(x, bins=20)
    ph = figure(toolbar_location=None, width=p.width, height=200, x_range=p.x_range, y_range=(0, hhist.max() * 1.1))
    ph.quad(bottom=0, left=hedges[:-1], right=hedges[1:], top=hhist, color="white", line_color="#3A5785")
    selected = ph.quad(bottom=0, left=hedges[:-1], right=hedges[1:], top=np.zeros(20), alpha=0.5, color="#3A5785")

    def update(attr, old, new):
        inds = new if len(new) else range(len(x))
        selected.data_source.data["top"], _ = np.histogram(x[list(inds)], bins=hedges)

    r.data_source.selected.on_change("indices", update)
    doc.add_root(column(p, ph))
    doc.title = "Selection Histogram"


def crossfilter(doc) -> None:
    """examples/server/app/crossfilter: axes, size and colour chosen from columns by Selects; a categorical axis."""
    rng = np.random.default_rng(RNG_SEED)
    columns = {"cyl": rng.choice(["4", "6", "8"], 80), "mpg": rng.uniform(10, 40, 80), "hp": rng.uniform(50, 250, 80)}
    x = Select(title="X-Axis", value="cyl", options=list(columns))
    y = Select(title="Y-Axis", value="hp", options=list(columns))
    layout = row(column(x, y, width=200), figure())

    def create_figure():
        kw = {"x_range": sorted(set(columns["cyl"]))} if x.value == "cyl" else {}
        p = figure(height=600, width=800, tools="pan,box_zoom,hover,reset", **kw)
        p.xaxis.axis_label, p.yaxis.axis_label = x.value, y.value
        p.scatter(x=columns[x.value], y=columns[y.value], size=9, color="#31AADE", line_color="white", alpha=0.6)
        return p

    def update(attr, old, new):
        layout.children[1] = create_figure()

    for control in (x, y):
        control.on_change("value", update)
    layout.children[1] = create_figure()
    doc.add_root(layout)
    doc.title = "Crossfilter"


def export_csv(doc) -> None:
    """examples/server/app/export_csv: a salary table filtered by a range slider, a button with a CustomJS."""
    rng = np.random.default_rng(RNG_SEED)
    names = [f"Employee {i}" for i in range(60)]
    salaries = rng.integers(20_000, 200_000, 60)
    years = rng.integers(0, 30, 60)
    source = ColumnDataSource(data={})
    slider = RangeSlider(title="Max Salary", start=10000, end=200000, value=(10000, 150000), step=1000)

    def update():
        keep = (salaries >= slider.value[0]) & (salaries <= slider.value[1])
        source.data = {
            "name": [n for n, k in zip(names, keep, strict=True) if k],
            "salary": salaries[keep],
            "years_experience": years[keep],
        }

    slider.on_change("value", lambda attr, old, new: update())
    button = Button(label="Download", button_type="success")
    button.js_on_event("button_click", CustomJS(args={"source": source}, code="console.log(source.data)"))
    table = DataTable(
        source=source,
        columns=[
            TableColumn(field="name", title="Employee Name"),
            TableColumn(field="salary", title="Income", formatter=NumberFormatter(format="$0,0.00")),
            TableColumn(field="years_experience", title="Experience (years)"),
        ],
        width=800,
    )
    doc.add_root(row(column(slider, button), table))
    doc.title = "Export CSV"
    update()


def contour_animated(doc) -> None:
    """examples/server/app/contour_animated.py: filled contours with a colour bar, recomputed every tick."""
    x, y = np.meshgrid(np.linspace(0, 3, 40), np.linspace(0, 2, 30))
    fig = figure(width=600, height=450, x_range=(0, 3), y_range=(0, 2))
    levels = np.linspace(-1, 1, 9)
    state = {"phase": 0.0}

    def z():
        return np.sin(3 * (x + state["phase"])) * np.cos(2 * y)

    contour = fig.contour(x, y, z(), levels, fill_color=Viridis256, line_color="black")
    fig.add_layout(contour.construct_color_bar(), "right")

    def update():
        state["phase"] += 0.1
        contour.set_data(contour_data(x, y, z(), levels))

    doc.add_root(fig)
    doc.add_periodic_callback(update, 100)
    doc.title = "Contour animated"


def fourier_animated(doc) -> None:
    """examples/server/app/fourier_animated.py: circles and lines moved every tick by replacing sources' data."""
    n = 100
    t = np.linspace(0, 2 * np.pi, n)
    lines = ColumnDataSource(data={"x": t, "y": np.sin(t)})
    circles = ColumnDataSource(data={"x": [0.0], "y": [0.0], "r": [1.0]})
    p = figure(title="Fourier series", width=600, height=300, x_range=(-2.5, 7), y_range=(-2, 2), tools="")
    p.line("x", "y", source=lines, line_width=2)
    p.circle("x", "y", radius="r", source=circles, fill_color=None, line_color="navy")
    state = {"i": 0}

    def update():
        state["i"] += 1
        phase = state["i"] * 0.05
        lines.data = {"x": t, "y": np.sin(t + phase) + np.sin(3 * (t + phase)) / 3}
        circles.data.update(x=[np.cos(phase)], y=[np.sin(phase)])

    doc.add_root(p)
    doc.add_periodic_callback(update, 30)
    doc.title = "Fourier animated"


def events_app(doc) -> None:
    """examples/server/app/events_app.py: Python callbacks on UI events (clicks, taps, wheel) writing into a Div."""
    button = Button(label="Button", button_type="success")
    p = figure(width=600, height=400, tools="pan,wheel_zoom,box_zoom,reset,tap")
    p.scatter(np.arange(10), np.arange(10) ** 0.5, size=15)
    div = Div(width=400, height=400, height_policy="fixed")

    def display_event(event):
        div.text = div.text + f"<p>{event.event_name} {getattr(event, 'x', '')}</p>"

    button.on_event(ButtonClick, display_event)
    for event in (Tap, DoubleTap, MouseWheel):
        p.on_event(event, display_event)
    doc.add_root(row(column(button, p), div))
    doc.title = "Events"


def light_dark(doc) -> None:
    """examples/server/app/light_dark.py: a toggle switching the document's theme while the page is open."""
    p = figure(title="Light and dark", width=500, height=300)
    p.line([1, 2, 3, 4], [4, 2, 3, 1], line_width=2)
    toggle = Toggle(label="Dark mode", active=False)

    def switch(attr, old, new):
        doc.theme = "dark_minimal" if new else "caliber"

    toggle.on_change("active", switch)
    doc.theme = "caliber"
    doc.add_root(column(toggle, p))
    doc.title = "Light and dark"


def patch_app(doc) -> None:
    """examples/server/app/patch_app.py: columns patched in place by index and slice, from a button."""
    source = ColumnDataSource(data={"x": list(range(10)), "y": [i * i for i in range(10)], "c": ["red"] * 10})
    p = figure(width=500, height=300)
    p.scatter("x", "y", color="c", size=12, source=source)
    button = Button(label="Patch")

    def patch():
        source.patch({"y": [(0, 42), (slice(2, 4), [7, 8])], "c": [(5, "blue")]})

    button.on_event(ButtonClick, patch)
    doc.add_root(column(button, p))
    doc.title = "Patch"


def widgets(doc) -> None:
    """examples/interaction/widgets (served): most input widgets, tabs, and a hover with tooltips on an image."""
    rng = np.random.default_rng(RNG_SEED)
    image = figure(width=400, height=300, tools="hover", tooltips=[("value", "@image")])
    mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
    image.image(image=[rng.random((20, 20))], x=0, y=0, dw=10, dh=10, color_mapper=mapper)
    image.add_layout(ColorBar(color_mapper=mapper), "right")
    image.add_tools(HoverTool(tooltips=[("x", "$x")]))
    out = Div(text="")
    controls = [
        DatePicker(title="Date", value="2026-01-01", min_date="2025-01-01", max_date="2027-12-31"),
        DateRangeSlider(title="Dates", start="2026-01-01", end="2026-12-31", value=("2026-03-01", "2026-06-01")),
        MultiChoice(title="Choose", value=["a"], options=["a", "b", "c"]),
        CheckboxGroup(labels=["one", "two", "three"], active=[0]),
        RadioButtonGroup(labels=["x", "y", "z"], active=1),
        Spinner(title="Spin", low=0, high=10, step=0.5, value=2),
        TextAreaInput(title="Notes", value="", rows=4),
    ]
    for control in controls:
        attr = "active" if hasattr(control, "active") else "value"
        control.on_change(attr, lambda attr, old, new: setattr(out, "text", f"{attr}: {new}"))
    tabs = Tabs(tabs=[TabPanel(child=image, title="image"), TabPanel(child=column(*controls), title="inputs")])
    doc.add_root(column(tabs, out))
    doc.title = "Widgets"


CORPUS = (
    sliders,
    ohlc,
    selection_histogram,
    crossfilter,
    export_csv,
    contour_animated,
    fourier_animated,
    events_app,
    light_dark,
    patch_app,
    widgets,
)
