"""The naive large-data app's series: the shipped app's, built once per worker the same way (the bench puts
apps/large_data on the workers' python_path)."""

from decimation import build_series


def on_server_loaded(server_context):
    server_context.large_data = build_series()
