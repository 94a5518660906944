"""Render the nginx and supervisord configs from the settings: the templates in nginx/ and supervisor/ are
their only source, for the local runner, the containers and the Salt formula alike."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from . import static_files
from .settings import Settings, local_address

TEMPLATES_ROOT = Path(os.environ.get("BOKEH_STACK_TEMPLATES", Path(__file__).resolve().parent.parent))


class RenderError(RuntimeError):
    """A rendered config that its own program refuses (nginx -t)."""


@dataclass(frozen=True)
class Layout:
    """Where the rendered files go and which programs they name."""

    settings: Settings
    # Runs nginx inside this supervisord (local runner, hosts without systemd); False in the workers container.
    with_nginx: bool = True
    # Runs the workers; False on a balancer-only host.
    with_workers: bool = True
    daemonize: bool = False
    python: str = sys.executable
    nginx_bin: str = field(default_factory=lambda: find_nginx() or "/usr/sbin/nginx")
    # supervisord's own user, the workers' user, nginx's worker processes' user (each only when run as root).
    run_as: str | None = None
    worker_user: str | None = None
    nginx_user: str | None = None

    @property
    def run_dir(self) -> Path:
        return self.settings.runtime_dir

    @property
    def conf_dir(self) -> Path:
        return self.run_dir / "nginx"

    @property
    def args_dir(self) -> Path:
        return self.run_dir / "workers"

    @property
    def html_dir(self) -> Path:
        return self.run_dir / "html"

    @property
    def static_tree(self) -> Path:
        from bokeh import __version__

        return static_files.tree_for(self.run_dir, __version__)

    @property
    def supervisord_conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    @property
    def nginx_conf(self) -> Path:
        return self.conf_dir / "nginx.conf"

    @property
    def socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def error_log(self) -> str:
        return "stderr" if self.settings.log_to_stdout else str(self.settings.log_dir / "nginx-error.log")


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def bokeh_static_dir() -> Path:
    from bokeh.util.paths import static_path

    return Path(static_path())


def bokeh_favicon() -> Path:
    from bokeh.settings import settings

    return Path(settings.ico_path())


def app_info(apps_dir: Path, name: str) -> dict[str, Any]:
    """Title and description from the docstring of the app's main.py (read, not run), and its static dir."""
    title, description = name.replace("_", " ").capitalize(), ""
    main = apps_dir / name / "main.py"
    try:
        doc = ast.get_docstring(ast.parse(main.read_text())) if main.is_file() else None
    except (SyntaxError, ValueError):
        doc = None  # `bokeh-stack check` reports the broken app; the index still lists it
    if doc:
        first, _, rest = doc.strip().partition("\n")
        title = first.strip().rstrip(".") or title
        description = " ".join(rest.strip().split("\n\n")[0].split())
    static = apps_dir / name / "static"
    return {"name": name, "title": title, "description": description, "static_dir": static if static.is_dir() else None}


