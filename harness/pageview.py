"""A Bokeh page view done the way a browser does it, with Bokeh's own protocol classes.

GET the app page (keeping cookies, like a browser's cookie jar), take the session token from the page, open
`<app>/ws` with the same cookies and the page's Origin, wait for the server's ACK, pull the document. Optionally
announce DocumentReady, as BokehJS does once the document is rendered. Like BokehJS (>= 3.8), a websocket that
drops before the document arrives is opened again with the same token (after 0, 2, 4, 8, 16 s); a refused
upgrade (an HTTP error such as 403) is final. Used by the tests, the benchmarks and
`bokeh-stack check --url`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field, replace
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from bokeh.client.websocket import WebSocketClientConnectionWrapper
from bokeh.document import Document
from bokeh.document.events import MessageSentEvent
from bokeh.events import DocumentReady
from bokeh.protocol import Protocol
from bokeh.protocol.receiver import Receiver
from bokeh.util.token import get_session_id
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

RECONNECT_DELAYS_S = (0, 2, 4, 8, 16)
RECEIVED_BYTES = "bokeh_stack_received_bytes"  # kept on the websocket connection
_TOKEN = re.compile(rb'"token"\s*:\s*"([A-Za-z0-9_.\-=]+)"')


class PageViewError(RuntimeError):
    """A page view that failed; `stage` is GET, websocket or pull."""

    def __init__(self, stage: str, url: str, detail: str, final: bool = False):
        self.stage, self.url, self.final = stage, url, final
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
    reconnects: int
    _ws: WebSocketClientConnection
    _receiver: Receiver
    token: str = ""  # the page's session token, which its websocket presents

    async def document_ready(self) -> None:
        """Tell the server the document is rendered, as BokehJS does (apps start their periodic work on it)."""
        await self.send_event(DocumentReady())

    async def send_event(self, event: Any) -> None:
        """Send a UI event to the server as BokehJS does (DocumentReady, a plot's RangesUpdate after a zoom, ...)."""
        message = Protocol().create("PATCH-DOC", [MessageSentEvent(self.document, "bokeh_event", event)])
        await message.send(WebSocketClientConnectionWrapper(self._ws))

    async def change(self, model: Any, **values: Any) -> None:
        """Set properties of one of the page's models and send the change to the server, as BokehJS does when its
        user moves a widget or a plot."""
        events: list = []
        record = events.append
        self.document.on_change(record)
        try:
            for attr, value in values.items():
                setattr(model, attr, value)
        finally:
            self.document.remove_on_change(record)
        await Protocol().create("PATCH-DOC", events).send(WebSocketClientConnectionWrapper(self._ws))

    @property
    def received_bytes(self) -> int:
        """What the server has sent over this page's websocket so far (the document, then every update)."""
        return getattr(self._ws, RECEIVED_BYTES, 0)

    @property
    def wire_bytes(self) -> int:
        """What has come over this page's websocket as it was on the wire: frames, compressed if negotiated."""
        return self._ws.protocol._wire_bytes_in

    async def next_message(self, timeout: float = 10.0) -> Any:
        """The next complete Bokeh protocol message the server sends (e.g. a PATCH-DOC)."""
        return await asyncio.wait_for(_read_message(self._ws, self._receiver, self.url), timeout)

    def close(self, code: int | None = None) -> None:
        """Close the websocket: with code 1001, as a browser does when its tab leaves the page; with none, as a
        connection that dropped."""
        self._ws.close(code)

    async def closed_by_the_server(self) -> None:
        """Read what the server sends until it closes the websocket (its close answered, as BokehJS answers it)."""
        while await self._ws.read_message() is not None:
            pass

    async def reconnect(self, url: str | None = None, timeout: float = 10.0) -> PageView:
        """The tab's websocket opened again with its token, to `url` (another worker) or its own, as BokehJS does
        after its connection was lost; the document is pulled anew."""
        url = url or self.url
        headers = {"Origin": page_origin(url), **({"Cookie": self.jar.header()} if self.jar.cookies else {})}
        ws, receiver, document = await connect_and_pull(url, self.token, headers, timeout)
        return replace(self, url=url, document=document, reconnects=self.reconnects + 1, _ws=ws, _receiver=receiver)


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
    ca_certs: str | None = None,
    compression: bool = False,
) -> PageView:
    """Load a Bokeh app page and connect its session; the websocket stays open until PageView.close().
    `ca_certs`: a CA bundle to check an https:// server's certificate with (default: the system's).
    `compression`: offer permessage-deflate, as browsers do."""
    jar = CookieJar() if jar is None else jar
    start = time.perf_counter()
    headers = {"Cookie": jar.header()} if jar.cookies else {}
    response = await AsyncHTTPClient().fetch(
        HTTPRequest(url, headers=headers, follow_redirects=False, request_timeout=timeout, ca_certs=ca_certs),
        raise_error=False,
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
    deadline = time.monotonic() + timeout
    for attempt, delay in enumerate(RECONNECT_DELAYS_S):
        await asyncio.sleep(delay)
        try:
            ws, receiver, document = await connect_and_pull(
                url, token, ws_headers, max(deadline - time.monotonic(), 1), ca_certs, compression
            )
            break
        except PageViewError as e:
            last = attempt + 1 == len(RECONNECT_DELAYS_S)
            if e.final or last or time.monotonic() + RECONNECT_DELAYS_S[attempt + 1] > deadline:
                raise
    seconds = time.perf_counter() - start
    view = PageView(url, get_session_id(token), document, jar, seconds, response.code, attempt, ws, receiver, token)
    if document_ready:
        await view.document_ready()
    return view


async def connect_and_pull(
    url: str,
    token: str,
    headers: dict[str, str],
    timeout: float,
    ca_certs: str | None = None,
    compression: bool = False,
) -> tuple[WebSocketClientConnection, Receiver, Document]:
    request = HTTPRequest(
        websocket_url(url), headers=headers, connect_timeout=timeout, request_timeout=timeout, ca_certs=ca_certs
    )
    try:
        ws = await websocket_connect(
            request, subprotocols=["bokeh", token], compression_options={} if compression else None
        )
    except HTTPClientError as e:
        # An upgrade the server answered with an error (403: Origin refused) is final; 599 is tornado's timeout.
        raise PageViewError("websocket", url, _describe(e), final=e.code != 599) from e
    except OSError as e:
        raise PageViewError("websocket", url, _describe(e)) from e
    # As browsers do: a Bokeh message is several websocket frames, and Nagle's algorithm would hold the later
    # ones until the server's delayed ACK (~40 ms a message).
    ws.protocol.set_nodelay(True)
    receiver = Receiver(Protocol())
    try:
        ack = await asyncio.wait_for(_read_message(ws, receiver, url), timeout)
        if ack.msgtype != "ACK":
            raise PageViewError("websocket", url, f"expected ACK, got {ack.msgtype}", final=True)
        await Protocol().create("PULL-DOC-REQ").send(WebSocketClientConnectionWrapper(ws))
        reply = await asyncio.wait_for(_read_reply(ws, receiver, url), timeout)
    except BaseException as e:
        ws.close()
        if isinstance(e, PageViewError):
            raise
        if isinstance(e, asyncio.TimeoutError):
            raise PageViewError("pull", url, f"no document within {timeout:.0f} s") from e
        if isinstance(e, (WebSocketClosedError, StreamClosedError, OSError)):
            raise PageViewError("pull", url, f"connection lost: {_describe(e)}") from e
        raise
    document = Document()
    reply.push_to_document(document)
    document.models.flush_synced()  # the server has every model: events name them by reference, as BokehJS's do
    return ws, receiver, document


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
        setattr(ws, RECEIVED_BYTES, getattr(ws, RECEIVED_BYTES, 0) + len(fragment))
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
            raise PageViewError("pull", url, json.dumps(message.content), final=True)


def _describe(error: Exception) -> str:
    code = getattr(error, "code", None)
    if code:
        return f"HTTP {code} {getattr(error, 'message', '')}".strip()
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


_CSRF = re.compile(rb'name="csrf" value="([^"]+)"')


async def sign_in(
    base_url: str, name: str, password: str, headers: dict[str, str] | None = None
) -> tuple[int, CookieJar, Any]:
    """Sign in at <base_url>/login as a browser does (the form's hidden csrf field, cookies kept): the POST's
    status (303 when signed in), the cookie jar, and the POST's response."""
    jar = CookieJar()
    client = AsyncHTTPClient()
    form = await client.fetch(f"{base_url}/login", headers=headers or {}, follow_redirects=False, raise_error=False)
    jar.update(form.headers.get_list("Set-Cookie"))
    match = _CSRF.search(form.body or b"")
    if not match:
        raise PageViewError("GET", f"{base_url}/login", f"HTTP {form.code}: no sign-in form")
    body = urlencode({"username": name, "password": password, "csrf": match.group(1).decode()})
    response = await client.fetch(
        f"{base_url}/login", method="POST", body=body, follow_redirects=False, raise_error=False,
        headers={**(headers or {}), "Cookie": jar.header(), "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    jar.update(response.headers.get_list("Set-Cookie"))
    return response.code, jar, response
