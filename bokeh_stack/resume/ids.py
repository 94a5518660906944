"""Model ids that are the same in every worker that builds a session: made from the session's id and the order in
which the session's code creates its models.

Bokeh numbers models from one counter per process (p1001, p1002, ...), so the same page built in another worker,
or again in the same worker, has other ids, and what a user did to model p1234 names nothing there. A session's app
code creates its models in the same order each time it runs with the same inputs (the page request, then the
user's changes, replayed in order), so the n-th model the session creates gets the same id wherever it is built:
`p<tag>-<n>`, where the tag (6 hex digits) comes from the session id and keeps two sessions embedded in one page
apart. Models made outside a session's code (a Document's own, the app's on_server_loaded) keep Bokeh's ids."""

from __future__ import annotations

import hashlib
import itertools

from bokeh_stack.config.expect import Expect
from bokeh_stack.patches.patching import Fix, _replace

# Where the session's sequence is kept, on its Document.
_SEQUENCE = "_bokeh_stack_ids"


def session_tag(session_id: str) -> str:
    return hashlib.blake2s(session_id.encode(), digest_size=3).hexdigest()


def _sequence(doc):
    """The id sequence of `doc`'s session, made on its first model; None for a document without a session."""
    sequence = doc.__dict__.get(_SEQUENCE)
    if sequence is None:
        context = doc._session_context and doc._session_context()
        if context is None:
            return None
        tag = session_tag(context.id)
        sequence = doc.__dict__[_SEQUENCE] = (f"p{tag}-{n}" for n in itertools.count(1))
    return sequence


def session_model_ids() -> None:
    """Number the models a session's code creates per session: while its document is built (any kind of app:
    Bokeh's function handler does not make the document curdoc()) and in its callbacks (curdoc() is its
    document then)."""
    import bokeh.model.model as model_module
    from bokeh.application.application import Application
    from bokeh.io import doc as io_doc

    make_id = model_module.make_id
    patched = io_doc._PATCHED_CURDOCS
    building: list = []  # the document being built, while it is
    initialize_document = Application.initialize_document

    def initialize_numbered(self: Application, doc) -> None:
        building.append(doc)
        try:
            initialize_document(self, doc)
        finally:
            building.pop()

    def make_model_id():
        doc = building[-1] if building else patched[-1]() if patched else None
        doc = getattr(doc, "_doc", doc)  # a callback without the document lock has an UnlockedDocumentProxy
        sequence = doc is not None and _sequence(doc)
        return next(sequence) if sequence else make_id()

    _replace(Application, "initialize_document", initialize_numbered)
    _replace(model_module, "make_id", make_model_id)


FIXES = (
    Fix(
        "session_model_ids",
        session_model_ids,
        (
            Expect("bokeh.model.model:make_id"),
            Expect("bokeh.model.model:Model.__new__", uses=("make_id",)),
            Expect("bokeh.application.application:Application.initialize_document", params=("doc",)),
            Expect("bokeh.io.doc:_PATCHED_CURDOCS"),
            Expect("bokeh.io.doc:curdoc", uses=("_PATCHED_CURDOCS",)),
            Expect("bokeh.document.locking:UnlockedDocumentProxy.__init__", uses=("_doc",)),
            Expect("bokeh.document.document:Document.__init__", uses=("_session_context",)),
            Expect("bokeh.server.contexts:BokehSessionContext.id"),
        ),
    ),
)
