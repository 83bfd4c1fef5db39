"""Why a session runs and which of the policy's computers it targets.

An operator's start may name computers (`computer_names`) or a session to retry
(`retry_of_session_id`); the scheduler's sessions carry their trigger, the original
session and the attempt. Both narrow the policy's targets here, before anything is sent.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from backup.errors import FailedPrecondition, InvalidArgument
from backup.v1 import resources_pb2 as pb

from .retries import original_of, unsuccessful_computers
from .sessions import Target

COMPUTER_NAMES_MAX = 10_000


@dataclass(frozen=True)
class Origin:
    """What a session records about why it runs, and the computers it is limited to."""

    trigger: pb.SessionTrigger = pb.SESSION_TRIGGER_OPERATOR
    computer_names: tuple[str, ...] = ()
    retry_of_session_id: str = ""
    attempt: int = 0
    warnings: tuple[str, ...] = field(default=())

    def stamp(self, session: pb.PolicySession) -> None:
        """Writes the trigger, the retry link and the warnings into a new session."""
        session.trigger = self.trigger
        session.retry_of_session_id = self.retry_of_session_id
        session.attempt = self.attempt
        session.warnings.extend(self.warnings)


def check_computer_names(names: Sequence[str]) -> None:
    if len(names) > COMPUTER_NAMES_MAX:
        raise InvalidArgument(
            "computer_names", f"has {len(names)} names; the limit is {COMPUTER_NAMES_MAX}"
        )
    for index, name in enumerate(names):
        if not name:
            raise InvalidArgument(f"computer_names[{index}]", "is empty")


def narrow(
    targets: list[Target], names: Sequence[str], policy_id: str, *, field_name: str
) -> list[Target]:
    """Only the named computers; a name the policy does not reach is INVALID_ARGUMENT."""
    if not names:
        return targets
    by_name = {target.computer.name: target for target in targets}
    for index, name in enumerate(names):
        if name not in by_name:
            raise InvalidArgument(
                f"{field_name}[{index}]",
                f"{name[:100]!r} is not a computer of policy {policy_id!r}",
            )
    wanted = set(names)
    return [target for target in targets if target.computer.name in wanted]


def operator_retry(
    retried: pb.PolicySession, policy_id: str, computer_names: Sequence[str]
) -> Origin:
    """An operator's retry of `retried`: trigger OPERATOR, attempt 0, only what failed.

    Computers of that session the policy no longer reaches are left out; with none left
    there is nothing to retry.
    """
    field_name = "retry_of_session_id"
    if retried.policy_id != policy_id:
        raise InvalidArgument(
            field_name,
            f"session {retried.id!r} is a session of policy {retried.policy_id!r}, "
            f"not of {policy_id!r}",
        )
    if retried.action != pb.SESSION_ACTION_START:
        raise InvalidArgument(field_name, f"session {retried.id!r} is a stop, not a start")
    failed = unsuccessful_computers(retried)
    if computer_names:
        failed = [name for name in failed if name in set(computer_names)]
    if not failed:
        raise FailedPrecondition(
            f"session {retried.id!r}: every computer it targeted succeeded (or still runs); "
            "nothing to retry",
            field=field_name,
        )
    return Origin(
        pb.SESSION_TRIGGER_OPERATOR, tuple(failed), original_of(retried), 0
    )


def reachable(targets: list[Target], origin: Origin) -> list[Target]:
    """A retry's computers that the policy still reaches (it may have changed since)."""
    wanted = set(origin.computer_names)
    return [target for target in targets if target.computer.name in wanted]
