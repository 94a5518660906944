"""The worker fixes that touch how documents are built and serialized change nothing a browser receives: every
shipped app, the bench's dashboard and a corpus written after Bokeh's own example apps (tests/bokeh_examples.py)
are built the way a worker builds a session, then driven the way a user and the clock drive them (DocumentReady,
every periodic callback, every widget with a Python callback changed, every Python event handler fired). The
PULL-DOC reply and every PATCH-DOC message, buffers included, must be the same with the fixes as without them,
model ids aside (Bokeh numbers models per process)."""

from __future__ import annotations

import asyncio
import datetime
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.command.util import build_single_handler_application
from bokeh.document.callbacks import invoke_with_curdoc
from bokeh.document.events import DocumentPatchedEvent
from bokeh.events import ButtonClick, DocumentReady, RangesUpdate
from bokeh.protocol import Protocol

import tests.bokeh_examples as examples
from bokeh_stack import feed as feeds
from bokeh_stack.patches import fixes, patching
from bokeh_stack.resume import ids
from harness.sessions import application_context, build_session

ROOT = Path(__file__).resolve().parent.parent
APPS = {p.name: p for p in sorted((ROOT / "apps").iterdir()) if (p / "main.py").exists()}
APPS["dashboard"] = ROOT / "bench" / "apps" / "dashboard"
CASES = [*APPS, *(f.__name__ for f in examples.CORPUS)]
FROZEN_NOW = datetime.datetime(2026, 12, 6, 12, 0, 0)
# Bokeh's ids (p1234), and a session's own (resume/ids.py: p<tag>-<n>).
_ID = re.compile(r'"(p(?:[0-9a-f]{6}-)?\d+)"')


class FrozenDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return FROZEN_NOW.replace(tzinfo=tz)


def _new_value(model, attr: str):
    """What a user would change `attr` of `model` to, or None when this test does not know the widget."""
    value = getattr(model, attr)
    if attr == "indices":
        return list(range(0, 200, 3))
    if attr == "active":
        if isinstance(value, bool):
            return not value
        if isinstance(value, list):
            return [len(model.labels) - 1]
        return 0 if value else 1
    if attr != "value":
        return None
    kind = type(model).__name__
    if kind == "Slider":
        return model.end
    if kind == "Spinner":
        return model.high
    if kind == "RangeSlider":
        return (model.start, (model.start + model.end) / 2)
    if kind == "Select":
        last = model.options[-1]
        return last[0] if isinstance(last, tuple) else last
    if kind == "MultiChoice":
        return list(model.options[-2:])
    if kind in ("TextInput", "TextAreaInput"):
        return "changed"
    if kind == "DatePicker":
        return "2026-06-01"
    return None


def _events_for(model, name: str) -> list:
    if name == "button_click":
        return [ButtonClick(model)]
    if name == "rangesupdate":  # a zoom into the middle tenth, as BokehJS announces it
        x0, x1 = model.x_range.start, model.x_range.end
        if x0 is None or x1 is None:
            x0, x1 = 0.0, 1.0
        return [RangesUpdate(model, x0=x0 + (x1 - x0) * 0.45, x1=x0 + (x1 - x0) * 0.55, y0=0, y1=1)]
    if name in ("tap", "doubletap"):
        from bokeh.events import DoubleTap, Tap

        return [(Tap if name == "tap" else DoubleTap)(model, sx=10, sy=20, x=1.5, y=2.5)]
    if name == "wheel":
        from bokeh.events import MouseWheel

        return [MouseWheel(model, sx=10, sy=20, x=1.5, y=2.5, delta=3)]
    return []


def _run_session_callbacks(doc) -> None:
    for callback in list(doc.session_callbacks):
        invoke_with_curdoc(doc, callback.callback)


def _drive(doc) -> None:
    """DocumentReady, each periodic and timeout callback twice, every widget and event a Python callback listens
    to, then the callbacks again (those the events added: a debounce, a next tick)."""
    doc.callbacks.trigger_event(DocumentReady())
    _run_session_callbacks(doc)
    _run_session_callbacks(doc)
    for model in sorted(doc.models, key=lambda m: type(m).__name__ + str(getattr(m, "name", ""))):
        for attr in sorted(model._callbacks):
            new = _new_value(model, attr)
            if new is not None:
                invoke_with_curdoc(doc, lambda m=model, a=attr, v=new: setattr(m, a, v))
        for name in sorted(model._event_callbacks):
            for event in _events_for(model, name):
                invoke_with_curdoc(doc, lambda m=model, e=event: m._trigger_event(e))
    _run_session_callbacks(doc)


def _application(case: str) -> Application:
    if case in APPS:
        return build_single_handler_application(str(APPS[case]))
    return Application(FunctionHandler(getattr(examples, case)))


