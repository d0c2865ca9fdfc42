"""The machine's real PostgreSQL for tests: a throw-away database per test, and stopping/starting
the cluster with its own `pg_ctlcluster` command. Tests skip, saying why, when either is missing."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
ADMIN_DATABASES = ("test", "postgres")


def _connect(dbname: str, user: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, connect_timeout=3,
                           autocommit=True)


def admin_login() -> tuple[str, str] | None:
    """(user, database) that can create databases, or None when PostgreSQL is not reachable."""
    for user in ("postgres", "root"):
        for dbname in ADMIN_DATABASES:
            try:
                with _connect(dbname, user):
                    return user, dbname
            except Exception:
                continue
    return None


def require_postgres() -> tuple[str, str]:
    login = admin_login()
    if login is None:
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} with trust auth (user postgres or root)")
    return login


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new, uniquely named database; dropped (with its connections) at the end. Yields its URL."""
    user, admin_db = require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _connect(admin_db, user) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        ensure_running()
        with _connect(admin_db, user) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def count_rows(url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def query_column(url: str, sql: str) -> list[str]:
    import psycopg

    with psycopg.connect(url, connect_timeout=3) as conn:
        return [str(r[0]) for r in conn.execute(sql).fetchall()]


def cluster_version() -> str | None:
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        return None
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir() if (p / "main").is_dir())
    return versions[0] if versions else None


def pg_ctl(action: str) -> None:
    version = cluster_version()
    assert version is not None
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True,
                   capture_output=True, timeout=60)


def ensure_running(timeout_s: float = 60.0) -> None:
    """Start the cluster if it is down and wait until it accepts connections."""
    if admin_login() is not None:
        return
    if cluster_version() is not None:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster_version() or "", "main", "start"],
                       capture_output=True, timeout=60)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if admin_login() is not None:
            return
        time.sleep(0.5)
    raise RuntimeError("PostgreSQL did not come back")


class TcpProxy:
    """A loopback TCP forwarder to PostgreSQL that a test can cut (listener and open connections):
    the database vanishes for one server without stopping the cluster that other tests share."""

    def __init__(self, target_port: int = PG_PORT) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="pg-proxy", daemon=True).start()

    def url(self, url: str) -> str:
        return url.replace(f":{self.target_port}/", f":{self.port}/")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((PG_HOST, self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        # shutdown() first: on Linux, close() alone does not wake an accept() blocked in another thread.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
