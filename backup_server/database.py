"""Runs storage calls on one dedicated thread, so SQLite never blocks the event loop."""

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from .storage import Storage

P = ParamSpec("P")
T = TypeVar("T")


class Database:
    """The storage, reached from async code; every call is queued to the storage thread."""

    def __init__(self, storage: Storage, thread: ThreadPoolExecutor) -> None:
        self.storage = storage
        self._thread = thread

    @classmethod
    async def open(cls, path: str | Path) -> "Database":
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage")
        storage = await asyncio.get_running_loop().run_in_executor(thread, Storage, path)
        return cls(storage, thread)

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(call, *args, **kwargs))

    async def run_timed(
        self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> tuple[T, float]:
        """Like `run`, plus the seconds the call itself took on the storage thread."""

        def timed() -> tuple[T, float]:
            started = time.perf_counter()
            result = call(*args, **kwargs)
            return result, time.perf_counter() - started

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, timed)

    async def close(self) -> None:
        await self.run(self.storage.close)
        self._thread.shutdown()
