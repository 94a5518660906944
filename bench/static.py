"""Row 2, static JS: `bokeh.min.js` requests/s with wrk (plain, and asking for gzip as browsers do), the bytes on
the wire with `Accept-Encoding: gzip`, and what a repeat visit downloads again of the page's scripts."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.clients import HTTPConnection, Response
from bench.setups import Setup

_SCRIPT = re.compile(rb'<script[^>]+src="([^"]+)"')
_MAX_AGE = re.compile(r"max-age=(\d+)")


@dataclass
class StaticResult:
    per_s: float
    gzip_per_s: float
    raw_bytes: int
    wire_bytes: int  # with Accept-Encoding: gzip
    repeat_js_bytes: int  # what a repeat visit downloads again of the page's scripts
    cache: str  # how a repeat visit gets bokeh.min.js: "cached", "304" or "downloaded"


def wrk_requests_per_s(url: str, seconds: float, headers: dict[str, str] | None = None) -> float:
    wrk = shutil.which("wrk")
    if not wrk:
        raise RuntimeError("wrk is missing: scripts/system-deps test installs it")
    argv = [wrk, "-t1", "-c16", f"-d{max(int(seconds), 1)}s", "--latency"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"wrk {url}: unexpected output:\n{out}")
    return float(match.group(1))


def page_scripts(page: Response) -> list[str]:
    return [src.decode() for src in _SCRIPT.findall(page.body)]


def fresh_for(response: Response) -> bool:
    """Whether a browser reuses this response on a repeat visit without asking the server."""
    cache_control = response.header("cache-control") or ""
    match = _MAX_AGE.search(cache_control)
    return bool(match and int(match.group(1)) > 0 and "no-cache" not in cache_control)


async def repeat_visit(conn: HTTPConnection, response: Response, path: str) -> tuple[int, str]:
    """Bytes a repeat visit downloads again for one script, and how it got it."""
    if fresh_for(response):
        return 0, "cached"
    validators = {}
    if response.header("etag"):
        validators["If-None-Match"] = response.header("etag")
    if response.header("last-modified"):
        validators["If-Modified-Since"] = response.header("last-modified")
    again = await conn.get(path, {"Accept-Encoding": "gzip", **validators})
    return len(again.body), "304" if again.status == 304 else "downloaded"


async def _bytes(setup: Setup) -> tuple[int, int, int, str, str]:
    conn = HTTPConnection(setup.origin)
    try:
        page = await conn.get("/dashboard")
        scripts = [s for s in page_scripts(page) if urlsplit(s).path.endswith(".js")]
        bokeh_js = next(s for s in scripts if urlsplit(s).path.endswith("/bokeh.min.js"))
        raw = await conn.get(bokeh_js)
        gzipped = await conn.get(bokeh_js, {"Accept-Encoding": "gzip"})
        repeat, how = 0, ""
        for script in scripts:
            first = await conn.get(script, {"Accept-Encoding": "gzip"})
            downloaded, via = await repeat_visit(conn, first, script)
            repeat += downloaded
            if script == bokeh_js:
                how = via
        return len(raw.body), len(gzipped.body), repeat, how, bokeh_js
    finally:
        conn.close()


def static_js(setup: Setup, seconds: float) -> StaticResult:
    raw, wire, repeat, how, path = asyncio.run(_bytes(setup))
    url = setup.url(path)
    return StaticResult(
        per_s=wrk_requests_per_s(url, seconds),
        gzip_per_s=wrk_requests_per_s(url, seconds, {"Accept-Encoding": "gzip"}),
        raw_bytes=raw,
        wire_bytes=wire,
        repeat_js_bytes=repeat,
        cache=how,
    )
