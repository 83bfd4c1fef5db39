"""--db postgresql://…: libpq URLs, passwords, sockets, one migration history, and the database going away."""

import asyncio
from pathlib import Path

import grpc
import psycopg
import pytest
from postgres_support import PASSWORD, PASSWORD_ROLE, PostgresServer

from backup.errors import LocalFault, Unavailable
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc
from backup_server.__main__ import parse_args
from backup_server.storage import migrations, postgres_migrations
from backup_server.storage.backends import open_storage, shown
from backup_server.storage.postgres import PostgresStorage
from backup_server.storage.sqlite import SqliteStorage

from conftest import policy_over, wait_for


def test_both_backends_have_the_same_schema_versions() -> None:
    """Migration N has the same name on SQLite and on PostgreSQL, and neither has one more."""
    assert [name for name, _ in postgres_migrations.MIGRATIONS] == [
        name for name, _ in migrations.MIGRATIONS
    ]


def test_db_is_a_url_or_a_path_and_the_pool_size_is_checked() -> None:
    """A postgresql:// URL stays a URL, anything else is a SQLite path; --db-pool-size must be positive."""
    url = "postgresql://backup:pw@db.example:5432/backup?sslmode=require"
    config = parse_args(["--db", url, "--db-pool-size", "4"])
    assert (config.db, config.db_pool_size) == (url, 4)
    assert parse_args(["--db", "state/server.db"]).db == Path("state/server.db")
    assert parse_args([]).db_pool_size <= 10
    with pytest.raises(SystemExit):
        parse_args(["--db", url, "--db-pool-size", "0"])
    assert shown(url) == "postgresql://backup:***@db.example:5432/backup?sslmode=require"


async def test_replicas_started_at_once_migrate_an_empty_database_once(postgres_url: str) -> None:
    """Four storages opened at the same moment on an empty database apply each migration exactly once."""
    opened = await asyncio.gather(*(PostgresStorage.open(postgres_url, 2) for _ in range(4)))
    try:
        with psycopg.connect(postgres_url) as conn:
            versions = [row[0] for row in conn.execute("select version from migrations order by 1")]
        assert versions == list(range(1, len(postgres_migrations.MIGRATIONS) + 1))
        assert await opened[3].list_policies("", 10) == []
    finally:
        for storage in opened:
            await storage.close()


async def test_open_storage_picks_the_backend_by_what_db_names(
    postgres_url: str, tmp_path: Path
) -> None:
    """A URL opens PostgreSQL, a path opens SQLite."""
    for db, kind in ((postgres_url, PostgresStorage), (tmp_path / "s.db", SqliteStorage)):
        storage = await open_storage(db, 2)
        assert isinstance(storage, kind)
        await storage.close()


async def test_a_password_comes_from_pgpassword_or_pgpass(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role that needs a password connects with PGPASSWORD, then with a .pgpass file, and a wrong one is refused by name."""
    url = postgres_url.replace("postgres@", f"{PASSWORD_ROLE}@", 1)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    await (await PostgresStorage.open(url, 1)).close()
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres.port}:*:{PASSWORD_ROLE}:{PASSWORD}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    await (await PostgresStorage.open(url, 1)).close()
    pgpass.write_text(f"127.0.0.1:{postgres.port}:*:{PASSWORD_ROLE}:wrong\n")
    with pytest.raises(LocalFault, match="password authentication failed"):
        await PostgresStorage.open(url, 1)


async def test_a_unix_socket_directory_in_the_url(postgres: PostgresServer, postgres_url: str) -> None:
    """postgresql:///DB?host=/socket/dir&port=N connects over the unix socket."""
    database = postgres_url.rsplit("/", 1)[1]
    url = f"postgresql://postgres@/{database}?host={postgres.root}&port={postgres.port}"
    storage = await PostgresStorage.open(url, 1)
    assert await storage.list_groups("", 1) == []
    await storage.close()


async def test_a_missing_database_or_server_stops_the_start_with_a_reason(
    postgres: PostgresServer, start_server, closed_address: str
) -> None:
    """The database must exist (the server says which one is missing); an unreachable server is Unavailable."""
    with pytest.raises(SystemExit, match='database "absent" does not exist'):
        await start_server(db=postgres.url("absent"))
    with pytest.raises(Unavailable, match="cannot be reached"):
        await PostgresStorage.open(f"postgresql://postgres@{closed_address}/backup", 1)


async def test_rpcs_answer_unavailable_while_postgres_is_down_and_recover_after(
    postgres: PostgresServer, postgres_url: str, start_server, tmp_path: Path, source_tree: Path
) -> None:
    """With PostgreSQL stopped under a running server, RPCs answer UNAVAILABLE (never UNKNOWN); once it is back they work again."""
    server = await start_server(db=postgres_url)
    async with grpc.aio.insecure_channel(server.address) as channel:
        service = api_grpc.PolicyServiceStub(channel)
        policy = policy_over([], tmp_path, source_tree)
        await service.CreatePolicy(api.CreatePolicyRequest(policy_id="nightly", policy=policy))
        postgres.stop()
        try:
            for call in (
                service.GetPolicy(api.GetPolicyRequest(policy_id="nightly"), timeout=30),
                service.ListPolicies(api.ListPoliciesRequest(), timeout=30),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await call
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
                assert "database cannot be reached" in str(failed.value.details())
        finally:
            postgres.start()

        async def answers() -> bool:
            try:
                await service.GetPolicy(api.GetPolicyRequest(policy_id="nightly"), timeout=10)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                return False
            return True

        await wait_for(answers, seconds=30)
