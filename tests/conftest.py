from __future__ import annotations

import shutil

import pytest

from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import load
from bokeh_stack.provisioning import privileges
from harness.stack import SHIPPED_APPS, RunningStack, build_wheel, start_stack

from .docker_engine import ensure_base_image, start_engine, stop_engine


@pytest.fixture(scope="session", autouse=True)
def service_user(tmp_path_factory):
    """Started as root, the service user exists as provisioning (`up`, Salt) makes it: the tests that render the
    configs without `up` hand directories to it, whichever of them runs first on a new host."""
    runtime_dir = tmp_path_factory.mktemp("service-user")
    settings = load(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(runtime_dir)})
    privileges.ensure_service_user(RunPlan(settings), print)


CALL_FAILED = pytest.StashKey[bool]()  # whether a test's call phase failed (the stacks fixture reads it)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture
def stacks(tmp_path, request):
    """Start real stacks with stacks(apps_dir, **settings); every one is stopped after the test, pass or fail. A
    failed test shows the end of each stack's logs (a worker restarted, nginx's errors) with its captured output."""
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
        if request.node.stash.get(CALL_FAILED, False):
            print(stack.log_tails())


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
