"""In Chromium, through nginx: a tab of the shipped explorer app (widgets, a zoomed plot, selected points, the table
tab, a click, and what the app works out from them) comes back as its user left it after its worker goes away,
each way a worker goes on one host: kill -9, `bokeh-stack reload`, and `apply` after a code change (the new code
runs with the old state). The tab is never reloaded: BokehJS reconnects with its token to whichever worker nginx
picks, which resumes the session from the record the first one kept."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from bokeh.util.token import get_session_id

from bokeh_stack.resume import record
from harness.pageview import _TOKEN
from harness.stack import SHIPPED_APPS, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.browser]
playwright = pytest.importorskip("playwright.sync_api")

from tests.test_browser import CHROMIUM_ARGS, DOCUMENT_READY  # noqa: E402

MODEL = "Bokeh.documents[0].get_model_by_name"
# What the tab shows: the widgets, the plot's range, the selection, the active tab, what the app derived.
STATE = f"""() => {{
    const m = (name) => {MODEL}(name);
    const plot = m('plot');
    return {{
        frequency: m('frequency').value, wave: m('wave').value, noise: m('noise').value,
        x: [plot.x_range.start, plot.x_range.end], selected: Array.from(m('signal').selected.indices),
        tab: m('tabs').active, summary: m('summary').text, y: Array.from(m('signal').data.y).slice(0, 5),
    }};
}}"""
STATUS_TEXT = f"{MODEL}('status').text"
STATUS = f"() => {STATUS_TEXT}"
PAN_STEPS = 8


def _use(page) -> None:
    """What a user does: choose a wave, drag the frequency, pan the plot, select points, switch to the table, and
    ask for new noise."""
    page.evaluate(f"() => {{ {MODEL}('wave').value = 'square' }}")
    for value in (4, 6, 7):
        page.evaluate(f"() => {{ {MODEL}('frequency').value = {value} }}")
    box = page.locator("canvas").first.bounding_box()
    middle = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*middle)
    page.mouse.down()
    page.mouse.move(middle[0] - 200, middle[1] + 40, steps=PAN_STEPS)  # the pan tool: the plot's active drag
    page.mouse.up()
    page.wait_for_function(f"() => {MODEL}('plot').x_range.start > 0.5")
    page.evaluate(f"() => {{ {MODEL}('signal').selected.indices = [3, 5, 7, 11] }}")
    page.evaluate(f"() => {{ {MODEL}('tabs').active = 1 }}")
    page.get_by_role("button", name="new noise").click()
    page.wait_for_function(f"() => {MODEL}('summary').text.startsWith('square at 7 Hz, noise 0.1 (seed 1): 4 ')")


def test_a_tab_comes_back_as_its_user_left_it_after_each_way_a_worker_goes(stacks, tmp_path):
    apps = tmp_path / "apps"
    shutil.copytree(SHIPPED_APPS / "explorer", apps / "explorer")
    stack = stacks(apps, workers=2)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            page.goto(stack.url("/explorer"))
            page.wait_for_function(DOCUMENT_READY, timeout=20_000)
            page.wait_for_function(f"() => {STATUS_TEXT}.startsWith('worker ')")
            _use(page)
            left = page.evaluate(STATE)
            # The click is the last thing the user did: once the record holds it, it holds everything before.
            token = _TOKEN.search(page.content().encode()).group(1).decode()
            kept = stack.plan.sessions_dir / record.key(get_session_id(token))
            wait_for(lambda: kept.exists() and b"button_click" in kept.read_bytes(), 10, "the click in the record")
            assert oct(kept.stat().st_mode & 0o777) == "0o600"

            def worker_pid() -> int:
                return int(page.evaluate(STATUS).split()[1].rstrip(","))

            main = apps / "explorer" / "main.py"
            ways = {
                "kill -9": lambda: os.kill(worker_pid(), signal.SIGKILL),
                "reload": lambda: stack_cli(stack, "reload"),
                "apply": lambda: (
                    main.write_text(main.read_text() + '\nplot.title.text = "version 2"\n'),
                    stack_cli(stack, "apply"),
                ),
            }
            resumed_after: dict[str, float] = {}
            for way, go in ways.items():
                before = worker_pid()
                started = time.monotonic()
                go()
                # Back: another worker process built the tab's session, and says it was resumed.
                back = f"s.includes('resumed') && !s.startsWith('worker {before},')"
                try:
                    page.wait_for_function(f"() => {{ const s = {STATUS_TEXT}; return {back} }}", timeout=30_000)
                except playwright.Error:
                    print(f"after {way}: {page.evaluate(STATUS)}; the browser's console:", *console[-20:], sep="\n")
                    raise
                resumed_after[way] = time.monotonic() - started
                assert page.evaluate(STATE) == left, f"after {way}: not as the user left it"
                if way == "kill -9":  # counted where an operator looks: status, and the fleet's metrics (/ops)
                    status = json.loads(stack_cli(stack, "status", "--json"))
                    assert status["totals"]["resumes"] == {"resumed": 1, "fresh": 0, "failed": 0}, status["totals"]
                    metrics = urllib.request.urlopen(stack.ops_url("/metrics"), timeout=10).read().decode()
                    assert re.search(r'bokeh_stack_sessions_resumed_total\{[^}]*app="explorer"[^}]*'
                                     r'outcome="resumed"[^}]*\} 1\.0', metrics), metrics[-3000:]  # fmt: skip

            # What a resume replays is not kept again, nor what BokehJS sends after it pulled the document again
            # (the roots once more); a pan is kept once a MERGE_WINDOW_S (sessions.Recorder), not step by step:
            # the plot's x range is set by the first render and by the pan alone.
            lines = kept.read_bytes().splitlines()
            assert kept.read_bytes().count(b"button_click") == 1 and b"RootAdded" not in kept.read_bytes()
            x_range = page.evaluate(f"() => {MODEL}('plot').x_range.id")
            x_range_lines = sum(x_range in _models_changed(line) for line in lines[1:])
            assert x_range_lines < 1 + PAN_STEPS, f"the pan's {PAN_STEPS} steps were kept one by one: {lines}"
            assert page.evaluate(f"() => {MODEL}('plot').title.text") == "version 2", "apply: the new code runs"
            assert errors == []
            page.close()  # the user leaves: nothing of the session is kept any longer
            wait_for(lambda: not kept.exists(), 10, "the record removed once the tab left")
            print(f"\ntab resumed after: {', '.join(f'{w} {s:.1f} s' for w, s in resumed_after.items())}")
        finally:
            browser.close()


def _models_changed(line: bytes) -> set[str]:
    """The ids of the models a record's line sets properties of."""
    events = json.loads(json.loads(line)["c"]).get("events") or ()
    return {event["model"]["id"] for event in events if event.get("kind") == "ModelChanged"}


def stack_cli(stack, *command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bokeh_stack", *command, "--settings", str(stack.settings_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
