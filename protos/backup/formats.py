"""How people read numbers and moments, the same in backupctl and the agent's command line.

Sizes are binary (KiB, MiB: what `--throttle 10MiB` means); durations take the largest
units that matter; a moment is local time with its zone's name, so a table read on one
computer and a log read on another can be told apart; a count agrees with its noun.
"""

import datetime

SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


def size(count: int) -> str:
    """1536 -> '1.5 KiB'; bytes below 1 KiB as a whole number, '512 B'."""
    value = float(count)
    for unit in SIZE_UNITS:
        if abs(value) < 1024 or unit == SIZE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """0.0123 -> '12.3 ms', 2.5 -> '2.50 s', 75 -> '1 min 15 s', 3725 -> '1 h 2 min'."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


def plural(count: int, noun: str, many: str = "") -> str:
    """'1 computer', '2 computers' (`many` for a noun that does not just take an s)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def moment(seconds: float) -> str:
    """A moment as local time with its zone: '2026-12-01 11:36:29 UTC'."""
    return datetime.datetime.fromtimestamp(seconds).astimezone().strftime(TIME_FORMAT)
