"""The generated secret: two first starts at once (two worker containers on one volume) share one key."""

from __future__ import annotations

import threading
import time

from bokeh_stack.config.secret import ensure_secret


def test_a_second_first_start_waits_for_the_key_being_written(tmp_path):
    path = tmp_path / "secret"
    path.touch(mode=0o600)  # the other process has created the file and not yet written its key

    def write_late() -> None:
        time.sleep(0.3)
        path.write_text("k" * 48 + "\n")

    writer = threading.Thread(target=write_late)
    writer.start()
    try:
        assert ensure_secret(path, environ={}) == "k" * 48
    finally:
        writer.join()
