"""Check that an app builds its document: `python -m bokeh_stack.daemons.app_check [--python-path DIR]... SOURCE` runs
one app's code (a directory, script or notebook path, or a function app's `module:function`), the way a worker
does for a new session, and exits non-zero with the app's own error if it fails. It also runs Bokeh's integrity
checks of the document, which the workers leave out (patches/page_cost.py), and prints what they found."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bokeh_stack.config import topology
from bokeh_stack.config.expect import Expect, unmet

# What _build assumes of Bokeh: how `bokeh serve` builds an app from a path, and how a handler says it failed.
EXPECTS = (
    Expect("bokeh.command.util:build_single_handler_application", params=("path",)),
    Expect("bokeh.application.handlers.handler:Handler.failed"),
    Expect("bokeh.application.handlers.handler:Handler.error"),
    Expect("bokeh.application.handlers.handler:Handler.error_detail"),
    Expect("bokeh.core.validation.check:check_integrity", params=("models",)),
    Expect("bokeh.core.validation.check:ValidationIssue.__init__", params=("code", "name", "text", "extra")),
)


def _build(argv: list[str]) -> int:
    changed = unmet(EXPECTS)
    if changed:
        print(f"bokeh-stack cannot check apps with this Bokeh: {'; '.join(changed)}")
        return 2
    from bokeh.command.util import build_single_handler_application

    from bokeh_stack.daemons.worker import split_options
    from bokeh_stack.patches import function_apps

    options, (source,) = split_options(argv)
    sys.path[:0] = options.python_path
    if Path(source).exists():
        app = build_single_handler_application(source)
    else:
        app = function_apps.application(source)
    os.environ[topology.VALIDATE_DOCUMENTS] = "false"  # checked below, once, with what it found kept
    doc = app.create_document()
    failed = [h for h in app.handlers if getattr(h, "failed", False)]
    if failed:
        print("\n".join(f"{h.error}\n{h.error_detail}".strip() for h in failed))
        return 1
    from bokeh.core.validation.check import check_integrity

    issues = check_integrity(doc.models)
    found = [
        f"{kind} {issue.code} ({issue.name}): {issue.text} {issue.extra}".strip()
        for kind, found in (("error", issues.error), ("warning", issues.warning))
        for issue in found
    ]
    print(json.dumps({"roots": len(doc.roots), "validation": found}))
    return 0


if __name__ == "__main__":
    sys.exit(_build(sys.argv[1:]))