async def _messages(case: str) -> list[tuple[str, list[bytes]]]:
    """The PULL-DOC reply and every PATCH-DOC the case's session sends, as (content JSON, buffers)."""
    for name, module in list(sys.modules.items()):  # an app's own modules (their state) start afresh each time
        if Path(getattr(module, "__file__", None) or "/").is_relative_to(ROOT / "apps"):
            del sys.modules[name]
    context = application_context(_application(case))
    session = await build_session(context, "equivalence-session", f"/{case}")
    doc = session.document
    assert doc.roots, f"{case} built no document: see its error above"
    session._pending_writes = []  # as while a callback holds the document's lock; no connection is subscribed
    protocol = Protocol()
    events: list = []
    doc.on_change(events.append)
    sent = [protocol.create("PULL-DOC-REPLY", "request", doc)]
    _drive(doc)
    sent += [protocol.create("PATCH-DOC", [e]) for e in events if isinstance(e, DocumentPatchedEvent)]
    context.run_unload_hook()
    return [(message.content_json, [bytes(b.data) for b in message.buffers]) for message in sent] + _fed(doc)


def _fed(doc) -> list[tuple[str, list[bytes]]]:
    """What each bokeh_stack Feed the document's sources show sends them on a tick (the feed writes it to the
    browsers itself, not through the document's events); the feeds are stopped and forgotten after."""
    sent = []
    for feed in list(feeds._feeds.values()):
        for source in [s for s in feed._sources if s.document is doc]:
            (_, _, (content, _), *buffers) = feeds._Patch.of(feed.compute(), feed.rollover).frames(source.id)
            sent.append((content, [data for data, binary in buffers if binary]))
        if feed._timer is not None:
            feed._timer.stop()
    feeds._feeds.clear()
    return sent


def _without_ids(messages: list[tuple[str, list[bytes]]]) -> list[tuple[str, list[bytes]]]:
    numbering: dict[str, str] = {}

    def number(match: re.Match) -> str:
        return f'"#{numbering.setdefault(match.group(1), str(len(numbering)))}"'

    return [(_ID.sub(number, content), buffers) for content, buffers in messages]


def _deterministic(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The apps' random numbers and clocks, the same for both builds."""
    default_rng = np.random.default_rng
    monkeypatch.setattr(np.random, "default_rng", lambda seed=None: default_rng(7 if seed is None else seed))
    monkeypatch.setattr(time, "time", lambda: 1_765_000_000.0)
    monkeypatch.setattr(datetime, "datetime", FrozenDatetime)
    monkeypatch.setenv("LARGE_DATA_POINTS", "200000")

    def reseed() -> None:
        random.seed(7)
        np.random.seed(7)

    return reseed


@pytest.mark.parametrize("case", CASES)
def test_the_fixes_send_what_bokeh_sends(case, monkeypatch):
    reseed = _deterministic(monkeypatch)
    reseed()
    plain = _without_ids(asyncio.run(_messages(case)))
    fixes.apply(fixes.FIXES + ids.FIXES)
    try:
        reseed()
        raw = asyncio.run(_messages(case))
        fixed = _without_ids(raw)
    finally:
        patching.undo()
    assert re.search(r'"p[0-9a-f]{6}-1"', raw[0][0]), "the models the session's code made are numbered per session"
    assert len(plain) > 1, f"{case}: driving it sent no patch, so this compares only the document"
    assert fixed[0] == plain[0], "the PULL-DOC reply differs"
    # In which order Bokeh reports a theme's changes to the models depends on a set of models (their addresses):
    # it differs between two plain runs, so the patches are compared as a multiset.
    assert sorted(fixed[1:]) == sorted(plain[1:])


def test_the_corpus_covers_what_pages_are_made_of():
    """The corpus and the apps together use the model families a page is made of: if a Bokeh upgrade or an edit
    dropped one, the comparison above would silently cover less."""
    seen: set[str] = set()
    for case in CASES:
        doc = _application(case).create_document()
        seen |= {type(m).__name__ for m in doc.models}
    wanted = {
        "figure",
        "GlyphRenderer",
        "ColumnDataSource",
        "DataTable",
        "Slider",
        "Select",
        "Tabs",
        "ColorBar",
        "ContourRenderer",
        "HoverTool",
        "CustomJS",
        "DatetimeAxis",
        "CategoricalAxis",
        "Image",
        "Toggle",
    }
    assert wanted <= seen, f"no case builds {sorted(wanted - seen)}"


def test_a_default_stays_each_models_own():
    """A mutable default (a list, a dict) is still made afresh for each model, and a theme still wins over a cached
    default: what the messages above would only show once an app changed a default in place."""
    from bokeh.models import ColumnDataSource, GlyphRenderer, Plot
    from bokeh.themes import Theme

    fixes.apply(fixes.FIXES)
    try:
        first, second = Plot(), Plot()
        first.renderers.append(GlyphRenderer())
        assert second.renderers == [] and first.renderers is not second.renderers
        a, b = ColumnDataSource(), ColumnDataSource()
        a.data["x"] = [1]
        assert b.data == {}
        assert first.outline_line_color == "#e5e5e5"
        first.apply_theme(Theme(json={"attrs": {"Plot": {"outline_line_color": "red"}}})._for_class(Plot))
        assert first.outline_line_color == "red" and second.outline_line_color == "#e5e5e5"
    finally:
        patching.undo()
