"""How a fix replaces one entry point of Bokeh or tornado: it records what it replaced (`undo` puts it back) and
names what it assumes of it (`Fix.expects`, checked before anything is replaced)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bokeh_stack.config.expect import Expect, unmet

log = logging.getLogger("bokeh_stack.fixes")
_replaced: list[tuple[object, str, object]] = []


class FixTargetChanged(RuntimeError):
    """What a fix replaces is not what it was written for (a Bokeh or tornado upgrade)."""


@dataclass(frozen=True)
class Fix:
    name: str
    apply: Callable[[], None]
    expects: tuple[Expect, ...]

    def problems(self) -> list[str]:
        return unmet(self.expects)


def _replace(owner: object, name: str, value: object) -> None:
    _replaced.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


def undo() -> None:
    """Put back everything apply() replaced, newest first."""
    while _replaced:
        owner, name, original = _replaced.pop()
        setattr(owner, name, original)
