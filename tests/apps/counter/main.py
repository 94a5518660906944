"""Counter.

A test app that records every execution of its code for a session (one line per session built) in the file named by
$COUNTER_RECORD_FILE: the worker's port, the session id, the app name and the host (container) name.
"""

import os
import socket
from pathlib import Path

from bokeh.models import Div
from bokeh.plotting import curdoc

doc = curdoc()
# supervisord names each worker process <program>_<port>; bokeh serve hides its own argv from apps.
port = os.environ.get("SUPERVISOR_PROCESS_NAME", "standalone_0").rsplit("_", 1)[1]
session_id = doc.session_context.id if doc.session_context else "standalone"
app = Path(__file__).resolve().parent.name
record = os.environ.get("COUNTER_RECORD_FILE")
if record and doc.session_context:  # a session; not `bokeh-stack check` running the app once
    # One short O_APPEND write per line: lines from concurrent workers never interleave.
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{port} {session_id} {app} {socket.gethostname()}\n".encode())
    finally:
        os.close(fd)
doc.add_root(Div(text=f"served by the worker on port {port}", name="worker"))
doc.title = "Counter"
