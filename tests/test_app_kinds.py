"""Every kind of app the stack serves: directories, single .py scripts, .ipynb notebooks, and function apps
(setting function_apps, code on python_path). Settings, index text, worker arguments and the app check; the real
stack serving them is in tests/test_app_kinds_served.py."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from bokeh.document import Document

from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import SettingsError, load
from bokeh_stack.daemons import worker
from bokeh_stack.patches import function_apps
from bokeh_stack.provisioning import render as rendering
from bokeh_stack.provisioning.app_check import check_apps
from bokeh_stack.provisioning.apps import app_info
from harness.stack import ROOT, TEST_APPS, counter_apps

KINDS = TEST_APPS / "kinds"
PYLIB = KINDS / "pylib"
FUNCTIONS = {
    "status": "lab_dashboards.pages:status",
    "sometimes": "lab_dashboards.pages:sometimes",
    "broken": "lab_dashboards.pages:broken",
}


def kinds_settings(tmp_path, **overrides):
    apps = tmp_path / "apps"
    shutil.copytree(KINDS / "apps", apps)
    counter_apps(apps, ["counter"])
    values = {
        "apps_dir": str(apps),
        "runtime_dir": str(tmp_path / "run"),
        "python_path": [str(PYLIB)],
        "function_apps": FUNCTIONS,
        **overrides,
    }
    return load(environ={}, overrides=values)


def problems(**kwargs) -> list[str]:
    with pytest.raises(SettingsError) as e:
        load(**kwargs)
    return e.value.problems


def test_scripts_notebooks_directories_and_functions_are_apps(tmp_path):
    s = kinds_settings(tmp_path)
    assert s.apps == ("broken", "counter", "hello", "notebook", "sometimes", "status"), "_helper.py is no app"
    kinds = {name: source.kind for name, source in s.sources.items()}
    assert kinds == {
        "broken": "function", "counter": "directory", "hello": "script", "notebook": "notebook",
        "sometimes": "function", "status": "function",
    }  # fmt: skip
    assert s.sources["hello"].serves == str(tmp_path / "apps" / "hello.py")
    assert s.sources["status"].serves == "lab_dashboards.pages:status"
    assert s.function_apps == FUNCTIONS


def test_function_apps_alone_serve_from_an_empty_apps_dir(tmp_path):
    s = load(environ={}, overrides={"apps_dir": str(tmp_path), "function_apps": {"/status": "json:dumps"}})
    assert s.apps == ("status",), "a leading slash is the route's, not the name's"


def test_the_environment_sets_function_apps_as_yaml(tmp_path):
    environ = {"BOKEH_STACK_FUNCTION_APPS": "{status: 'lab_dashboards.pages:status'}"}
    s = load(environ=environ, overrides={"apps_dir": str(tmp_path), "python_path": [str(PYLIB)]})
    assert s.function_apps == {"status": "lab_dashboards.pages:status"}


@pytest.mark.parametrize(
    ("function_apps", "message"),
    [
        ({"x": "no_colon"}, "function_apps.x must be 'package.module:function', got 'no_colon'"),
        ({"x": "pkg.mod:func()"}, "function_apps.x must be 'package.module:function', got 'pkg.mod:func()'"),
        ({"x": 3}, "function_apps.x must be 'package.module:function', got 3"),
        ({"/": "pkg:f"}, "function_apps: route '/' must be one name, served at /NAME (/ is the index)"),
        ({"a/b": "pkg:f"}, "function_apps: route 'a/b' must be one name, served at /NAME (/ is the index)"),
        ({"static": "pkg:f"}, "function app 'static' clashes with the stack's own /static/ path: rename it"),
        ({"hello": "pkg:f"}, "function app 'hello' and hello.py would both be /hello: rename one"),
    ],
)
def test_bad_function_apps_get_a_clear_error(tmp_path, function_apps, message):
    apps = tmp_path / "apps"
    shutil.copytree(KINDS / "apps", apps)
    assert message in problems(environ={}, overrides={"apps_dir": str(apps), "function_apps": function_apps})


def test_two_apps_of_one_name_and_bad_python_paths_are_refused(tmp_path):
    counter_apps(tmp_path, ["hello"])
    (tmp_path / "hello.py").write_text("")
    found = problems(environ={}, overrides={"apps_dir": str(tmp_path), "python_path": ["lib", str(tmp_path / "no")]})
    assert found == [
        "app 'hello.py' and hello would both be /hello: rename one",
        "python_path: 'lib' must be an absolute path without quotes or $",
        f"python_path: {tmp_path / 'no'} is not a directory",
    ]


def test_the_index_describes_each_kind_from_its_own_text(tmp_path):
    s = kinds_settings(tmp_path)
    info = {name: app_info(source, s.python_path) for name, source in s.sources.items()}
    described = {name: (i["title"], i["description"]) for name, i in info.items()}
    assert described["hello"] == ("Hello from one file", "A single-file app: apps/hello.py is served at /hello.")
    assert described["notebook"] == (
        "Notebook app", "A notebook served as an app: its first markdown cell describes it."
    )  # fmt: skip
    assert described["status"] == (
        "Instrument status",
        "A function app: a plot streaming one point a second, built by status(doc) for each session.",
    )
    assert described["counter"][0] == "Counter"
    assert info["counter"]["static_dir"] is None and not info["hello"]["thumbnail"]


def test_a_changed_script_or_function_module_changes_its_digest(tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(PYLIB, lib)
    s = kinds_settings(tmp_path, python_path=[str(lib)])
    before = {name: app_info(source, s.python_path)["digest"] for name, source in s.sources.items()}
    (tmp_path / "apps" / "hello.py").write_text('"""Hello."""\n')
    module = lib / "lab_dashboards" / "pages.py"
    module.write_text(module.read_text() + "\n# changed\n")
    after = {name: app_info(source, s.python_path)["digest"] for name, source in s.sources.items()}
    assert [name for name in before if before[name] != after[name]] == ["broken", "hello", "sometimes", "status"]


def test_the_worker_arguments_name_each_file_and_function(tmp_path):
    s = kinds_settings(tmp_path)
    plan = RunPlan(s)
    rendering.render(plan)
    lines = worker.read_args(str(plan.args_file(s.pools[0])), "5100")
    options, bokeh_args = worker.split_options(lines)
    assert options.python_path == [str(PYLIB)]
    assert options.resume_store == str(plan.sessions_dir) and options.resume_max_bytes == 1 << 20
    assert options.redis_password_file == "", "a directory store: no Redis"
    assert options.function_apps == {name: FUNCTIONS[name] for name in ("broken", "sometimes", "status")}
    assert bokeh_args[0] == "serve"
    apps = tmp_path / "apps"
    assert bokeh_args[1:5] == [
        str(apps / "counter"),
        str(apps / "hello.py"),
        str(apps / "notebook.ipynb"),
        "--unix-socket",
    ]


def test_the_check_runs_every_kind_and_names_what_failed(tmp_path):
    s = kinds_settings(tmp_path, function_apps={**FUNCTIONS, "missing": "lab_dashboards.nope:status"})
    results = check_apps(s)
    assert {name for name, error in results.items() if error is None} == {
        "counter", "hello", "notebook", "sometimes", "status"
    }  # fmt: skip
    assert "the broken function app failed" in results["broken"]
    assert "function app lab_dashboards.nope:status cannot be imported: ModuleNotFoundError" in results["missing"]


def test_a_function_apps_error_is_its_own_sessions_not_the_next_ones():
    calls = []

    def flaky(doc):
        calls.append(doc)
        if len(calls) == 1:
            raise RuntimeError("first one fails")
        doc.add_root(__import__("bokeh.models", fromlist=["Div"]).Div(text="ok"))

    handler = function_apps.handler_for(flaky)
    first, second = Document(), Document()
    handler.modify_document(first)
    assert handler.failed and "first one fails" in handler.error
    handler.modify_document(second)
    assert not handler.failed and len(second.roots) == 1


def test_what_function_apps_assume_of_bokeh_holds():
    assert [e.target for e in (*function_apps.EXPECTS, *worker.SERVE_EXPECTS) if e.problem()] == []


def test_a_module_that_cannot_be_imported_fails_its_pages_not_the_worker():
    app = function_apps.application("no_such_package.pages:status")
    doc = app.create_document()
    [handler] = app.handlers
    assert handler.failed and "No module named 'no_such_package'" in handler.error and not doc.roots


def test_notebooks_without_nbconvert_are_refused_with_the_extra_to_install(tmp_path):
    """A venv without nbconvert (as `pip install bokeh-stack` makes): the settings say what to install."""
    shutil.copy(KINDS / "apps" / "notebook.ipynb", tmp_path)
    code = (
        "import sys; sys.modules['nbconvert'] = None\n"  # as if it were not installed
        "from bokeh_stack.config.settings import load, SettingsError\n"
        f"try: load(environ={{}}, overrides={{'apps_dir': {str(tmp_path)!r}}})\n"
        "except SettingsError as e: print(e.problems)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "notebook apps (notebook.ipynb) need nbconvert: pip install 'bokeh-stack[notebooks]'" in result.stdout
