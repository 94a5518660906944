from __future__ import annotations

import shutil

import pytest

from harness.stack import RunningStack, build_wheel, start_stack

from .docker_engine import ensure_base_image, start_engine, stop_engine


@pytest.fixture
def stacks(tmp_path):
    """Start real stacks with stacks(apps_dir, **settings); every one is stopped after the test, pass or fail."""
    started: list[RunningStack] = []

    def start(apps_dir, ready: bool = True, up_args: tuple[str, ...] = (), **settings) -> RunningStack:
        directory = tmp_path / f"stack{len(started)}"
        directory.mkdir()
        stack = start_stack(directory, apps_dir, ready=ready, up_args=up_args, **settings)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


@pytest.fixture(scope="session")
def nginx_available():
    if shutil.which("nginx") is None and not shutil.os.path.exists("/usr/sbin/nginx"):
        pytest.fail("nginx is not installed: `make test` installs it (apt-get install nginx-light)")


@pytest.fixture(scope="session")
def engine():
    """Our own dockerd with the debian:bookworm-slim base image, for the compose and Salt tests."""
    engine = start_engine()
    try:
        ensure_base_image(engine)
        yield engine
    finally:
        stop_engine(engine)


@pytest.fixture(scope="session")
def wheel():
    """The bokeh-stack wheel, built once a run from this checkout (`make wheel`)."""
    return build_wheel()
