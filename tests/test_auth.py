"""Sign-in and trusted proxies without a stack: the settings, the users file, the sign-in process's pieces, and
what nginx is told (rendered and passed by nginx -t)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time

import pytest
from bokeh.document import Document

from bokeh_stack import current_user, identity
from bokeh_stack.config import plan as plan_module
from bokeh_stack.config import topology
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import load
from bokeh_stack.daemons.signin import keys, users
from bokeh_stack.daemons.signin import rules as signin_rules
from bokeh_stack.provisioning import render as rendering
from harness.stack import SHIPPED_APPS
from tests.test_settings import problems


def settings_problems(**overrides) -> list[str]:
    return problems(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), **overrides})


OIDC = {"mode": "oidc"}
PASSWORD = {"mode": "password"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"auth": {"mode": "ldap"}}, "auth.mode must be one of none, password, oidc, got 'ldap'"),
        ({"auth": {"session_hours": 0}}, "auth.session_hours must be positive, got 0"),
        ({"auth": {"users_file": "users.json"}}, "auth.users_file must be an absolute path"),
        ({"auth": {"mode": "oidc"}}, "auth.oidc.client_id must be set"),
        ({"auth": {**OIDC, "oidc": {"issuer": "http://login.example.org"}}}, "auth.oidc.issuer must be the provider's https://"),
        ({"auth": {**OIDC, "oidc": {"client_secret_file": "/nonexistent/s"}}}, "/nonexistent/s does not exist"),
        ({"auth": {**OIDC, "oidc": {"scopes": ["profile"]}}}, "auth.oidc.scopes must include openid"),
        ({"access": {"cosine": {"users": ["alice"]}}}, "access needs sign-in: set auth.mode to password or oidc"),
        ({"auth": PASSWORD, "access": {"nope": {"users": ["a"]}}}, "access: no app 'nope' in apps_dir"),
        ({"auth": PASSWORD, "access": {"cosine": {"people": ["a"]}}}, "access.cosine must be a mapping with users"),
        ({"auth": PASSWORD, "access": {"cosine": {"users": "a"}}}, "access.cosine.users must be a list of names"),
        ({"trusted_proxies": ["10.0.0.0/40"]}, "trusted_proxies: '10.0.0.0/40' is not an address or network"),
        ({"session": {"pass_cookies": ["bokeh_stack_signin"]}}, "bokeh_stack_signin is the sign-in cookie"),
    ],
)  # fmt: skip
def test_bad_sign_in_settings_get_a_clear_error(overrides, message):
    assert any(message in p for p in settings_problems(**overrides)), settings_problems(**overrides)


def test_an_empty_environment_variable_is_an_empty_mapping_or_list():
    base = {"BOKEH_STACK_APPS_DIR": str(SHIPPED_APPS), "BOKEH_STACK_RUNTIME_DIR": "/tmp/unused"}
    loaded = load(environ={**base, "BOKEH_STACK_ACCESS": "", "BOKEH_STACK_TRUSTED_PROXIES": ""})
    assert loaded.access == {} and loaded.trusted_proxies == ()


def test_the_users_file_holds_hashes_only_mode_0600(tmp_path):
    path = tmp_path / "users.json"
    alice = users.make("alice", "correct horse battery", ["lab", "lab", "ops"])
    users.write(path, {"alice": alice})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "correct horse" not in path.read_text() and "$argon2id$" in path.read_text()
    [read] = users.read(path).values()
    assert read.groups == ("lab", "ops")
    assert users.verify(read, "correct horse battery")
    assert not users.verify(read, "wrong") and not users.verify(None, "correct horse battery")
    assert not users.verify(read, "x" * (users.MAX_PASSWORD + 1))


@pytest.mark.parametrize(
    "name, password, message",
    [("al ice", "long enough", "a user name is"), ("alice", "short", "a password has 8 to 1024 characters")],
)
def test_bad_users_are_refused(name, password, message):
    with pytest.raises(users.UsersError, match=message):
        users.make(name, password, [])


def test_a_users_file_not_written_by_bokeh_stack_is_named(tmp_path):
    path = tmp_path / "users.json"
    path.write_text('{"alice": "hunter2"}')
    with pytest.raises(users.UsersError, match="is not one bokeh-stack wrote"):
        users.read(path)
    path.write_text("{")
    with pytest.raises(users.UsersError, match="cannot read the users file"):
        users.read(path)


def test_sign_in_attempts_count_before_they_are_checked_per_address_and_per_account():
    limits = signin_rules.SigninLimits(per_minute=5)
    for t in range(5):  # five attempts at once: each counts before its password is checked
        assert limits.retry_after("10.0.0.1", "alice", t) == (0, "")
        limits.attempt("10.0.0.1", "alice", t)
    assert limits.retry_after("10.0.0.1", "bob", 5) == (56, "address"), "the address, whoever it tries"
    assert limits.retry_after("10.0.0.1", "bob", 60.5) == (0, ""), "the first attempt is a minute old"
    assert limits.retry_after("10.0.0.2", "alice", 5) == (0, ""), "5 failures on an account are free"
    limits.attempt("10.0.0.2", "alice", 5)
    assert limits.retry_after("10.0.0.3", "alice", 5.5) == (2, "account"), "the 7th: 2 s after the 6th"
    for n in range(6, 20):  # many addresses at one account: the wait doubles, up to its bound
        limits.attempt(f"10.1.0.{n}", "alice", 10 + n)
    assert limits.retry_after("10.9.9.9", "alice", 29) == (signin_rules.ACCOUNT_MAX_DELAY_S + 1, "account")
    assert limits.retry_after("10.9.9.9", "alice", 29 + signin_rules.ACCOUNT_MAX_DELAY_S) == (0, ""), "never more"
    limits.attempt("10.0.0.9", "carol", 0)
    limits.succeeded("10.0.0.9", "carol", 0)
    assert not limits.addresses.recent("10.0.0.9", 1) and not limits.accounts.recent("carol", 1), "a right one"
    for i in range(signin_rules.TRACKED_KEYS + 10):
        limits.attempt(f"addr-{i}", f"user-{i}", 100)
    assert len(limits.addresses._attempts) == len(limits.accounts._attempts) == signin_rules.TRACKED_KEYS


@pytest.mark.parametrize(
    "target",
    [
        "/%09/evil.example", "/\t/evil.example", "//evil.example", "/\\evil.example", "/%5Cevil.example",
        "/%2F/evil.example", "/%20/evil.example", "/%252F%252Fevil.example", "https://evil.example/",
        "javascript:alert(1)",
        "/a\r\nSet-Cookie: x=1", "/%0d%0aSet-Cookie:%20x=1", "/ evil", "/../evil", "/dashx/app", "/other/app",
        "/" + "a" * 3000, "", None,
    ],
)  # fmt: skip
def test_after_sign_in_a_browser_goes_to_a_path_of_this_stack_only(target):
    assert signin_rules.safe_next("/dash", target) == "/dash/"


def test_after_sign_in_a_browser_goes_back_where_it_was():
    for target in ("/dash/", "/dash/cosine", "/dash/cosine?N=5&x=%20y", "/dash/app/static/a.css"):
        assert signin_rules.safe_next("/dash", target) == target
    assert signin_rules.safe_next("", "/cosine?N=5") == "/cosine?N=5"


def test_a_signed_out_cookie_stays_revoked_until_it_expires_for_every_reader(tmp_path):
    path = tmp_path / "signin-revoked.json"
    writer, reader = signin_rules.RevokedCookies(path), signin_rules.RevokedCookies(path)
    assert not reader.revoked("a")
    writer.revoke("a", time.time() + 60)
    writer.revoke("old", time.time() - 1)
    assert reader.revoked("a") and reader.revoked("old")
    writer.revoke("b", time.time() + 60)
    assert reader.revoked("b") and not reader.revoked("old"), "expired records are dropped"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_cookie_of_mode_password_names_its_users_password_and_groups():
    key = b"k" * 48
    alice = users.User("alice", "$argon2id$one", ("lab",))
    assert keys.fingerprint(key, alice) == keys.fingerprint(key, users.User("alice", "$argon2id$one", ("lab",)))
    assert keys.fingerprint(key, alice) != keys.fingerprint(key, users.User("alice", "$argon2id$two", ("lab",)))
    assert keys.fingerprint(key, alice) != keys.fingerprint(key, users.User("alice", "$argon2id$one", ()))
    assert keys.fingerprint(key, alice) != keys.fingerprint(b"o" * 48, alice)


def test_access_by_user_or_group():
    access = {"cosine": {"users": ["alice"], "groups": ["lab"]}}
    assert keys.may_open(access, keys.Identity("alice", ()), "cosine")
    assert keys.may_open(access, keys.Identity("bob", ("lab",)), "cosine")
    assert not keys.may_open(access, keys.Identity("carol", ("ops",)), "cosine")
    assert keys.may_open(access, keys.Identity("carol", ()), "streaming"), "an app not listed: every user"


def test_the_sign_in_process_runs_apart_from_the_workers_and_never_holds_their_secret(tmp_path):
    settings = load(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(tmp_path),
                                           "auth": {"mode": "password"}})  # fmt: skip
    conf = rendering.outputs(RunPlan(settings, euid=0))[RunPlan(settings).supervisord_conf]
    program = conf.split(f"[program:{topology.SIGNIN}]")[1].split("\n\n")[0]
    assert f"user={plan_module.SIGNIN_USER}\n" in program and plan_module.SIGNIN_USER != plan_module.SERVICE_USER
    assert 'BOKEH_SECRET_KEY=""' in program, "the workers' secret is not handed to it"
    assert "umask=027" in conf, "logs are the stack's group's alone"
    signin_json = json.loads(rendering.outputs(RunPlan(settings))[RunPlan(settings).signin_file])
    assert signin_json["key_file"] == str(tmp_path / "signin.key")


def test_current_user_is_none_without_sign_in_and_any_name_with_it():
    assert current_user(Document()) is None
    name = "José Müller\nX-Evil: 1"  # an OIDC provider's name may hold anything; a header may not
    value = identity.header_value(name)
    assert value.isascii() and "\n" not in value and " " not in value

    class Signed:
        session_context = type(
            "Context", (), {"request": type("Request", (), {"headers": {identity.USER_HEADER: value}})}
        )

    assert current_user(Signed()) == name


def rendered(tmp_path, **overrides) -> RunPlan:
    settings = load(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(tmp_path), **overrides})
    plan = RunPlan(settings)
    rendering.render_checked(plan)
    return plan


def test_nginx_asks_the_sign_in_process_about_every_page_and_websocket(tmp_path):
    plan = rendered(tmp_path, prefix="/dash", auth={"mode": "password"}, access={"cosine": {"users": ["alice"]}})
    conf = plan.nginx_site_conf.read_text()
    for app in plan.settings.apps:
        page = re.search(rf"location ~ \^/dash/{app}\(\?:/\.\*\)\?\$ \{{(.*?)\n    \}}", conf, re.S).group(1)
        ws = re.search(rf"location = /dash/{app}/ws \{{(.*?)\n    \}}", conf, re.S).group(1)
        for location in (page, ws):
            assert f"auth_request /_bokeh_stack/signin/check/{app};" in location
            assert "proxy_set_header X-Bokeh-Stack-User $bokeh_stack_user;" in location
        assert "error_page 401 = @bokeh_stack_signin_required;" in page and "error_page" not in ws
    assert "location = /dash/login {" in conf and "location = /dash/logout {" in conf
    assert f"server unix:{plan.signin_socket};" in conf
    config = rendering.signin_config(plan, [])
    assert config.access == {"cosine": {"users": ["alice"], "groups": []}} and config.prefix == "/dash"
    assert f"[program:{topology.SIGNIN}]" in plan.supervisord_conf.read_text()


def test_without_sign_in_a_client_cannot_name_a_user(tmp_path):
    plan = rendered(tmp_path)
    conf = plan.nginx_site_conf.read_text()
    assert "/_bokeh_stack/signin/" not in conf and 'proxy_set_header X-Bokeh-Stack-User "";' in conf
    assert "set_real_ip_from" not in conf
    assert f"[program:{topology.SIGNIN}]" not in plan.supervisord_conf.read_text()
    assert not plan.signin_file.exists()


def test_trusted_proxies_set_the_real_client_in_every_public_server(tmp_path):
    plan = rendered(tmp_path, trusted_proxies=["10.0.0.0/8", "2001:db8::/32"])
    conf = plan.nginx_site_conf.read_text()
    public, ops = conf.split("# The operators' listener")
    assert public.count("set_real_ip_from 10.0.0.0/8;") == 2 and "set_real_ip_from 2001:db8::/32;" in public
    assert "real_ip_header X-Forwarded-For;" in public and "real_ip_recursive on;" in public
    assert "set_real_ip_from" not in ops, "the ops listener's allow list judges the connecting address"
    assert "    10.0.0.0/8 1;" in conf, "X-Forwarded-Proto is believed from these only"


def test_users_commands_take_the_common_flags_before_or_after_the_action(tmp_path):
    def users_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bokeh_stack", "users", *args], input=stdin, text=True,
                              capture_output=True, timeout=60)  # fmt: skip

    run_dir = str(tmp_path / "run")
    added = users_cli(
        "add", "alice", "--password-stdin", "--group", "lab", "--runtime-dir", run_dir, stdin="a long one\n"
    )
    assert added.returncode == 0 and "user alice added" in added.stdout, added.stderr
    assert "auth.mode is none" in added.stderr, "a note that nobody signs in yet"
    assert users_cli("--runtime-dir", run_dir, "list").stdout == "alice  groups: lab\n"
    again = users_cli("add", "alice", "--password-stdin", "--group", "lab", "--stateful", "--runtime-dir", run_dir,
                      stdin="a long one\n")  # fmt: skip
    assert again.stdout.startswith("changed=no"), "the same password and groups: nothing to write"
    short = users_cli("add", "bob", "--password-stdin", "--runtime-dir", run_dir, stdin="short\n")
    assert short.returncode == 1 and "a password has 8 to 1024 characters" in short.stderr
    assert users_cli("remove", "carol", "--runtime-dir", run_dir).returncode == 1
