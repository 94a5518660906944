"""Who is signed in, for app code: `bokeh_stack.current_user(curdoc())`.

With sign-in on (settings auth.mode), nginx asks the sign-in process about every page and hands the worker the
user's name in USER_HEADER, which it overwrites whatever the client sent; the page's session token carries it
(the workers' --include-headers), and a token opens no websocket for another user (bokeh_stack/patches/hardening.py).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

USER_HEADER = "X-Bokeh-Stack-User"
# The signed-in state (bokeh_stack/daemons/signin.py); never copied into a page's session token.
SIGNIN_COOKIE = "bokeh_stack_signin"


def header_value(name: str) -> str:
    """A user's name as USER_HEADER carries it: percent-encoded (a provider's names may hold any character)."""
    return urllib.parse.quote(name, safe="@._-+~!*'()")


def current_user(doc: Any) -> str | None:
    """The signed-in user's name for this document's session; None without sign-in (or outside a session)."""
    context = getattr(doc, "session_context", None)
    request = getattr(context, "request", None) if context is not None else None
    headers = getattr(request, "headers", None) or {}
    value = headers.get(USER_HEADER)
    return urllib.parse.unquote(value) if value else None