def context(layout: Layout) -> dict[str, Any]:
    s = layout.settings
    pools = [
        {
            "name": pool.name,
            "program": pool.program,
            "probe": f"{pool.program}_probe",
            "apps": pool.apps,
            "workers": pool.workers,
            "base_port": pool.base_port,
            "servers": [f"{_host(h)}:{port}" for h in s.worker_hosts for port in pool.ports],
        }
        for pool in s.pools
    ]
    all_servers = sum(len(p["servers"]) for p in pools)
    return {
        "s": s,
        "pools": pools,
        "probes": ["bokeh_stack_probe"] + [p["probe"] for p in pools],
        "apps": [app_info(s.apps_dir, app) for app in s.apps],
        "listen": f"{_host(s.listen_address)}:{s.port}",
        "probe_address": _host(local_address(s.worker_address)),
        "tls_listen": f"{_host(s.listen_address)}:{s.tls['port']}",
        "tls_port_suffix": "" if s.tls["port"] == 443 else f":{s.tls['port']}",
        "static_dir": layout.static_tree,
        "favicon": bokeh_favicon(),
        "run_dir": layout.run_dir,
        "conf_dir": layout.conf_dir,
        "html_dir": layout.html_dir,
        "error_log": layout.error_log,
        "access_log": "/dev/stdout" if s.log_to_stdout else f'"{s.log_dir}/nginx-access.log"',
        # A websocket may be silent between keep-alive pings: allow three of them.
        "ws_read_timeout_s": max(60, 3 * s.session.get("keep_alive_ms", 37000) // 1000),
        "max_tries": min(all_servers, 3),
        "python": layout.python,
        "nginx_bin": layout.nginx_bin,
        "with_nginx": layout.with_nginx,
        "with_workers": layout.with_workers,
        "worker_user": layout.worker_user,
        "daemonize": layout.daemonize,
        "run_as": layout.run_as,
        "nginx_user": layout.nginx_user,
    }


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_ROOT)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=jinja2.select_autoescape(["html.j2"]),
    )
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    env.filters["regex"] = lambda value: re.escape(str(value))
    return env


# template -> rendered file, relative to the runtime dir
FILES = {
    "nginx/nginx.conf.j2": "nginx/nginx.conf",
    "nginx/bokeh-stack.conf.j2": "nginx/bokeh-stack.conf",
    "nginx/index.html.j2": "html/index.html",
    "supervisor/supervisord.conf.j2": "supervisord.conf",
}


def in_dir(layout: Layout, directory: Path) -> Layout:
    """The same layout with every runtime file under `directory`."""
    settings = dataclasses.replace(
        layout.settings, runtime_dir=directory, log_dir=directory / "logs", secret_file=directory / "secret"
    )
    return dataclasses.replace(layout, settings=settings)


def outputs(layout: Layout) -> dict[Path, str]:
    """Every file the layout's configs consist of, and what it must say."""
    ctx = context(layout)
    env = environment()
    files = {layout.run_dir / target: env.get_template(template).render(ctx) for template, target in FILES.items()}
    args = env.get_template("supervisor/worker.args.j2")
    for pool in ctx["pools"]:
        files[layout.args_dir / f"{pool['program']}.args"] = args.render(ctx, pool=pool)
    files[layout.html_dir / "healthz.txt"] = "ok\n"
    return files


def pending(layout: Layout) -> list[Path]:
    """The files render() would change; writes nothing."""
    return [path for path, text in outputs(layout).items() if not path.exists() or path.read_text() != text]


def render(layout: Layout, static: bool = True) -> list[Path]:
    """Write every config into the runtime dir, and the static tree nginx serves (unless `static` is False);
    returns the files whose content changed."""
    files = outputs(layout)
    for directory in (layout.settings.log_dir, layout.run_dir / "nginx-temp"):
        directory.mkdir(parents=True, exist_ok=True)
    if layout.with_nginx and static:
        static_files.build(bokeh_static_dir(), layout.static_tree)
    return [path for path, text in files.items() if _write(path, text)]


def render_checked(layout: Layout) -> list[Path]:
    """render(), but only once nginx accepts the candidate config: a bad one never replaces a good one."""
    if layout.with_nginx:
        with tempfile.TemporaryDirectory(prefix="bokeh-stack-candidate-") as tmp:
            candidate = in_dir(layout, Path(tmp))
            render(candidate, static=False)  # nginx -t does not open the files a location serves
            nginx_test(candidate)
    return render(layout)


def _write(path: Path, text: str) -> bool:
    """Replace the file in one step, so a reader never sees half a config; False if it already said that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def nginx_test(layout: Layout) -> str:
    """Run `nginx -t` on the rendered config; raises RenderError with nginx's own words."""
    result = subprocess.run(
        [layout.nginx_bin, "-t", "-q", "-c", str(layout.nginx_conf), "-e", layout.error_log],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RenderError(f"nginx rejects the rendered config {layout.nginx_conf}:\n{result.stderr.strip()}")
    return result.stderr
