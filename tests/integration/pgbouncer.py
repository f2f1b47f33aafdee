"""A real PgBouncer (Debian's package) in transaction mode in front of the test PostgreSQL.

Started as the non-root `postgres` user on a free port, with its default settings except what
a test needs to reach the trust-auth server: any database name (tests create their own) is
passed on to 127.0.0.1:5432. `scripts/debian-package.sh pgbouncer pgbouncer` installs the
package where it is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

UPSTREAM_HOST = "127.0.0.1"
UPSTREAM_PORT = 5432
RUN_AS = "postgres"


def _binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if not found:
        raise RuntimeError("pgbouncer is not installed (run scripts/debian-package.sh pgbouncer pgbouncer)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """One pgbouncer process; `url(database_url)` routes a test database through it."""

    def __init__(self, *, pool_mode: str = "transaction", default_pool_size: int | None = None,
                 users: tuple[str, ...] = ("postgres",)) -> None:
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.log = self.dir / "pgbouncer.log"
        settings = {
            "listen_addr": "127.0.0.1", "listen_port": str(self.port), "unix_socket_dir": "",
            "auth_type": "trust", "auth_file": str(self.dir / "users.txt"),
            "pool_mode": pool_mode, "logfile": str(self.log),
            "pidfile": str(self.dir / "pgbouncer.pid"),
        }
        if default_pool_size is not None:
            settings["default_pool_size"] = str(default_pool_size)
        lines = ["[databases]", f"* = host={UPSTREAM_HOST} port={UPSTREAM_PORT}", "[pgbouncer]"]
        lines += [f"{k} = {v}" for k, v in settings.items()]
        (self.dir / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        (self.dir / "users.txt").write_text("".join(f'"{u}" ""\n' for u in users))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> PgBouncer:
        command = [_binary(), str(self.dir / "pgbouncer.ini")]
        preexec = None
        if os.geteuid() == 0:
            # pgbouncer refuses to run as root: the files go to the postgres user.
            account = pwd.getpwnam(RUN_AS)
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)

            def preexec() -> None:
                os.setgid(account.pw_gid)
                os.setuid(account.pw_uid)
        self.process = subprocess.Popen(command, preexec_fn=preexec, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited {self.process.returncode}: {self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self.logs()}")

    def url(self, database_url: str) -> str:
        """The same database and role, through the pooler."""
        parts = urlsplit(database_url)
        user = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def logs(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
