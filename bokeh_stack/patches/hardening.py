"""What a page, a token and a client can reach inside a worker, closed with the same guarded replacements as the
fixes (fixes.Fix: checked against the installed Bokeh first):

- a page's session token carries no request cookie unless settings.session.pass_cookies lists it (Bokeh copies
  every cookie, HttpOnly ones too, into the token it embeds in the page; the headers are limited by the rendered
  `--include-headers`);
- a client never chooses or joins a session by id (Bokeh takes `bokeh-session-id`, `bokeh-token` and the
  `Bokeh-Session-Id` header from any request and joins the session of that id); settings
  session.client_session_ids turns this back on (the worker's --client-session-ids leaves the fix out);
- a token opens only the websocket of the app that made it (Bokeh accepts any app's token on any app's /ws), and
  with sign-in, only for the user it was made for, and only into a session built for that user: anything else is
  refused with 403 before the upgrade;
- the sign-in process can close a user's websockets (POST <prefix>/_bokeh_stack/revoke, never routed by nginx)
  when that user is removed or changes password or groups;
- an ERROR reply to a message the server could not handle says so in a line, without Bokeh's traceback and paths;
- nothing a client sends is logged unbounded: every log line of the worker is cut to LOG_LINE_BYTES (a client's
  megabytes of malformed messages otherwise fill and rotate away the worker log).
"""

from __future__ import annotations

import json
import logging
import traceback

from bokeh_stack.config.expect import Expect
from bokeh_stack.config.topology import route
from bokeh_stack.identity import USER_HEADER
from bokeh_stack.patches.patching import Fix, _replace

TOKEN_APP_KEY = "bokeh_stack_app"
# What a client may send to choose or join a session by id, when the operator has not allowed it.
SESSION_ID_ARGUMENTS = ("bokeh-session-id", "bokeh-token")
SESSION_ID_HEADER = "Bokeh-Session-Id"
log = logging.getLogger("bokeh_stack.hardening")
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


def no_client_session_ids() -> None:
    from bokeh.server.views.session_handler import SessionHandler

    get_session = SessionHandler.get_session

    async def get_own_session(self):
        request = self.request
        for name in SESSION_ID_ARGUMENTS:
            for arguments in (request.arguments, request.query_arguments, request.body_arguments):
                arguments.pop(name, None)
        if SESSION_ID_HEADER in request.headers:
            del request.headers[SESSION_ID_HEADER]
        return await get_session(self)

    _replace(SessionHandler, "get_session", get_own_session)


