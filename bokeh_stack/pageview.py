"""A Bokeh page view done the way a browser does it, with Bokeh's own protocol classes.

GET the app page (keeping cookies, like a browser's cookie jar), take the session token from the page, open
`<app>/ws` with the same cookies and the page's Origin, wait for the server's ACK, pull the document. Optionally
announce DocumentReady, as BokehJS does once the document is rendered. Used by the tests, the benchmarks and
`bokeh-stack check --url`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bokeh.client.websocket import WebSocketClientConnectionWrapper
from bokeh.document import Document
from bokeh.document.events import MessageSentEvent
from bokeh.events import DocumentReady
from bokeh.protocol import Protocol
from bokeh.protocol.receiver import Receiver
from bokeh.util.token import get_session_id
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

_TOKEN = re.compile(rb'"token"\s*:\s*"([A-Za-z0-9_.\-=]+)"')


class PageViewError(RuntimeError):
    """A page view that failed; `stage` is GET, websocket or pull."""

    def __init__(self, stage: str, url: str, detail: str):
        self.stage, self.url = stage, url
        super().__init__(f"{stage} {url}: {detail}")


@dataclass
class CookieJar:
    cookies: dict[str, str] = field(default_factory=dict)

    def update(self, set_cookie_headers: list[str]) -> None:
        for header in set_cookie_headers:
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            self.cookies.update({name: morsel.value for name, morsel in parsed.items()})

    def header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())


@dataclass
class PageView:
    url: str
    session_id: str
    document: Document
    jar: CookieJar
    seconds: float
    status: int
    _ws: WebSocketClientConnection
    _receiver: Receiver

    async def document_ready(self) -> None:
        """Tell the server the document is rendered, as BokehJS does (apps start their periodic work on it)."""
        message = Protocol().create("PATCH-DOC", [MessageSentEvent(self.document, "bokeh_event", DocumentReady())])
        await message.send(WebSocketClientConnectionWrapper(self._ws))

    async def next_message(self, timeout: float = 10.0) -> Any:
        """The next complete Bokeh protocol message the server sends (e.g. a PATCH-DOC)."""
        return await asyncio.wait_for(_read_message(self._ws, self._receiver, self.url), timeout)

    def close(self) -> None:
        self._ws.close()


def websocket_url(page_url: str) -> str:
    parts = urlsplit(page_url)
    scheme = {"http": "ws", "https": "wss"}[parts.scheme]
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


def page_origin(page_url: str) -> str:
    parts = urlsplit(page_url)
    return f"{parts.scheme}://{parts.netloc}"


async def open_page(
    url: str,
    *,
    jar: CookieJar | None = None,
    origin: str | None = None,
    timeout: float = 15.0,
    document_ready: bool = False,
) -> PageView:
    """Load a Bokeh app page and connect its session; the websocket stays open until PageView.close()."""
    jar = CookieJar() if jar is None else jar
    start = time.perf_counter()
    headers = {"Cookie": jar.header()} if jar.cookies else {}
    response = await AsyncHTTPClient().fetch(
        HTTPRequest(url, headers=headers, follow_redirects=False, request_timeout=timeout), raise_error=False
    )
    if response.code != 200:
        raise PageViewError("GET", url, f"HTTP {response.code} {response.reason}")
    jar.update(response.headers.get_list("Set-Cookie"))
    match = _TOKEN.search(response.body or b"")
    if not match:
        raise PageViewError("GET", url, "no Bokeh session token in the page")
    token = match.group(1).decode()

    ws_headers = {"Origin": origin or page_origin(url)}
    if jar.cookies:
        ws_headers["Cookie"] = jar.header()
    request = HTTPRequest(websocket_url(url), headers=ws_headers, connect_timeout=timeout, request_timeout=timeout)
    try:
        ws = await websocket_connect(request, subprotocols=["bokeh", token])
    except Exception as e:  # tornado raises HTTPClientError for a refused upgrade, OSError and others otherwise
        raise PageViewError("websocket", url, _describe(e)) from e
    # As browsers do: a Bokeh message is several websocket frames, and Nagle's algorithm would hold the later
    # ones until the server's delayed ACK (~40 ms a message).
    ws.protocol.set_nodelay(True)
    receiver = Receiver(Protocol())
    try:
        ack = await asyncio.wait_for(_read_message(ws, receiver, url), timeout)
        if ack.msgtype != "ACK":
            raise PageViewError("websocket", url, f"expected ACK, got {ack.msgtype}")
        await Protocol().create("PULL-DOC-REQ").send(WebSocketClientConnectionWrapper(ws))
        reply = await asyncio.wait_for(_read_reply(ws, receiver, url), timeout)
        document = Document()
        reply.push_to_document(document)
    except BaseException as e:
        ws.close()
        if isinstance(e, PageViewError):
            raise
        if isinstance(e, asyncio.TimeoutError):
            raise PageViewError("pull", url, f"no document within {timeout} s") from e
        raise
    view = PageView(url, get_session_id(token), document, jar, time.perf_counter() - start, response.code, ws, receiver)
    if document_ready:
        await view.document_ready()
    return view


async def page_view(url: str, **kwargs: Any) -> PageView:
    """One complete page view: load, connect, pull, then close the tab."""
    view = await open_page(url, **kwargs)
    view.close()
    return view


async def _read_message(ws: WebSocketClientConnection, receiver: Receiver, url: str) -> Any:
    while True:
        fragment = await ws.read_message()
        if fragment is None:
            reason = f" ({ws.close_code} {ws.close_reason or ''})".rstrip() if ws.close_code else ""
            raise PageViewError("websocket", url, f"closed by the server{reason}")
        message = await receiver.consume(fragment)
        if message is not None:
            return message


async def _read_reply(ws: WebSocketClientConnection, receiver: Receiver, url: str) -> Any:
    """The PULL-DOC-REPLY; a session may send patches first, and an ERROR means the app failed."""
    while True:
        message = await _read_message(ws, receiver, url)
        if message.msgtype == "PULL-DOC-REPLY":
            return message
        if message.msgtype == "ERROR":
            raise PageViewError("pull", url, json.dumps(message.content))


def _describe(error: Exception) -> str:
    code = getattr(error, "code", None)
    return f"HTTP {code} {getattr(error, 'message', '')}".strip() if code else f"{type(error).__name__}: {error}"
