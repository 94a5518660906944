"""Who runs what, when the stack is started as root: never app code as root unless the settings say so twice
(`user: root` and `allow_root: true`); the service user created when missing; the directories that user must pass
through opened to it alone, for search only (a POSIX ACL, `setfacl -m u:USER:x DIR`), and said so."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .plan import SERVICE_USER, RunPlan


class PrivilegeError(RuntimeError):
    """Something about users and permissions that stops the stack from starting, in one clear message."""


def check(plan: RunPlan, log: Callable[[str], None]) -> None:
    """Before anything is rendered or started as root: the workers' user exists, is not root unless allowed, and
    can reach the interpreter, the apps and the runtime dir."""
    user = plan.worker_user
    if plan.euid != 0 or user is None:
        return
    ensure_service_user(plan, log)
    entry = _user(user)
    if entry.pw_uid == 0 and not plan.settings.allow_root:
        raise PrivilegeError(
            f"refusing to run the apps' code as root (setting user: {user}): leave user empty (the system user "
            f"{SERVICE_USER}) or name an unprivileged one; to run it as root all the same, also set allow_root: true"
        )
    if entry.pw_uid != 0:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        open_to(user, needed_paths(plan), log)


def ensure_service_user(plan: RunPlan, log: Callable[[str], None]) -> None:
    """Started as root with no `user` setting: create SERVICE_USER if this host has none yet."""
    if plan.euid != 0 or plan.worker_user != SERVICE_USER:
        return
    try:
        pwd.getpwnam(SERVICE_USER)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    command = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    command += ["--shell", "/usr/sbin/nologin", SERVICE_USER]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise PrivilegeError(f"could not create the system user {SERVICE_USER}: {result.stderr.strip()}")
    log(f"created the system user {SERVICE_USER}: the workers and nginx's workers run as it (setting user)")


def needed_paths(plan: RunPlan) -> list[Path]:
    """What the workers' user must read: this Python (the interpreter, its environment and its standard library),
    the apps, the python_path and the runtime dir (worker arguments, sockets, static files); with sign-in, what the
    sign-in process reads (the users file, the OIDC client secret)."""
    python = Path(os.path.realpath(plan.python))
    paths = [python, Path(sys.prefix), Path(sys.base_prefix), plan.settings.apps_dir, *plan.settings.python_path]
    paths.append(plan.run_dir)
    auth = plan.settings.auth
    if plan.with_signin and auth["mode"] == "oidc":
        paths.append(Path(auth["oidc"]["client_secret_file"]))
    if plan.with_signin and auth["mode"] == "password" and plan.users_file.exists():
        paths.append(plan.users_file)
    return paths


def open_to(user: str, paths: Iterable[Path], log: Callable[[str], None]) -> None:
    """Give `user` search permission on every directory above `paths` that keeps it out, then check it can read
    each path itself (that one is the operator's to open: it may hold more than the stack's)."""
    paths = [p.resolve() for p in paths]
    as_user = become(user)
    for directory in _ancestors(paths):  # from / down: a directory is judged once those above it are open
        if _can(as_user, "-x", directory):
            continue
        _grant_search(user, directory)
        log(
            f"{directory} was closed to user {user}: granted it search (x) there alone, so it reaches what the "
            f"stack needs below (setfacl -m u:{user}:x {directory}; undo: setfacl -x u:{user} {directory})"
        )
    unreadable = [p for p in paths if not _can(as_user, "-r", p)]
    if unreadable:
        listed = ", ".join(str(p) for p in unreadable)
        raise PrivilegeError(
            f"user {user} (who runs the workers) cannot read {listed}: make it readable to that user "
            f"(e.g. chmod -R o+rX, or setfacl -R -m u:{user}:rX), or choose another user (setting user)"
        )


def _ancestors(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        for directory in reversed(path.parents):
            if directory not in found:
                found.append(directory)
    return found


def become(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run the child as `user` with its groups (nothing if None)."""
    if user is None:
        return {}
    entry = _user(user)
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
    env = {**os.environ, "HOME": entry.pw_dir, "USER": user, "LOGNAME": user}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups, "env": env}


def _can(as_user: dict[str, Any], test: str, path: Path) -> bool:
    """Ask the kernel, as that user (become(): ACLs and groups included): `test -x` or `test -r` on path."""
    return subprocess.run(["/usr/bin/test", test, str(path)], cwd="/", **as_user).returncode == 0


def _grant_search(user: str, directory: Path) -> None:
    setfacl = shutil.which("setfacl")
    if setfacl is None:
        raise PrivilegeError(
            f"user {user} (who runs the workers) cannot pass through {directory}: install the acl package "
            f"(apt-get install acl) so that bokeh-stack can open it to that user alone, or run "
            f"`chmod o+x {directory}`, or keep the stack and its Python elsewhere"
        )
    result = subprocess.run([setfacl, "-m", f"u:{user}:x", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise PrivilegeError(f"could not open {directory} to user {user}: {result.stderr.strip()}")


def private_dir(plan: RunPlan, directory: Path) -> None:
    """A directory the workers' user alone may enter (nginx's workers run as it too): its sockets live there."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    own(plan, directory)


def own(plan: RunPlan, directory: Path) -> None:
    """Started as root, hand `directory` to the workers' user."""
    if plan.euid == 0 and plan.worker_user:
        user = _user(plan.worker_user)
        os.chown(directory, user.pw_uid, user.pw_gid)


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"user {name!r} (setting user) does not exist on this host") from None
