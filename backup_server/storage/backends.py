"""Which backend `--db` names: a libpq URL is PostgreSQL, anything else a SQLite file."""

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .interface import Storage
from .postgres import DEFAULT_POOL_SIZE, PostgresStorage, is_postgres_url
from .sqlite import SqliteStorage


async def open_storage(db: str | Path, pool_size: int = DEFAULT_POOL_SIZE) -> Storage:
    """Opens (creating and migrating) the storage `db` names; OSError or a
    `backup.errors` error if it cannot."""
    if is_postgres_url(db):
        return await PostgresStorage.open(str(db), pool_size)
    return await SqliteStorage.open(db)


def shown(db: str | Path) -> str:
    """`db` as the log may show it: a URL's password replaced by ***."""
    if not is_postgres_url(db):
        return str(db)
    parts = urlsplit(str(db))
    if parts.password is None:
        return str(db)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


__all__ = ["DEFAULT_POOL_SIZE", "open_storage", "shown"]
