"""The scheduler's cost: next_run_time per policy, and one tick over many policies."""

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from backup.v1 import resources_pb2 as pb
from backup_server.schedule import next_run_time
from backup_server.scheduler import Scheduler

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CRONS = {
    "hourly": "0 * * * *",
    "nightly, Europe/Berlin": "30 2 * * *",
    "weekdays every 5 min": "*/5 * * * 1-5",
    "never in the window": "0 3 * * *",
}


class StandingClock:
    def now(self) -> datetime:
        return NOW

    async def sleep_until(self, instant: datetime, wake: asyncio.Event) -> None:
        await wake.wait()


class Catalogue:
    """Policies in memory that never come due at NOW: what a tick costs when nothing is due."""

    def __init__(self, count: int) -> None:
        self.items = []
        for index in range(count):
            policy = pb.BackupPolicy(
                id=f"p{index}", schedule=pb.Schedule(cron="30 12 * * *", time_zone="UTC"),
                backup_window=pb.BackupWindow(start="11:00", end="13:00"),
            )  # fmt: skip
            policy.create_time.FromDatetime(NOW - timedelta(minutes=1))
            policy.update_time.CopyFrom(policy.create_time)
            self.items.append(policy)

    async def policies(self) -> list[pb.BackupPolicy]:
        return self.items

    async def latest_session(
        self, policy_id: str, with_results: bool = True
    ) -> pb.PolicySession | None:
        return None

    async def last_scheduled_start(self, policy_id: str) -> datetime | None:
        return None

    async def start(self, policy_id: str, trigger: pb.SessionTrigger, **how: Sequence[str]) -> pb.PolicySession:
        raise AssertionError("nothing is due")

    async def stop_running(self, policy_id: str) -> pb.PolicySession | None:
        return None


def policy(cron: str) -> pb.BackupPolicy:
    made = pb.BackupPolicy(schedule=pb.Schedule(cron=cron, time_zone="Europe/Berlin"))
    if cron == "0 3 * * *":
        made.backup_window.CopyFrom(pb.BackupWindow(start="04:00", end="05:00"))
    return made


async def run() -> dict[str, object]:
    figures: dict[str, object] = {}
    print("\nscheduler: next_run_time per policy")
    for label, cron in CRONS.items():
        made = policy(cron)
        rounds = 200 if cron != "0 3 * * *" else 5
        started = time.perf_counter()
        for _ in range(rounds):
            next_run_time(made, NOW)
        micro = (time.perf_counter() - started) / rounds * 1e6
        figures[f"next_run_time_us[{label}]"] = round(micro, 1)
        print(f"  {label:28} {micro:10.1f} us")
    for count in (1000, 10_000):
        scheduler = Scheduler(Catalogue(count), StandingClock())  # type: ignore[arg-type]
        started = time.perf_counter()
        await scheduler.tick(NOW)
        first = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        await scheduler.tick(NOW)
        took = (time.perf_counter() - started) * 1000
        figures[f"first_tick_ms[{count} policies]"] = round(first, 1)
        figures[f"tick_ms[{count} policies]"] = round(took, 1)
        print(f"  {count:6} scheduled policies: first tick {first:8.1f} ms, then {took:8.1f} ms")
    return figures
