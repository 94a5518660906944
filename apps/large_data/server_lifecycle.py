"""Server hooks of the large_data app: the series is built once per worker, when the worker loads the app, and
shared by all its sessions (each session only holds what it sends: a window of at most twice its plot's width)."""

import logging

from decimation import build_series

log = logging.getLogger("large_data")


def on_server_loaded(server_context):
    server_context.large_data = build_series()
    log.info(
        "large_data: %d points, %.0f MB", len(server_context.large_data.y), server_context.large_data.y.nbytes / 2**20
    )