def _token_from_handshake(request) -> str | None:
    """The token BokehJS sends as the second websocket subprotocol (`bokeh, TOKEN`), read before the upgrade."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    return offered[1] if len(offered) == 2 and offered[0] == "bokeh" else None


def _token_user(payload: dict) -> str:
    return (payload.get("headers") or {}).get(USER_HEADER, "")


def built_for_another(session, user: str) -> bool:
    """Whether a session was built for a user other than `user` (the user its first token was made for)."""
    from bokeh.util.token import get_token_payload

    return bool(session.token) and _token_user(get_token_payload(session.token)) != user


def refusal(handler) -> str | None:
    """Why this websocket request may not open (None: it may): a token of another app, of another user, or of a
    session built for another user. Checked before the upgrade, so that the answer is an HTTP 403."""
    from bokeh.util.token import get_session_id, get_token_payload

    token = _token_from_handshake(handler.request)
    if not token:
        return None  # Bokeh's own open() refuses it
    try:
        payload, session_id = get_token_payload(token), get_session_id(token)
    except Exception:
        return None  # not a token: Bokeh's own checks refuse it
    context = handler.application_context
    made_by = payload.get(TOKEN_APP_KEY)
    if made_by is not None and made_by != context.url:
        return f"a token of app {made_by!r} cannot open {context.url!r}"
    # Signed in (nginx names the user in USER_HEADER), a token opens a websocket for the user it was made for, into
    # a session that was built for that user.
    user = handler.request.headers.get(USER_HEADER) or ""
    if _token_user(payload) != user:
        return f"a token made for user {_token_user(payload)!r} cannot be used by another"
    session = context._sessions.get(session_id)
    if session is not None and built_for_another(session, user):
        return "this session was built for another user"
    return None


def tokens_bound_to_their_app() -> None:
    from bokeh.application.application import Application
    from bokeh.server.tornado import BokehTornado
    from bokeh.server.views.session_handler import SessionHandler
    from bokeh.server.views.ws import WSHandler
    from tornado.web import HTTPError

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

    get_session = SessionHandler.get_session

    async def get_own_session(self):
        session = await get_session(self)
        if built_for_another(session, self.request.headers.get(USER_HEADER) or ""):
            log.warning("refused a page of %s: its session was built for another user", self.request.path[:200])
            raise HTTPError(403)
        return session

    prepare = WSHandler.prepare

    async def prepare_own_sessions_only(self) -> None:
        await prepare(self)
        why = refusal(self)
        if why:
            log.warning("refused a websocket to %s: %s", self.request.path[:200], why)
            raise HTTPError(403)

    _replace(BokehTornado, "__init__", init_naming_apps)
    _replace(Application, "process_request", process_request_naming_app)
    _replace(WSHandler, "prepare", prepare_own_sessions_only)
    _replace(SessionHandler, "get_session", get_own_session)


def revocable_websockets() -> None:
    """POST <prefix>/_bokeh_stack/revoke {"users": [NAME, ...]} (names as USER_HEADER carries them): every open
    websocket of those users is closed (1008), so a removed user, or one whose password or groups changed, keeps no
    open app; their tabs reconnect through nginx, which asks the sign-in process again."""
    from bokeh.server.tornado import BokehTornado
    from tornado.web import HTTPError, RequestHandler

    from bokeh_stack.patches.fixes import open_websockets

    class RevokeHandler(RequestHandler):
        def post(self) -> None:
            try:
                names = set(json.loads(self.request.body)["users"])
            except (ValueError, KeyError, TypeError):
                raise HTTPError(400) from None
            closed = 0
            for handler in open_websockets():
                if (handler.request.headers.get(USER_HEADER) or "") in names:
                    handler.close(1008, "signed out")
                    closed += 1
            if closed:
                log.info("closed %d websockets of %d signed-out users", closed, len(names))
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"closed": closed}))

    tornado_init = BokehTornado.__init__

    def init_with_revoke(self, applications, *args, extra_patterns=None, **kwargs) -> None:
        extra_patterns = [*(extra_patterns or []), (route("revoke"), RevokeHandler)]
        tornado_init(self, applications, *args, extra_patterns=extra_patterns, **kwargs)

    _replace(BokehTornado, "__init__", init_with_revoke)


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
        "no_client_session_ids",
        no_client_session_ids,
        (
            Expect(
                "bokeh.server.views.session_handler:SessionHandler.get_session",
                coroutine=True,
                uses=("get_argument", "headers", "create_session_if_needed"),
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
            Expect(f"{WS}.prepare", coroutine=True),
            Expect(f"{WS}.select_subprotocol", uses=("_token",)),
            Expect(f"{WS}._async_open", uses=("get_session_id", "create_session_if_needed")),
            Expect(f"{WS}.__init__", uses=("application_context",)),
            Expect("bokeh.server.contexts:ApplicationContext.create_session_if_needed", uses=("_sessions",)),
            Expect("bokeh.server.session:ServerSession.token"),
            Expect("bokeh.util.token:get_token_payload"),
            Expect("bokeh.util.token:get_session_id"),
        ),
    ),
    Fix(
        "revocable_websockets",
        revocable_websockets,
        (Expect("bokeh.server.tornado:BokehTornado.__init__", params=("applications", "extra_patterns")),),
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
