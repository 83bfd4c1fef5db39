"""Open-file descriptors: every computer a session reaches holds one connection, one file.

A process starts with a soft RLIMIT_NOFILE (often 1,024) far below what a fan-out to
thousands of computers needs, and may raise it up to the hard limit without privileges.
"""

import logging
import os
import resource

log = logging.getLogger("backup.limits")

# Listeners, the database, logs, operators' connections and gRPC's own wake-up files.
RESERVED_DESCRIPTORS = 256


def raise_open_file_limit() -> int:
    """Raises the soft open-file limit to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Linux caps descriptors at fs.nr_open even when the limit says infinity.
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, error)
        return soft
    return hard


def open_file_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_descriptors() -> int:
    """How many descriptors this process holds now (0 where the system cannot say)."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            # The listing itself holds one descriptor while it runs.
            return len(os.listdir(directory)) - 1
        except OSError:
            continue
    return 0


def descriptor_room() -> int:
    """How many more descriptors this process may open, keeping a reserve for everything else."""
    return open_file_limit() - open_descriptors() - RESERVED_DESCRIPTORS
