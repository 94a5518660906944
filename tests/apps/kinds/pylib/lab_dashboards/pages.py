"""Function apps for the tests: each builds a session's document, as Bokeh's FunctionHandler runs it."""

import weakref

from bokeh.models import ColumnDataSource, Div
from bokeh.plotting import figure


def status(doc):
    """Instrument status.

    A function app: a plot streaming one point a second, built by status(doc) for each session.
    """
    source = ColumnDataSource({"x": [0], "y": [0]})
    plot = figure(height=200, width=400)
    plot.line("x", "y", source=source)

    def tick():
        x = source.data["x"][-1] + 1
        source.stream({"x": [x], "y": [x % 7]}, rollover=100)

    doc.add_periodic_callback(tick, 1000)
    doc.add_root(Div(text="status", name="hello"))
    doc.add_root(plot)


def sometimes(doc):
    """Fails for a page with ?fail=1 and serves every other page (each session's error is its own)."""
    request = doc.session_context.request if doc.session_context else None
    if request is not None and request.arguments.get("fail"):
        raise RuntimeError("asked to fail")
    doc.add_root(Div(text="served", name="hello"))


def broken(doc):
    """Always raises: its pages answer 500, the other apps serve."""
    raise ValueError("the broken function app failed")


_census_documents = weakref.WeakSet()


def census(doc):
    """Counts the Bokeh documents alive in this worker besides its own and earlier censuses': what closed sessions
    left behind."""
    import gc

    from bokeh.document import Document

    _census_documents.add(doc)
    gc.collect()
    alive = sum(1 for o in gc.get_objects() if isinstance(o, Document) and o not in _census_documents)
    doc.add_root(Div(text=str(alive), name="documents"))
