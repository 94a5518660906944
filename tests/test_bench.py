"""The benchmarks at a tiny size, so they cannot rot: every part runs against every deployment and reports what
it measured. Timing figures at this size mean nothing and are not checked; what does not depend on timing is."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.__main__ import PARTS
from bench.setups import SETUPS
from harness.stack import ROOT

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.bench]

ROWS = (
    "**1. Page views**, keep-alive",
    "**1. Page views**, `Connection: close`",
    "**2. Static**",
    "**3. Streamed update delay**",
    "**4. Sessions one worker carries**",
    "**5. Worker RSS**",
)


def test_every_part_measures_every_deployment(tmp_path, nginx_available):
    out = tmp_path / "bench.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    text = out.read_text()
    table = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| **")}
    for row in ROWS:
        line = next((v for k, v in table.items() if k.startswith(row)), None)
        assert line is not None, f"no row {row!r} in:\n{text}"
        cells = line.strip("| ").split(" | ")[1:]
        assert len(cells) == len(SETUPS) and all(re.search(r"\d|worker", c) for c in cells), line
    # What a page view costs (one worker each: plain Bokeh, the previous bokeh-stack, this one), and each shipped app.
    cost = next(v for k, v in table.items() if k.startswith("**6. CPU per page view**")).strip("| ").split(" | ")[1:]
    measured = [cell for key, cell in zip(SETUPS, cost, strict=True) if key in ("single", "previous", "stack")]
    assert all(re.search(r"\*\*\d+\*\* / \d+ \([\d.]+×\)", cell) for cell in measured), cost
    assert re.search(r"\| streaming \| [\d.]+ ms \| [\d.]+ ms \| [\d.]+× \|", text), text
    # Websocket compression off and on, side by side.
    assert re.search(r"\| off \| [\d,]+ B \| [\d,]+ µs \| [\d.]+ kB \|\n\| on \|", text), text

    # Independent of timing: one execution per page view, BokehJS gzipped and cached, nothing left behind.
    assert "| app executions per page view = 1.00 | 1.00, 1.00 | PASS |" in text
    lines = text.splitlines()
    for target in ("gzip bytes on the wire ≤ 30% of raw", "a repeat visit downloads no JS", "nothing left once"):
        line = next((line for line in lines if target in line), None)
        assert line is not None and line.endswith("| PASS |"), f"{target}:\n{text}"
    assert "|---" in text and "design §2b" in text
    # The metrics' cost: bokeh-stack with them and without, side by side, and a scrape of the whole fleet.
    assert re.search(r"\| page views/s, keep-alive \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", text), text
    assert re.search(r"One `/metrics` scrape of 2 workers and nginx: p50 [\d.]+ ms", text), text
    # Resuming: its cost on and off, and tabs coming back after a kill -9, resumed and fresh.
    assert re.search(r"\| page views/s, keep-alive \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", text.split("Resume on vs off")[1])
    assert re.search(r"\| tabs as their users left them \| 2 of 2 \| 0 of 2 \|", text), text
    # Very large data: the decimated app's first document and updates, beside the naive app's.
    assert re.search(r"\| bytes per update \| [\d.]+ kB \(28 updates\) \| none: the browser has every point \|", text)
    assert re.search(r"\| large data: first document < 2 MB \| [\d.]+ MB \| PASS \|", text), text
    # Pools: a host of idle apps with a worker each, and with none until a visitor, whose first page view comes.
    memory = r"\| host memory, idle \(PSS of every process of the stack\) \| [\d,]+ MB \| \*\*[\d,]+ MB\*\*"
    assert re.search(memory, text), text
    assert re.search(r"\| an idle app's first page view within nginx's page timeout \(60 s\) \| [\d.]+ s \| PASS", text)
    # When, at which commit and where each part was measured (bench/parts.py keeps them for the runs after).
    measured = next(line for line in lines if line.startswith("Each part's setups were measured side by side"))
    when = r"\d{4}-\d\d-\d\d (at [0-9a-f]{10}|on code)"
    assert all(re.search(rf"\b{part} {when} ", measured) for part in PARTS), measured
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"]({png.name})" in text
