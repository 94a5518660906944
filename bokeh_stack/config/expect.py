"""What bokeh-stack assumes of Bokeh's and tornado's internals, checked before anything relies on it: every reach
into them names its target here (`Expect`), and the program that reaches stops with what changed (`unmet`)."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Expect:
    """One assumption of a fix about a function or attribute, `module:Qualified.name`."""

    target: str
    uses: tuple[str, ...] = ()  # names the function's own code must still use (attributes, globals, calls)
    coroutine: bool | None = None
    params: tuple[str, ...] = ()

    def problem(self) -> str | None:
        module_name, _, qualname = self.target.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            return f"{self.target} is gone"
        if not (self.uses or self.coroutine is not None or self.params):
            return None
        if not callable(obj):
            return f"{self.target} is no longer a function"
        function = inspect.unwrap(obj)  # the code behind a decorator (tornado's @authenticated, Bokeh's locks)
        awaitable = inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(function)
        if self.coroutine is not None and awaitable != self.coroutine:
            return f"{self.target} is {'no longer' if self.coroutine else 'now'} a coroutine function"
        missing = [p for p in self.params if p not in inspect.signature(function).parameters]
        if missing:
            return f"{self.target} takes no {', '.join(missing)} any more"
        names = set(getattr(function, "__code__", None) and _names(function.__code__) or ())
        unused = [name for name in self.uses if name not in names]
        if unused:
            return f"{self.target} no longer uses {', '.join(unused)}"
        return None


def unmet(expects: tuple[Expect, ...]) -> list[str]:
    """What each of `expects` finds not so (empty: all hold)."""
    return [p for p in (e.problem() for e in expects) if p]


def _names(code) -> set[str]:
    """Every name a code object and the code nested in it (comprehensions, inner functions) use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names(const)
    return names
