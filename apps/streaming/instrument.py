"""The streaming app's instrument: one reading per tick for the whole worker, shown by every session (a Feed,
bokeh_stack/feed.py). It lives in a module of its own because the feed outlives the session whose main.py made it."""

import time

import numpy as np
from bokeh.palettes import Viridis256

rng = np.random.default_rng()
_last = {"value": 0.0}


def read() -> dict[str, list]:
    """One row: `t` is the server's clock (ms since the epoch) when the point was made, so clients can measure the
    delay; a random walk, and a circle somewhere."""
    _last["value"] += rng.standard_normal()
    return {
        "t": [time.time() * 1000],
        "value": [_last["value"]],
        "x": [rng.random()],
        "y": [rng.random()],
        "size": [rng.random() * 20 + 5],
        "color": [Viridis256[rng.integers(0, 256)]],
    }
