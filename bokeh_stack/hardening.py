"""What a page, a token and a client can reach inside a worker, closed with the same guarded replacements as the
fixes (fixes.Fix: checked against the installed Bokeh first):

- a page's session token carries no request cookie unless settings.session.pass_cookies lists it (Bokeh copies
  every cookie, HttpOnly ones too, into the token it embeds in the page; the headers are limited by the rendered
  `--include-headers`);
- a token opens only the websocket of the app that made it (Bokeh accepts any app's token on any app's /ws), and
  with sign-in, only for the user it was made for;
- an ERROR reply to a message the server could not handle says so in a line, without Bokeh's traceback and paths;
- nothing a client sends is logged unbounded: every log line of the worker is cut to LOG_LINE_BYTES (a client's
  megabytes of malformed messages otherwise fill and rotate away the worker log).
"""

from __future__ import annotations

import logging
import traceback

from .fixes import Expect, Fix, _replace
from .identity import USER_HEADER

TOKEN_APP_KEY = "bokeh_stack_app"
CLIENT_ERROR_TEXT = "the server could not handle this message (details are in the worker log)"
# Longest log message, and longest traceback, a worker writes; the rest is replaced by its size.
LOG_LINE_BYTES = 500
LOG_TRACEBACK_BYTES = 4000


def cut(text: str, most: int) -> str:
    if len(text) <= most:
        return text
    return f"{text[:most]}... [cut: {len(text)} characters in all]"


def bounded_log_records() -> None:
    """Every log record's message and traceback cut to a bounded size, whatever the logger (stdlib only)."""
    make_record = logging.getLogRecordFactory()

    def bounded_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        message = record.getMessage()
        if len(message) > LOG_LINE_BYTES:
            record.msg, record.args = cut(message, LOG_LINE_BYTES), None
        if record.exc_info and record.exc_info[0] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text, record.exc_info = cut(text, LOG_TRACEBACK_BYTES), None
        return record

    logging.setLogRecordFactory(bounded_record)


def no_cookies_in_tokens() -> None:
    from bokeh.server.tornado import BokehTornado

    tornado_init = BokehTornado.__init__

    def init_without_cookies(self, *args, include_cookies=None, exclude_cookies=None, **kwargs) -> None:
        if include_cookies is None and not exclude_cookies:
            include_cookies = []  # none, instead of Bokeh's all
        tornado_init(self, *args, include_cookies=include_cookies, exclude_cookies=exclude_cookies, **kwargs)

    _replace(BokehTornado, "__init__", init_without_cookies)


def tokens_bound_to_their_app() -> None:
    from bokeh.application.application import Application
    from bokeh.protocol.exceptions import ProtocolError
    from bokeh.server.tornado import BokehTornado
    from bokeh.server.views.ws import WSHandler
    from bokeh.util.token import get_token_payload

    tornado_init = BokehTornado.__init__

    def init_naming_apps(self, *args, **kwargs) -> None:
        tornado_init(self, *args, **kwargs)
        for url, context in self.applications.items():
            context.application._bokeh_stack_url = url

    process_request = Application.process_request

    def process_request_naming_app(self, request) -> dict:
        data = process_request(self, request)
        url = getattr(self, "_bokeh_stack_url", None)
        return {**data, TOKEN_APP_KEY: url} if url is not None else data

    ws_open = WSHandler.open

    def open_own_app_only(self) -> None:
        try:
            payload = get_token_payload(self._token) if self._token else {}
        except Exception:
            payload = {}  # not a token: Bokeh's own checks refuse it
        made_by = payload.get(TOKEN_APP_KEY)
        if made_by is not None and made_by != self.application_context.url:
            self.close()
            raise ProtocolError(f"a token of app {made_by!r} cannot open {self.application_context.url!r}")
        # Signed in (nginx names the user in USER_HEADER), a token opens a websocket for the user it was made for.
        made_for = (payload.get("headers") or {}).get(USER_HEADER, "")
        if payload and made_for != (self.request.headers.get(USER_HEADER) or ""):
            self.close()
            raise ProtocolError(f"a token made for user {made_for!r} cannot be used by another")
        return ws_open(self)

    _replace(BokehTornado, "__init__", init_naming_apps)
    _replace(Application, "process_request", process_request_naming_app)
    _replace(WSHandler, "open", open_own_app_only)


def errors_without_traceback() -> None:
    from bokeh.server.connection import ServerConnection

    def short_error(self, message, text: str):
        reply = self.protocol.create("ERROR", message.header["msgid"], CLIENT_ERROR_TEXT)
        reply.content["traceback"] = None  # Bokeh puts the server's traceback, with its paths, in the reply
        return reply

    _replace(ServerConnection, "error", short_error)


WS = "bokeh.server.views.ws:WSHandler"
FIXES = (
    Fix("bounded_log_records", bounded_log_records, ()),
    Fix(
        "no_cookies_in_tokens",
        no_cookies_in_tokens,
        (
            Expect("bokeh.server.tornado:BokehTornado.__init__", params=("include_cookies", "exclude_cookies")),
            Expect(
                "bokeh.server.views.session_handler:SessionHandler.get_session",
                uses=("include_cookies", "exclude_cookies", "generate_jwt_token"),
            ),
        ),
    ),
    Fix(
        "tokens_bound_to_their_app",
        tokens_bound_to_their_app,
        (
            Expect("bokeh.server.tornado:BokehTornado.applications"),
            Expect("bokeh.application.application:Application.process_request", params=("request",)),
            Expect(
                "bokeh.server.views.session_handler:SessionHandler.get_session",
                uses=("process_request", "include_headers", "headers"),
            ),
            Expect(f"{WS}.open", uses=("_token", "get_token_payload", "close")),
            Expect(f"{WS}.__init__", uses=("application_context",)),
            Expect("bokeh.util.token:get_token_payload"),
            Expect("bokeh.protocol.exceptions:ProtocolError"),
        ),
    ),
    Fix(
        "errors_without_traceback",
        errors_without_traceback,
        (
            Expect("bokeh.server.connection:ServerConnection.error", params=("message", "text")),
            Expect("bokeh.server.protocol_handler:ProtocolHandler.handle", uses=("error",)),
            Expect("bokeh.protocol.messages.error:error.create", uses=("format_exception",)),
        ),
    ),
)
