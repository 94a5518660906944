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

from bokeh_stack.config.plan import SERVICE_USER, SIGNIN_USER, RunPlan
from bokeh_stack.config.secret import ensure_secret


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
    if plan.signin_user:
        open_to(plan.signin_user, signin_paths(plan), log, role="who runs the sign-in process")


def ensure_service_user(plan: RunPlan, log: Callable[[str], None]) -> None:
    """Started as root: create SERVICE_USER (no `user` setting) and, with sign-in, SIGNIN_USER, if this host has
    them not yet, and put both in the sockets group (nginx's workers reach the sign-in socket, the sign-in process the
    workers' sockets, to close a signed-out user's websockets)."""
    if plan.euid != 0:
        return
    if plan.worker_user == SERVICE_USER and _create_system_user(SERVICE_USER):
        log(f"created the system user {SERVICE_USER}: the workers and nginx's workers run as it (setting user)")
    if plan.signin_user and _create_system_user(SIGNIN_USER):
        log(f"created the system user {SIGNIN_USER}: the sign-in process runs as it, apart from the apps' code")
    group = plan.sockets_group
    if group:
        if _create_system_group(group):
            log(f"created the group {group}: its members talk over the stack's unix sockets")
        for user in filter(None, (plan.worker_user, plan.signin_user)):
            if user not in grp.getgrnam(group).gr_mem:
                _run(["usermod", "--append", "--groups", group, user], f"add {user} to {group}")
                log(f"added user {user} to the group {group}")


def _create_system_user(name: str) -> bool:
    """Create a system user with no login and no home; False if it exists."""
    if _existing_gid(name) is not None:
        return False
    command = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    _run([*command, "--shell", "/usr/sbin/nologin", name], f"create the system user {name}")
    return True


def _create_system_group(name: str) -> bool:
    if _existing_gid(name, group=True) is not None:
        return False
    _run(["groupadd", "--system", name], f"create the group {name}")
    return True


def _run(command: list[str], what: str) -> None:
    tool = shutil.which(command[0]) or f"/usr/sbin/{command[0]}"
    result = subprocess.run([tool, *command[1:]], capture_output=True, text=True)
    if result.returncode != 0:
        raise PrivilegeError(f"could not {what}: {result.stderr.strip()}")


def needed_paths(plan: RunPlan) -> list[Path]:
    """What the workers' user must read: this Python (the interpreter, its environment and its standard library),
    the apps, the python_path and the runtime dir (worker arguments, sockets, static files)."""
    paths = [*_python_paths(plan), plan.settings.apps_dir, *plan.settings.python_path]
    paths.append(plan.run_dir)
    return paths


def signin_paths(plan: RunPlan) -> list[Path]:
    """What the sign-in user must read: this Python, its settings (signin.json), the OIDC client secret, and the
    way to the users file."""
    paths = [*_python_paths(plan), plan.signin_file.parent]
    auth = plan.settings.auth
    if auth.mode == "oidc":
        paths.append(Path(auth.oidc.client_secret_file))
    # The key, the users file and the revoked cookies are handed to the sign-in user at render (signin_files): here,
    # only the way to them.
    return paths + [plan.users_file.parent]


def _python_paths(plan: RunPlan) -> list[Path]:
    return [Path(os.path.realpath(plan.python)), Path(sys.prefix), Path(sys.base_prefix)]


def open_to(user: str, paths: Iterable[Path], log: Callable[[str], None], role: str = "who runs the workers") -> None:
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
            f"user {user} ({role}) cannot read {listed}: make it readable to that user "
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
            f"user {user} cannot pass through {directory}: install the acl package "
            f"(apt-get install acl) so that bokeh-stack can open it to that user alone, or run "
            f"`chmod o+x {directory}`, or keep the stack and its Python elsewhere"
        )
    result = subprocess.run([setfacl, "-m", f"u:{user}:x", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise PrivilegeError(f"could not open {directory} to user {user}: {result.stderr.strip()}")


def private_dir(plan: RunPlan, directory: Path) -> None:
    """A directory the workers' user alone may enter (nginx's workers run as it too)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    own(plan, directory)


def sockets_dir(plan: RunPlan, directory: Path, user: str | None) -> None:
    """A directory of unix sockets: `user`'s, and started as root entered by the sockets group alone (set-group-id, so
    that a socket made there is that group's), else its user's alone."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    group = _existing_gid(plan.sockets_group, group=True)
    if plan.euid == 0 and user and group is not None:
        os.chown(directory, _user(user).pw_uid, group)
        directory.chmod(0o2750)
    else:
        directory.chmod(0o700)


def own(plan: RunPlan, path: Path, user: str | None = None) -> None:
    """Started as root, hand `path` to `user` (default: the workers' user) and that user's group."""
    user = user or plan.worker_user
    if plan.euid == 0 and user:
        entry = _user(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def log_dir(plan: RunPlan) -> None:
    """The logs (what clients sent, user names) are for root and the stack's group only: the directory 0750 (its
    group the workers', set-group-id so that new logs take it), every log in it 0640 (supervisord's umask)."""
    directory = plan.log_dir
    directory.mkdir(parents=True, exist_ok=True)
    group = _existing_gid(plan.worker_user) if plan.euid == 0 else None
    if group is not None:
        os.chown(directory, 0, group)
    directory.chmod(0o750 if group is None else 0o2750)
    for log in directory.glob("*.log*"):
        if log.is_file() and log.stat().st_mode & 0o027:
            log.chmod(log.stat().st_mode & 0o750)


def signin_files(plan: RunPlan) -> None:
    """The sign-in process's directory (its socket: nginx's workers, in the workers' group, may enter), its key
    (made here on first provisioning) and its revoked cookies, its user's alone."""
    sockets_dir(plan, plan.signin_dir, plan.signin_user)
    ensure_secret(plan.signin_key_file, environ={})
    plan.revoked_file.touch(mode=0o600, exist_ok=True)
    for path in (plan.signin_key_file, plan.revoked_file, plan.users_file):
        if path.exists():
            path.chmod(0o600)
            own(plan, path, plan.signin_user)


def _existing_gid(name: str | None, group: bool = False) -> int | None:
    """The primary group of user `name` (or the group `name`), None if there is none."""
    try:
        if not name:
            return None
        return grp.getgrnam(name).gr_gid if group else pwd.getpwnam(name).pw_gid
    except KeyError:
        return None


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"user {name!r} (setting user) does not exist on this host") from None
