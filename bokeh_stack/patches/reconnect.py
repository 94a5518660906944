"""A tab that reconnects gets its whole document again, numpy arrays included.

BokehJS (3.9) pulls the document again after its websocket reconnects, and replaces its own with it
(ClientConnection._repull_session_doc -> Document.replace_with_json), but leaves out the binary buffers of the
reply: a document holding any numpy array fails with "buffer for id=... not found" and the tab keeps its stale
document for good. A page's first pull keeps Bokeh's binary buffers; every other pull (a websocket opened again,
to this worker or to another that rebuilt or resumed the session) gets them inline, as base64, which both of
BokehJS's paths read."""

from __future__ import annotations

from bokeh_stack.config.expect import Expect
from bokeh_stack.patches.patching import Fix, _replace

# On a session its page's GET built, until its first websocket opens; on that websocket, its pull may be binary.
_FRESH_PAGE = "_bokeh_stack_fresh_page"
_FIRST_PULL = "_bokeh_stack_first_pull"


def repull_with_inline_buffers() -> None:
    from bokeh.protocol.messages.pull_doc_reply import PullDoc, pull_doc_reply
    from bokeh.server.session import ServerSession
    from bokeh.server.views.session_handler import SessionHandler
    from bokeh.server.views.ws import WSHandler
    from bokeh.util.token import get_session_id

    get_session = SessionHandler.get_session
    async_open = WSHandler._async_open
    pull = ServerSession.pull

    async def get_page_session(self: SessionHandler) -> ServerSession:
        session = await get_session(self)
        session.__dict__.setdefault(_FRESH_PAGE, True)
        return session

    async def open_marked(self: WSHandler, token: str) -> None:
        session = self.application_context._sessions.get(get_session_id(token))
        self.__dict__[_FIRST_PULL] = session is not None and session.__dict__.pop(_FRESH_PAGE, False)
        return await async_open(self, token)

    def pull_again(cls, message, connection):
        if connection._socket.__dict__.get(_FIRST_PULL, True):
            return pull(message, connection)
        session = connection.session

        def reply() -> pull_doc_reply:
            header = pull_doc_reply.create_header(request_id=message.header["msgid"])
            return pull_doc_reply(header, {}, PullDoc(doc=session.document.to_json(deferred=False)))

        return session.with_document_locked(reply)

    _replace(SessionHandler, "get_session", get_page_session)
    _replace(WSHandler, "_async_open", open_marked)
    _replace(ServerSession, "pull", classmethod(pull_again))


FIXES = (
    Fix(
        "repull_with_inline_buffers",
        repull_with_inline_buffers,
        (
            Expect("bokeh.server.views.session_handler:SessionHandler.get_session", coroutine=True),
            Expect("bokeh.server.views.ws:WSHandler._async_open", coroutine=True, params=("token",)),
            Expect("bokeh.server.session:ServerSession.pull", params=("message", "connection"), uses=("_handle_pull",)),
            Expect("bokeh.server.session:ServerSession._handle_pull", uses=("create",)),
            Expect("bokeh.server.session:ServerSession.with_document_locked", coroutine=True),
            Expect("bokeh.server.protocol_handler:ProtocolHandler.__init__", uses=("pull",)),
            Expect("bokeh.server.connection:ServerConnection.__init__", uses=("_socket",)),
            Expect("bokeh.protocol.messages.pull_doc_reply:pull_doc_reply.create", uses=("to_json", "PullDoc")),
            Expect("bokeh.protocol.messages.pull_doc_reply:PullDoc"),
            Expect("bokeh.document.document:Document.to_json", params=("deferred",)),
            Expect("bokeh.protocol.message:Message.create_header", params=("request_id",)),
        ),
    ),
)
