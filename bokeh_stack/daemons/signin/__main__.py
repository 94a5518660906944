"""`python -m bokeh_stack.daemons.signin SIGNIN_FILE`: the sign-in process (see the package's docstring)."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.netutil import bind_unix_socket

from bokeh_stack.config.handoff import SigninConfig
from bokeh_stack.daemons.signin.gate import USERS_CHECK_S, Gate, log
from bokeh_stack.daemons.signin.keys import read_key
from bokeh_stack.daemons.signin.pages import application


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(argv) != 1:
        print("usage: python -m bokeh_stack.daemons.signin SIGNIN_FILE", file=sys.stderr)
        return 2
    [config_file] = argv
    config = SigninConfig.read(Path(config_file))
    try:
        key = read_key(Path(config.key_file))
    except (OSError, ValueError) as e:
        log.error("cannot sign anyone in without the sign-in key: %s", e)
        return 1
    gate = Gate(config, key)
    # Its directory (privileges.sockets_dir) gives it the group of nginx's workers.
    socket = bind_unix_socket(config.socket, mode=0o660)
    server = HTTPServer(application(gate), xheaders=True, max_header_size=64 * 1024, max_body_size=64 * 1024)
    server.add_socket(socket)
    loop = IOLoop.current()

    def reread() -> None:
        try:
            gate.reconfigure(SigninConfig.read(Path(config_file)))
        except (OSError, ValueError, TypeError) as e:
            log.error("kept the settings it had: cannot read %s: %s", config_file, e)
            return
        log.info("read %s again: sign-in (%s)", config_file, gate.config.mode)

    signal.signal(signal.SIGHUP, lambda *_: loop.add_callback_from_signal(reread))
    PeriodicCallback(gate.watch_users, USERS_CHECK_S * 1000).start()
    log.info("sign-in (%s) for %s/ on %s", config.mode, config.prefix, config.socket)
    loop.start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
