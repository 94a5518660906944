"""The large_data app's series and its min/max decimation (a module of its own: the app's main.py runs again for
every session, this module once per worker process).

A series is 10 million float32 samples at a fixed interval: the x of sample i is i * DT_S, so only y is stored
(40 MB). A window of it is drawn either raw or as the minimum and maximum of each pixel column, two points per
column: what a line of that many samples draws on that many pixels anyway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# The points of the series (LARGE_DATA_POINTS sets fewer, for quick tests).
POINTS = int(os.environ.get("LARGE_DATA_POINTS", 10_000_000))
DT_S = 0.001  # one sample a millisecond: 10 million span 2.8 hours


@dataclass(frozen=True)
class Series:
    y: np.ndarray
    dt: float = DT_S

    @property
    def span(self) -> float:
        return len(self.y) * self.dt


def build_series(points: int = POINTS, seed: int = 7) -> Series:
    """An instrument's trace: a slow random walk, a daily-like swing, noise, and rare spikes (the samples a naive
    decimation drops and a min/max one keeps)."""
    rng = np.random.default_rng(seed)
    y = np.cumsum(rng.standard_normal(points, dtype=np.float32) * np.float32(0.02), dtype=np.float32)
    y += np.sin(np.arange(points, dtype=np.float32) * np.float32(2 * np.pi / max(points / 3, 1))) * np.float32(5)
    y += rng.standard_normal(points, dtype=np.float32) * np.float32(0.3)
    spikes = rng.integers(0, points, size=max(points // 1_000_000, 1) * 5)
    y[spikes] += np.float32(12)
    return Series(y)


def window(series: Series, x0: float, x1: float, columns: int) -> dict[str, np.ndarray]:
    """The samples between x0 and x1 as at most 2 * columns points: raw if there are no more than that, else the
    minimum and the maximum of each column's samples, in x order."""
    columns = max(int(columns), 1)
    start = max(int(np.floor(x0 / series.dt)), 0)
    stop = min(int(np.ceil(x1 / series.dt)) + 1, len(series.y))
    count = stop - start
    if count <= 0:
        return {"x": np.zeros(0), "y": np.zeros(0, dtype=np.float32)}
    if count <= 2 * columns:
        return {"x": np.arange(start, stop) * series.dt, "y": series.y[start:stop]}
    per_column = count // columns
    used = per_column * columns  # the last few samples (fewer than one column's) join the last column's range
    chunks = series.y[start : start + used].reshape(columns, per_column)
    lows, highs = chunks.min(axis=1), chunks.max(axis=1)
    first = start + np.arange(columns) * per_column
    x = np.empty(2 * columns)
    x[0::2], x[1::2] = first * series.dt, (first + per_column - 1) * series.dt
    y = np.empty(2 * columns, dtype=np.float32)
    y[0::2], y[1::2] = lows, highs
    return {"x": x, "y": y}
