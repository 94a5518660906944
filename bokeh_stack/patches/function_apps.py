"""Apps that are a function of a program's own (setting function_apps: {ROUTE: "package.module:function"}): Bokeh's
FunctionHandler, with an error that stays the session's own.

Bokeh's FunctionHandler lets an exception out of the function by default: the session is never finished (its
pending creation stays in the worker for good) and the page is tornado's bare 500. With trap_exceptions it records
the error on the handler, which then counts as failed for every later session too. Here each session's build
starts unfailed, so a broken page answers the stack's 500 (fixes.failed_app_answers_500) and the next may serve.
A function that cannot even be imported fails each of its pages the same way; the worker and its other apps serve.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Callable
from typing import Any

from bokeh_stack.config.expect import Expect

log = logging.getLogger("bokeh_stack.function_apps")

# What this module assumes of Bokeh: checked when a worker starts (worker.py) and by tests/test_fixes.py.
EXPECTS = (
    Expect("bokeh.application.handlers.function:FunctionHandler.modify_document", uses=("handle_exception",)),
    Expect("bokeh.application.handlers.handler:handle_exception", uses=("_failed", "_error", "_error_detail")),
    Expect("bokeh.application.handlers.handler:Handler.__init__", uses=("_failed",)),
)


class FunctionAppError(RuntimeError):
    """A function app's function could not be imported."""


def parse(option: str) -> tuple[str, str]:
    """`ROUTE=package.module:function` (a worker's --function-app) -> (ROUTE, package.module:function)."""
    route, _, function = option.partition("=")
    return route, function


def load(spec: str) -> Callable[[Any], Any]:
    """The function `package.module:function` names, imported."""
    module_name, _, name = spec.partition(":")
    function = getattr(importlib.import_module(module_name), name)
    if not callable(function):
        raise TypeError(f"{spec} is not a function, it is {type(function).__name__}")
    return function


def handler_for(function: Callable[[Any], Any]):
    """A Bokeh handler running `function(doc)` for each session, its errors each session's own."""
    from bokeh.application.handlers.function import FunctionHandler

    class SessionFunctionHandler(FunctionHandler):
        def modify_document(self, doc) -> None:
            self._failed = False
            super().modify_document(doc)

    return SessionFunctionHandler(function, trap_exceptions=True)


def application(spec: str):
    """The Bokeh Application serving `package.module:function`. Imported now: an import error is logged once and
    fails each page of this app (500), not the worker."""
    from bokeh.application import Application

    try:
        function = load(spec)
    except Exception as e:
        log.error("function app %s cannot be imported:\n%s", spec, traceback.format_exc())
        message = f"function app {spec} cannot be imported: {type(e).__name__}: {e}"

        def function(doc) -> None:
            raise FunctionAppError(message)

    return Application(handler_for(function))
