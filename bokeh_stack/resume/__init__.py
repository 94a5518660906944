"""Sessions that come back as their users left them when their worker goes away (resume/sessions.py).

For app code: `bokeh_stack.resumed(curdoc())` says whether this session was resumed, and with how many of its
browser's messages (None: it started afresh)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Where a resumed session's Document keeps its Resumed.
RESUMED_ATTR = "_bokeh_stack_resumed"


@dataclass(frozen=True)
class Resumed:
    """What a resumed session got back: `messages` of its browser's, replayed in order."""

    messages: int
    ready: bool  # DocumentReady was among them


def resumed(doc: Any) -> Resumed | None:
    """What `doc`'s session got back when it was resumed; None for a session that started afresh."""
    return getattr(doc, "__dict__", {}).get(RESUMED_ATTR)
