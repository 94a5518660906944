"""A broken app's page: 500 and a page that says where its error is, instead of Bokeh's blank page with 200."""

from __future__ import annotations

from bokeh_stack.patches.patching import _replace, log

# Where a worker's log is (supervisord sets it per worker): the page of a broken app points the operator there.
WORKER_LOG_ENV = "BOKEH_STACK_WORKER_LOG"
_FAILED_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{app}: failed</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;color:#222}}
pre{{background:#f6f6f6;padding:1rem;overflow:auto;font-size:.85rem}}</style></head>
<body><h1>{app} could not start</h1>
<p>The app <strong>{app}</strong> raised an error while building this page. Other apps are not affected.</p>
<p>The error and its traceback are in the worker log <code>{log}</code>.</p>{detail}
<p><a href="{index}">All apps</a></p></body></html>
"""


def failed_app_answers_500() -> None:
    """A page whose app raised while building the document answers 500, with a page that names the app and the
    log holding its error (the traceback itself only to a browser on this machine), instead of Bokeh's blank page
    with status 200: users see nothing and monitoring sees success. The session is left to expire like any
    unused one."""
    import html
    import ipaddress
    import os

    from bokeh.application.application import Application
    from bokeh.server.views.session_handler import SessionHandler
    from tornado.web import Finish

    initialize_document = Application.initialize_document

    def initialize_and_flag(self: Application, doc) -> None:
        initialize_document(self, doc)
        failed = [h for h in self.handlers if h.failed]
        if failed:
            doc._bokeh_stack_error = "\n".join(f"{h.error}\n{h.error_detail}".strip() for h in failed)

    get_session = SessionHandler.get_session

    async def get_session_or_500(self: SessionHandler):
        session = await get_session(self)
        error = getattr(session.document, "_bokeh_stack_error", None)
        if error is None:
            return session
        index, _, app = self.request.path.rstrip("/").rpartition("/")
        log.error("app %s failed to build its page:\n%s", app, error)
        try:
            local = ipaddress.ip_address(self.request.remote_ip).is_loopback
        except ValueError:
            local = False
        detail = f"<pre>{html.escape(error)}</pre>" if local else ""
        where = os.environ.get(WORKER_LOG_ENV, "this worker's output")
        self.set_status(500)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        page = _FAILED_PAGE.format(app=html.escape(app), log=html.escape(where), detail=detail, index=index + "/")
        raise Finish(page)

    _replace(Application, "initialize_document", initialize_and_flag)
    _replace(SessionHandler, "get_session", get_session_or_500)
