"""A Bokeh message goes out in one write: its frames (header, metadata, content, each buffer's header and bytes)
framed by tornado as usual (permessage-deflate included) and handed to the socket together.

Bokeh's `Message.send` writes the frames one by one and waits for each: every frame is a turn of the event loop
in which every other ready callback runs first (a page build of 30-100 ms), so a streamed update left the worker
in pieces, late; and each frame is a system call of its own."""

from __future__ import annotations

import json
from collections.abc import Sequence

from bokeh_stack.config.expect import Expect
from bokeh_stack.patches.patching import Fix, _replace

# (payload, binary): one websocket frame.
Frame = tuple[bytes | str, bool]


class _Collected:
    """Stands in for a websocket's stream while tornado frames a message: keeps what it would have written."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes):
        self.chunks.append(data)


def written(messages: int, payload_bytes: int) -> None:
    """What went out in one write: the worker's metrics count it (patches/worker_metrics.py replaces this)."""


def write_frames(handler, frames: Sequence[Frame], new_message: bool = False):
    """Frame each of `frames` as tornado's `write_message` would, then write them with one call to the stream; the
    stream's Future (done once the bytes are with the kernel). The caller holds the handler's write lock or writes
    without a pause between acquiring it and this call. WebSocketClosedError if the websocket is gone.
    `new_message`: a message Bokeh's `send_message` did not count (a feed's)."""
    from tornado.escape import utf8
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    protocol = handler.ws_connection
    if protocol is None or protocol.is_closing():
        raise WebSocketClosedError()
    stream, collected, payload_bytes = protocol.stream, _Collected(), 0
    protocol.stream = collected
    try:
        for payload, binary in frames:
            data = utf8(payload)
            payload_bytes += len(data)
            protocol._message_bytes_out += len(data)
            flags = 0
            if protocol._compressor:
                data = protocol._compressor.compress(data)
                flags |= protocol.RSV1
            protocol._write_frame(True, 0x2 if binary else 0x1, data, flags=flags)
    finally:
        protocol.stream = stream
    try:
        sent = stream.write(b"".join(collected.chunks))
    except StreamClosedError as e:
        raise WebSocketClosedError() from e
    written(1 if new_message else 0, payload_bytes)
    return sent


def message_frames(message) -> list[Frame]:
    """A Bokeh message's frames, in the order Bokeh's `Message.send` writes them."""
    frames: list[Frame] = [(message.header_json, False), (message.metadata_json, False), (message.content_json, False)]
    for buffer in message.buffers:
        frames += [(json.dumps(buffer.ref), False), (buffer.to_bytes(), True)]
    return frames


def messages_in_one_write() -> None:
    """Replace `Message.send` on the worker's websockets (WSHandler) with one write per message; a client's
    connection (Bokeh's own client) keeps Bokeh's way."""
    from bokeh.protocol.message import Message
    from bokeh.server.views.ws import WSHandler
    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    send = Message.send

    async def send_in_one_write(self: Message, conn) -> int:
        if not isinstance(conn, WSHandler):
            return await send(self, conn)
        frames = message_frames(self)
        with await conn.write_lock.acquire():
            try:
                await write_frames(conn, frames)
            except StreamClosedError as e:
                raise WebSocketClosedError() from e
        return sum(len(payload) for payload, _ in frames)

    _replace(Message, "send", send_in_one_write)


def websocket_compression() -> None:
    """Offer permessage-deflate on the worker's websockets (settings session.compression): tornado compresses each
    frame when the browser accepted it. Bokeh's WSHandler offers none."""
    from bokeh.server.views.ws import WSHandler

    _replace(WSHandler, "get_compression_options", lambda self: {})


TORNADO_PROTOCOL = "tornado.websocket:WebSocketProtocol13"
# What write_frames assumes of tornado: how its write_message frames a message.
WRITE_EXPECTS = (
    Expect(
        f"{TORNADO_PROTOCOL}.write_message",
        uses=("_message_bytes_out", "_compressor", "compress", "RSV1", "_write_frame"),
    ),
    Expect(f"{TORNADO_PROTOCOL}._write_frame", params=("fin", "opcode", "data", "flags"), uses=("stream",)),
    Expect(f"{TORNADO_PROTOCOL}.is_closing"),
    Expect("tornado.websocket:WebSocketProtocol.__init__", uses=("stream",)),
    Expect("tornado.websocket:WebSocketHandler.__init__", uses=("ws_connection",)),
)
FIXES = (
    Fix(
        "messages_in_one_write",
        messages_in_one_write,
        (
            Expect(
                "bokeh.protocol.message:Message.send",
                coroutine=True,
                params=("conn",),
                uses=("write_lock", "header_json", "metadata_json", "content_json", "write_buffers"),
            ),
            Expect("bokeh.protocol.message:Message.write_buffers", uses=("_buffers", "ref", "to_bytes")),
            Expect("bokeh.protocol.message:Message.buffers"),
            Expect("bokeh.server.views.ws:WSHandler.send_message", coroutine=True, uses=("send",)),
            *WRITE_EXPECTS,
        ),
    ),
)
# Only with settings session.compression (the worker's --compression).
COMPRESSION = (
    Fix(
        "websocket_compression",
        websocket_compression,
        (
            Expect("tornado.websocket:WebSocketHandler.get_compression_options"),
            Expect("tornado.websocket:WebSocketHandler.get_websocket_protocol", uses=("get_compression_options",)),
        ),
    ),
)
