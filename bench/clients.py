"""Light load-generating clients: the bench's client shares the cores with the servers it measures, so it does the
least a browser's network side does and skips what a browser does locally (building the document).

A page view: GET the app page (keep-alive or `Connection: close`), open `<app>/ws` with the page's cookies and
token, wait for the ACK, send PULL-DOC-REQ, receive the whole reply. A subscriber: a page view that stays
connected, announces DocumentReady and counts (and times) the streamed updates.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bokeh.client.websocket import WebSocketClientConnectionWrapper
from bokeh.protocol import Protocol
from bokeh.util.token import get_session_id
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from harness.pageview import CookieJar, PageView, open_page, page_origin, websocket_url

_TOKEN = re.compile(rb'"token"\s*:\s*"([A-Za-z0-9_.\-=]+)"')


class BenchError(RuntimeError):
    pass


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


class HTTPConnection:
    """HTTP/1.1 GETs on one connection, kept alive unless `keep_alive` is False (then one connection per GET).
    Reads Content-Length and chunked bodies as they come on the wire (no decompression)."""

    def __init__(self, url: str, keep_alive: bool = True) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.keep_alive = keep_alive
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.connections = 0

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
            self.connections += 1
        reader, writer = self._streams
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append("Connection: keep-alive" if self.keep_alive else "Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            response = await _read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.close()
            raise BenchError(f"GET {path}: connection lost ({type(e).__name__})") from e
        if not self.keep_alive or (response.header("connection") or "").lower() == "close":
            self.close()
        return response

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in filter(None, header_lines):
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    status = int(status_line.split()[1])
    if "chunked" in ",".join(headers.get("transfer-encoding", [])):
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, then the empty line
            pass
        return Response(status, headers, bytes(body))
    length = int(headers.get("content-length", ["0"])[-1])
    return Response(status, headers, await reader.readexactly(length))


@dataclass
class ViewTiming:
    session_id: str
    seconds: float


async def light_page_view(
    conn: HTTPConnection, url: str, origin: str, timeout: float = 30.0, cookie: str = ""
) -> ViewTiming:
    """One first-visit page view (a new cookie jar, holding `cookie` if given: a sign-in) over `conn` for the GET
    and a new websocket."""
    start = time.perf_counter()
    path = urlsplit(url).path
    response = await asyncio.wait_for(conn.get(path, {"Cookie": cookie} if cookie else None), timeout)
    if response.status != 200:
        raise BenchError(f"GET {url}: HTTP {response.status}")
    jar = CookieJar()
    if cookie:
        jar.update([cookie])
    jar.update(response.headers.get("set-cookie", []))
    match = _TOKEN.search(response.body)
    if not match:
        raise BenchError(f"GET {url}: no session token in the page")
    token = match.group(1).decode()
    headers = {"Origin": origin}
    if jar.cookies:
        headers["Cookie"] = jar.header()
    request = HTTPRequest(websocket_url(url), headers=headers, connect_timeout=timeout, request_timeout=timeout)
    try:
        ws = await websocket_connect(request, subprotocols=["bokeh", token])
    except HTTPClientError as e:
        raise BenchError(f"websocket {url}: {e}") from e
    try:
        ws.protocol.set_nodelay(True)
        if (await asyncio.wait_for(read_raw_message(ws), timeout)).msgtype != "ACK":
            raise BenchError(f"{url}: no ACK")
        await Protocol().create("PULL-DOC-REQ").send(WebSocketClientConnectionWrapper(ws))
        reply = await asyncio.wait_for(read_raw_message(ws), timeout)
        if reply.msgtype != "PULL-DOC-REPLY":
            raise BenchError(f"{url}: expected the document, got {reply.msgtype}")
    finally:
        ws.close()
    return ViewTiming(get_session_id(token), time.perf_counter() - start)


@dataclass
class RawMessage:
    """A Bokeh protocol message as it came over the websocket: the header parsed, the content as text."""

    msgtype: str
    content: str
    arrived: float  # time.time() when its content frame arrived


async def read_raw_message(ws: WebSocketClientConnection) -> RawMessage:
    """The next Bokeh message: header, metadata and content frames, then its binary buffers."""
    frames = []
    for _ in range(3):
        frame = await ws.read_message()
        if frame is None:
            raise BenchError(f"websocket closed ({ws.close_code})")
        frames.append(frame)
    arrived = time.time()
    header = json.loads(frames[0])
    for _ in range(header.get("num_buffers", 0) * 2):  # each buffer: a text header frame and a binary frame
        if await ws.read_message() is None:
            raise BenchError(f"websocket closed ({ws.close_code})")
    return RawMessage(header["msgtype"], frames[2], arrived)


def streamed_times(content: str, column: str = "t") -> list[float]:
    """The values streamed into `column` by a PATCH-DOC's ColumnsStreamed events (plain lists only)."""
    times: list[float] = []
    for event in json.loads(content).get("events", []):
        if event.get("kind") != "ColumnsStreamed":
            continue
        for key, values in event["data"].get("entries", []):
            if key == column and isinstance(values, list):
                times += values
    return times


@dataclass
class Subscriber:
    """A connected session of a streaming app (DocumentReady sent, as BokehJS does) that counts its updates (the
    messages that stream a `t` column) and, if asked, the delay of each streamed `t` (the server's clock, ms)."""

    view: PageView
    measure_delay: bool = False
    updates: int = 0
    delays_ms: list[float] = field(default_factory=list)
    error: str | None = None
    _task: asyncio.Task | None = None

    @classmethod
    async def connect(
        cls, url: str, origin: str | None = None, measure_delay: bool = False, compression: bool = False
    ) -> Subscriber:
        view = await open_page(
            url, origin=origin or page_origin(url), document_ready=True, timeout=60, compression=compression
        )
        subscriber = cls(view, measure_delay)
        subscriber._task = asyncio.create_task(subscriber._listen())
        return subscriber

    async def _listen(self) -> None:
        try:
            while True:
                message = await read_raw_message(self.view._ws)
                if message.msgtype != "PATCH-DOC" or '"t"' not in message.content:
                    continue
                self.updates += 1
                if self.measure_delay:
                    self.delays_ms += [message.arrived * 1000 - t for t in streamed_times(message.content)]
        except BenchError as e:
            self.error = str(e)

    def close(self) -> None:
        if self._task:
            self._task.cancel()
        self.view.close()
