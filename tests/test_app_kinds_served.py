"""Every kind of app served by a real stack: a directory, a .py script, a .ipynb notebook and function apps (code on
python_path), through nginx, by every worker of the pool; a broken function app answers 500 and the others serve."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.pageview import open_page, page_view
from harness.stack import TEST_APPS, counter_apps, fetch, run, start_stack

pytestmark = pytest.mark.stack

KINDS = TEST_APPS / "kinds"
FUNCTIONS = {
    "status": "lab_dashboards.pages:status",
    "sometimes": "lab_dashboards.pages:sometimes",
    "broken": "lab_dashboards.pages:broken",
}


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kinds")
    apps = tmp / "apps"
    shutil.copytree(KINDS / "apps", apps)
    counter_apps(apps, ["counter"])
    stack = start_stack(tmp, apps, workers=2, python_path=[str(KINDS / "pylib")], function_apps=FUNCTIONS)
    try:
        yield stack
    finally:
        stack.stop()


def hello_text(view) -> str:
    return view.document.get_model_by_name("hello").text


def test_scripts_notebooks_directories_and_functions_serve_their_documents(kinds):
    assert hello_text(run(page_view(kinds.url("/hello")))) == "hello from a script"
    assert hello_text(run(page_view(kinds.url("/notebook")))) == "hello from a notebook"
    assert hello_text(run(page_view(kinds.url("/status")))) == "status"
    assert run(page_view(kinds.url("/counter"))).document.roots


def test_a_function_apps_periodic_callback_streams_to_its_page(kinds):
    async def patches() -> list[str]:
        view = await open_page(kinds.url("/status"), document_ready=True)
        try:
            streamed = []
            while len(streamed) < 2:
                message = await view.next_message(timeout=5)
                if message.msgtype == "PATCH-DOC":  # not the OK to our DocumentReady
                    streamed.append(message.content["events"][0]["kind"])
            return streamed
        finally:
            view.close()

    assert run(patches()) == ["ColumnsStreamed", "ColumnsStreamed"], "one point a second reaches the page"


def test_every_worker_of_the_pool_serves_every_kind(kinds):
    body = fetch(kinds.ops_url("/metrics")).body.decode()
    served: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "bokeh_stack_sessions":
                served.setdefault(sample.labels["worker"], set()).add(sample.labels["app"])
    expected = {"broken", "counter", "hello", "notebook", "sometimes", "status"}
    assert len(served) == 2 and all(apps == expected for apps in served.values()), served


def test_the_index_describes_each_kind(kinds):
    index = fetch(kinds.url("/")).body.decode()
    for app in ("hello", "notebook", "status", "counter"):
        assert f'href="/{app}"' in index
    assert "A single-file app: apps/hello.py is served at /hello." in index
    assert "A notebook served as an app: its first markdown cell describes it." in index
    assert "Instrument status" in index


def test_a_broken_function_app_answers_500_and_an_error_stays_its_own_session(kinds):
    response = fetch(kinds.url("/broken"))
    assert response.code == 500 and b"<strong>broken</strong>" in response.body
    assert fetch(kinds.url("/sometimes?fail=1")).code == 500
    assert hello_text(run(page_view(kinds.url("/sometimes")))) == "served", "the next session serves again"
    assert hello_text(run(page_view(kinds.url("/status")))) == "status", "the other apps serve"


def test_check_names_the_broken_function_app_and_its_error(kinds):
    result = subprocess.run(
        [sys.executable, "-m", "bokeh_stack", "check", "--settings", str(kinds.settings_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "app broken: FAILED" in result.stdout and "the broken function app failed" in result.stdout
    for app in ("hello", "notebook", "status", "sometimes", "counter"):
        assert f"app {app}: FAILED" not in result.stdout
