"""A few lines of HTTP on a unix socket, for the pools program's waiting room (nginx's requests for a pool while it
has no worker, or while nginx has not read its new servers yet) and its control socket (`bokeh-stack scale`): one
request a connection, its head at most MAX_HEAD bytes. A handler answers, or hands the connection, from its
request on, to a worker (Relay): a page or a websocket then goes on as if nginx had sent it there. Standard library
only."""

from __future__ import annotations

import asyncio
import html
import os
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bokeh_stack.config.topology import Endpoint

MAX_HEAD = 65536
HEAD_TIMEOUT_S = 10.0
RELAY_CHUNK = 65536
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent: path and query
    headers: dict[str, str]
    head: bytes = b""  # the request line and headers as received, for a relay

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)

    @property
    def same_site(self) -> str:
        """The target, to send the client back to: a path on this site (never //elsewhere)."""
        return self.target if self.target.startswith("/") and not self.target.startswith("//") else "/"

    @property
    def websocket(self) -> bool:
        return self.headers.get("upgrade", "").lower() == "websocket"

    def app(self, root: str) -> str:
        """The app a path under `root` (the prefix and /) is for: /prefix/NAME/... -> NAME."""
        return self.path.removeprefix(root).split("/", 1)[0]


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    html: bool = False

    def encode(self) -> bytes:
        body = self.body.encode()
        kind = "text/html; charset=utf-8" if self.html else "text/plain; charset=utf-8"
        head = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, '')}", f"Content-Type: {kind}"]
        head += [f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close"]
        head += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Relay:
    """Hand the connection, from its request on, to the server at `endpoint` (unix:/path or host:port)."""

    endpoint: str


Handler = Callable[[Request], Awaitable[Response | Relay]]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        async with asyncio.timeout(HEAD_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(parts[0], parts[1], headers, head)


async def relay(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to: Relay) -> None:
    """The request, and everything after it both ways (a body, a websocket's frames), to and from `to`, until
    either side closes."""
    endpoint = Endpoint.parse(to.endpoint)
    if endpoint.socket:
        their_reader, their_writer = await asyncio.open_unix_connection(endpoint.socket)
    else:
        their_reader, their_writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    their_writer.write(request.head)

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(RELAY_CHUNK):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()

    await asyncio.gather(pump(reader, their_writer), pump(their_reader, writer), return_exceptions=True)


async def serve_unix(path: str, handler: Handler, mode: int) -> asyncio.Server:
    """Serve `handler` on a unix socket at `path` (replacing a stale one), with permissions `mode`."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            try:
                answer = await handler(request) if request else Response(400, "bad request\n")
            except Exception:  # a bug: the client gets an answer, the log the traceback
                traceback.print_exc()
                answer = Response(500, "internal error\n")
            if isinstance(answer, Relay) and request:
                await relay(request, reader, writer, answer)
            else:
                writer.write(answer.encode())
                await writer.drain()
        except OSError:
            pass  # the client, or the server relayed to, went away
        finally:
            writer.close()

    Path(path).unlink(missing_ok=True)
    server = await asyncio.start_unix_server(connection, path, limit=MAX_HEAD)
    os.chmod(path, mode)
    return server


async def request(path: str, method: str, target: str, timeout: float) -> tuple[int, str]:
    """(status, body) of one request to a unix socket served here."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


def waiting_page(target: str) -> str:
    """What a visitor sees if the worker takes longer than nginx lets a page wait: it asks again by itself."""
    again = html.escape(target, quote=True)
    return (
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2>"
        f'<title>Starting</title><p style="font:16px system-ui,sans-serif;margin:3em">This app is starting: '
        f'the page comes by itself in a moment (or <a href="{again}">now</a>).</p>\n'
    )
