"""redis-server for the workers' session records (settings redis, session.store: redis://): under the stack's
supervisord where settings redis.run say, and in the redis container. It adds the password to a private copy of the
rendered config (0600 in a directory of its own: never on a command line, never in the rendered file) and becomes
redis-server.

    python -m bokeh_stack.daemons.redis CONF PRIVATE_DIR [PASSWORD_FILE]

The password: PASSWORD_FILE's (settings session.redis_password_file), else derived from the workers' secret
($BOKEH_SECRET_KEY), as the workers work it out (config/secret.redis_password).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bokeh_stack.config import secret
from bokeh_stack.config.files import write_atomically


def private_conf(conf: Path, private_dir: Path, password: str) -> Path:
    """`conf` with the password, in `private_dir`, for this user alone."""
    private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = private_dir / "redis.conf"
    write_atomically(path, f"{conf.read_text()}dir {private_dir}\nrequirepass {password}\n", mode=0o600)
    return path


USAGE = "usage: python -m bokeh_stack.daemons.redis CONF PRIVATE_DIR [PASSWORD_FILE]"


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(USAGE, file=sys.stderr)
        return 2
    key, password_file = os.environ.pop(secret.ENV_VAR, ""), argv[2] if len(argv) == 3 else ""
    try:
        password = secret.redis_password(key, password_file)
    except secret.SecretError as e:
        print(f"bokeh-stack redis: {e}", file=sys.stderr)
        return 2
    conf = private_conf(Path(argv[0]), Path(argv[1]), password)
    os.execvp("redis-server", ["redis-server", str(conf)])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
