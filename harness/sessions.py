"""A session built the way Bokeh's server builds one for a page request, without a server: the application's
context (its on_server_loaded hook run once), then a session per request. The equivalence test and the bench's
page-cost floor both build sessions this way."""

from __future__ import annotations

from bokeh.application import Application
from bokeh.server.contexts import ApplicationContext
from bokeh.server.session import ServerSession
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.ioloop import IOLoop


def application_context(application: Application) -> ApplicationContext:
    """The context a server keeps for an application, on the current event loop, after on_server_loaded."""
    context = ApplicationContext(application, io_loop=IOLoop.current())
    context.run_load_hook()
    return context


async def build_session(context: ApplicationContext, session_id: str, path: str = "/app") -> ServerSession:
    """A new session, built for a GET of `path` as a browser sends it."""
    request = HTTPServerRequest(
        start_line=RequestStartLine("GET", path, "HTTP/1.1"), headers=HTTPHeaders({"Host": "127.0.0.1"})
    )
    return await context.create_session_if_needed(session_id, request)
