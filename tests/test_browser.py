"""Headless Chromium (Debian's) loads every app through nginx, as a user would."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.stack import SHIPPED_APPS, TEST_APPS

pytestmark = [pytest.mark.stack, pytest.mark.browser]
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TICKS_T = "Bokeh.documents[0].get_model_by_name('ticks').data.t"
DOCUMENT_READY = "() => window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents[0].roots().length > 0"


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_app(browser):
    pages = []

    def open_(url: str):
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
        page.goto(url)
        page.wait_for_function(DOCUMENT_READY, timeout=20_000)
        page.locator("canvas").first.wait_for(timeout=20_000)
        pages.append(context)
        return page, errors

    yield open_
    for context in pages:
        context.close()


def column_length(page, source: str, column: str) -> int:
    return page.evaluate(f"() => Bokeh.documents[0].get_model_by_name({source!r}).data[{column!r}].length")


def test_every_app_renders_a_plot_without_errors(stacks, open_app, tmp_path):
    stack = stacks(SHIPPED_APPS, workers=2)
    for app in stack.settings.apps:
        page, errors = open_app(stack.url(f"/{app}"))
        assert page.locator("canvas").count() >= 1, f"{app}: no canvas"
        assert errors == [], f"{app}: console errors {errors}"
        if app == "lifecycle":
            # The app's own template and static stylesheet are in use.
            assert page.locator("h1", has_text="Session lifecycle").is_visible()
            assert page.evaluate("() => getComputedStyle(document.body).fontFamily").startswith("system-ui")
    page.screenshot(path=str(tmp_path / "last-app.png"))


def test_streaming_data_changes_over_time(stacks, open_app):
    stack = stacks(SHIPPED_APPS, workers=2)
    page, errors = open_app(stack.url("/streaming"))
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('stream').data.x.length >= 25", timeout=15_000)
    first = page.evaluate("() => Array.from(Bokeh.documents[0].get_model_by_name('stream').data.t)")
    page.wait_for_function(
        f"() => Bokeh.documents[0].get_model_by_name('stream').data.t.length > {len(first)} + 5", timeout=15_000
    )
    later = page.evaluate("() => Array.from(Bokeh.documents[0].get_model_by_name('stream').data.t)")
    assert later[-1] > first[-1], "the time series did not advance"
    page, _ = open_app(stack.url("/random_walk"))
    start = column_length(page, "walk", "value")
    page.wait_for_function(
        f"() => Bokeh.documents[0].get_model_by_name('walk').data.value.length > {start}", timeout=10_000
    )
    assert errors == []


def test_large_data_zooming_redraws_from_the_server(stacks, open_app):
    """10 million points: the page holds a decimation of the full range; a wheel zoom over the plot brings a new
    decimation of the narrower window, and zoomed in far enough, the raw samples."""
    stack = stacks(SHIPPED_APPS, workers=1)
    page, errors = open_app(stack.url("/large_data"))
    xs = "() => Array.from(Bokeh.documents[0].get_model_by_name('window').data.x)"
    shown = "() => Bokeh.documents[0].get_model_by_name('shown').text"
    page.wait_for_function(f"() => ({shown})().includes('per pixel column')", timeout=20_000)
    first = page.evaluate(xs)
    width = page.evaluate("() => Bokeh.documents[0].roots()[0].inner_width")
    assert 0 < len(first) <= 2 * width and first[-1] - first[0] > 9000, (len(first), width, first[-1])

    box = page.locator("canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(5):
        page.mouse.wheel(0, -300)  # zoom in: xwheel_zoom is the plot's active scroll tool
    page.wait_for_function(
        f"() => {{ const x = ({xs})(); return x[x.length - 1] - x[0] < {first[-1] - first[0]} / 2 }}"
    )
    zoomed = page.evaluate(xs)
    assert 0 < len(zoomed) <= 2 * width and zoomed[0] > first[0], "a narrower window, decimated again"

    # As a tool does at the end of a zoom: set the range, then announce it (RangesUpdate).
    page.evaluate(
        "() => { const plot = Bokeh.documents[0].roots()[0]; plot.x_range.setv({start: 100, end: 101});"
        " Bokeh.index[plot.id].trigger_ranges_update_event(); }"
    )
    page.wait_for_function(f"() => ({shown})().includes('raw samples')", timeout=10_000)
    raw = page.evaluate(xs)
    assert len(raw) == 1001 and abs(raw[1] - raw[0] - 0.001) < 1e-9, "every sample from 100 s to 101 s, one a ms"
    assert errors == []


def test_press_me_button_writes_numbers(stacks, open_app):
    stack = stacks(SHIPPED_APPS, workers=2)
    page, errors = open_app(stack.url("/press_me"))
    assert column_length(page, "numbers", "text") == 0
    button = page.get_by_role("button", name="Press me")
    for presses in (1, 2, 3):
        button.click()
        page.wait_for_function(
            f"() => Bokeh.documents[0].get_model_by_name('numbers').data.text.length === {presses}", timeout=10_000
        )
    texts = page.evaluate("() => Array.from(Bokeh.documents[0].get_model_by_name('numbers').data.text)")
    assert texts == ["0", "1", "2"]
    assert errors == []


def test_tabs_survive_a_full_reload_without_freezing(stacks, browser):
    """20 tabs streaming from 3 workers while `bokeh-stack reload` restarts every worker: each worker closes its
    websockets cleanly (1001, never mid-message), and every tab streams again within 20 s. The app streams lightly
    (4 points a second): twenty tabs rendering the shipped streaming app at 10 Hz saturate two cores by themselves."""
    stack = stacks(TEST_APPS, workers=3)
    url = stack.url("/ticker")
    tabs = []
    try:
        for _ in range(20):
            context = browser.new_context(viewport={"width": 640, "height": 480})
            page = context.new_page()
            lost: list[str] = []
            page.on("console", lambda m, lost=lost: lost.append(m.text) if "Lost websocket" in m.text else None)
            page.goto(url, wait_until="commit")
            tabs.append((context, page, lost))
        for _, page, _ in tabs:
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60_000)
        for _, page, _ in tabs:
            page.wait_for_function(f"() => {TICKS_T}.length >= 3", timeout=20_000)

        reload = subprocess.run(
            [sys.executable, "-m", "bokeh_stack", "reload", "--settings", str(stack.settings_file)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reload.returncode == 0, reload.stdout + reload.stderr
        reloaded_at = time.time()
        # A point the server made after the reload finished has arrived: the tab streams again.
        streams_again = (
            f"() => {{ const t = {TICKS_T}; return t.length > 0 && t[t.length - 1] > {reloaded_at * 1000}; }}"
        )
        recovered_after: dict[int, float] = {}
        deadline = time.monotonic() + 20
        while len(recovered_after) < len(tabs) and time.monotonic() < deadline:
            for i, (_, page, _) in enumerate(tabs):
                if i not in recovered_after and page.evaluate(streams_again):
                    recovered_after[i] = time.time() - reloaded_at
            time.sleep(0.1)
        frozen = sorted(set(range(len(tabs))) - set(recovered_after))
        recovered_in_s = max(recovered_after.values(), default=0.0)
        closes = [text for _, _, lost in tabs for text in lost]
        print(f"\n20 tabs, full reload: {len(frozen)} frozen; all streaming again {recovered_in_s:.1f} s after it")
        print(f"websocket closes seen by the tabs: {sorted(set(c.split(' connection, ')[1] for c in closes))}")
        assert frozen == [], f"tabs {frozen} stopped streaming"
        assert all(lost for _, _, lost in tabs), "every tab's worker restarted under it"
        assert all("connection, 1001 " in c for c in closes), closes
    finally:
        for context, _, _ in tabs:
            context.close()
