"""The `backupctl` command group, its shared options, exit codes and shell completion.

Exit codes, which scripts rely on: 0 success; 3 when a start or stop did not reach every
targeted computer; 1 on any error, usage errors included, so a script needs no other case.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc
from click.core import ParameterSource
from click.shell_completion import CompletionItem, get_completion_class

from backup import about, validation
from backup.errors import InvalidArgument
from backup.v1 import policy_service_pb2 as api
from backup.v1 import policy_service_pb2_grpc as api_grpc

from . import client
from .client import DEFAULT_SERVER, LOCAL_SOCKET, OUTPUTS, Settings

EXIT_ERROR = 1
COMPLETION_TIMEOUT = 2.0
COMPLETE_VAR = "_BACKUPCTL_COMPLETE"
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

F = TypeVar("F", bound=Callable[..., Any])


class Backupctl(click.Group):
    """A group whose usage errors exit 1, like every other error (`--help` alone exits 0)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _usage_errors_exit_1():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _usage_errors_exit_1():
            return super().invoke(ctx)


class UsageError(click.UsageError):
    exit_code = EXIT_ERROR


@contextmanager
def _usage_errors_exit_1() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError as error:
        click.echo(error.ctx.get_help())
        raise click.exceptions.Exit(0) from None
    except UsageError:
        raise
    except click.UsageError as error:
        raise UsageError(error.format_message(), error.ctx) from None


def settings() -> Settings:
    """The settings of the command being run: flags, BACKUP_* variables, then the context."""
    return click.get_current_context().ensure_object(Settings).resolve()


def address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: HOST:PORT, checked as the server checks a computer's address."""
    if value is not None:
        try:
            validation.check_address(param.name or "address", value)
        except InvalidArgument as error:
            raise click.BadParameter(error.problem) from None
    return value


def agent_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: HOST:PORT, or unix:PATH (an agent's local socket)."""
    if value is not None and value.startswith(LOCAL_SOCKET):
        if value == LOCAL_SOCKET:
            raise click.BadParameter("unix: needs the socket's path, unix:DATA_DIR/agent.sock")
        return value
    return address(ctx, param, value)


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    if value is not None and param.name is not None:
        if param.name == "server":
            address(ctx, param, str(value))
        found = ctx.ensure_object(Settings)
        setattr(found, param.name, value)
        if ctx.get_parameter_source(param.name) not in (
            ParameterSource.DEFAULT,
            ParameterSource.DEFAULT_MAP,
        ):
            found.given.add(param.name)


def _security_options(default: bool) -> list[Callable[[F], F]]:
    """--tls-ca, --tls-cert, --tls-key and --token-file, from BACKUP_* variables on the root."""

    def option(name: str, variable: str, what: str) -> Callable[[F], F]:
        return click.option(
            name,
            type=FILE,
            envvar=variable if default else None,
            expose_value=False,
            callback=_remember,
            metavar="FILE",
            help=f"{what} [${variable}]",
        )

    return [
        option("--tls-ca", "BACKUP_TLS_CA", "Speak TLS, trusting this CA (pki/ca.pem)."),
        option(
            "--tls-cert",
            "BACKUP_TLS_CERT",
            "Present this client certificate (pki/operator.pem); needs --tls-ca.",
        ),
        option("--tls-key", "BACKUP_TLS_KEY", "The client certificate's key (pki/operator.key)."),
        option(
            "--token-file",
            "BACKUP_TOKEN_FILE",
            "Send the API token in this file to the server (never to agents).",
        ),
    ]


def connection_options(default: bool) -> Callable[[F], F]:
    """--server, --output, --timeout and the security options: on the root with defaults
    and environment variables, on each command too."""

    def decorate(command: F) -> F:
        # Each option goes on top of the ones before: the help lists them bottom up.
        for option in (
            *reversed(_security_options(default)),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0.1),
                default=30.0 if default else None,
                expose_value=False,
                callback=_remember,
                metavar="SECONDS",
                help="How long to wait for an answer (default 30; start, stop and "
                "--watch wait as long as the session runs).",
            ),
            click.option(
                "-o",
                "--output",
                type=click.Choice(OUTPUTS),
                default="text" if default else None,
                expose_value=False,
                callback=_remember,
                help="text (tables), wide (tables, every column in full), json or yaml (the "
                "proto's JSON form, one document, defaults included).",
            ),
            click.option(
                "--context",
                envvar="BACKUPCTL_CONTEXT" if default else None,
                expose_value=False,
                callback=_remember,
                metavar="NAME",
                help="Use this context of the config file, not its current one "
                "(see `config --help`).",
            ),
            click.option(
                "--server",
                envvar="BACKUP_SERVER" if default else None,
                default=DEFAULT_SERVER if default else None,
                expose_value=False,
                callback=_remember,
                metavar="HOST:PORT",
                help="The backup server (default $BACKUP_SERVER, the context's, or "
                f"{DEFAULT_SERVER}).",
            ),
        ):
            command = option(command)
        return command

    return decorate


def examples(*lines: str) -> str:
    """An epilog of example commands, kept as typed (\\b stops click re-wrapping them)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def _listed_ids(ctx: click.Context, kind: str) -> Sequence[tuple[str, str]]:
    # While completing there is no current context: the one being completed is passed in.
    with client.server_channel(ctx.ensure_object(Settings).resolve()) as channel:
        stub = api_grpc.PolicyServiceStub(channel)
        if kind == "policy":
            policies = stub.ListPolicies(
                api.ListPoliciesRequest(page_size=1000), timeout=COMPLETION_TIMEOUT
            ).policies
            return [(policy.id, policy.name) for policy in policies]
        groups = stub.ListProtectionGroups(
            api.ListProtectionGroupsRequest(page_size=1000), timeout=COMPLETION_TIMEOUT
        ).protection_groups
        return [(group.id, group.name) for group in groups]


def complete_ids(
    kind: str,
) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """Shell completion of policy or protection group ids, asked of the server."""

    def complete(
        ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        try:
            listed = _listed_ids(ctx, kind)
        except (grpc.RpcError, click.ClickException, OSError):
            return []  # no server, no suggestions; completion must never print an error
        return [
            CompletionItem(id_, help=name) for id_, name in listed if id_.startswith(incomplete)
        ]

    return complete


@click.group(
    cls=Backupctl,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=examples(
        "backupctl group create lab --name 'Lab machines' --computer ws1=10.0.0.11:50061",
        "backupctl policy create nightly --name Nightly --computer db=10.0.0.5:50061 \\",
        "    --group lab --source /srv/data --repository /var/backups",
        "backupctl start nightly            # exit 0: all received, 3: some did not, 1: error",
        "backupctl stop nightly -o json",
        "backupctl sessions nightly",
        "backupctl session s-20260101-120000-1a2b3c4d --watch",
        "backupctl jobs 10.0.0.5:50061",
        "backupctl certs init --dir pki --server-address backup.example.net:50051",
        "backupctl --tls-ca pki/ca.pem --tls-cert pki/operator.pem --tls-key pki/operator.key \\",
        "    policy list",
        "BACKUP_TLS_CA=pki/ca.pem BACKUP_TOKEN_FILE=api-token backupctl sessions",
        'eval "$(backupctl completion bash)"',
    ),
)
@connection_options(default=True)
@click.version_option(about.version(), "--version", message="%(prog)s %(version)s")
def cli() -> None:
    """Operate the backup server: protection groups, policies, and starting or stopping
    policies across their computers.

    Exit codes: 0 success; 3 when a start or stop did not reach every targeted computer
    (not received, rejected or cancelled; skipped ones do not count); 1 on any error.

    A server with TLS needs --tls-ca and an operator's certificate (--tls-cert,
    --tls-key) or the API token (--token-file). Each setting comes from its flag, else
    its BACKUP_* variable, else the config file's context (see `config --help`). An
    agent with TLS takes only the server's certificate (see `jobs --help`).
    """


@cli.command(
    epilog=examples(
        'eval "$(backupctl completion bash)"      # in ~/.bashrc',
        'eval "$(backupctl completion zsh)"       # in ~/.zshrc',
        "backupctl completion fish > ~/.config/fish/completions/backupctl.fish",
    )
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    It completes commands, options, and policy and protection group ids (asked of the
    server).
    """
    completer = get_completion_class(shell)
    if completer is None:  # every listed shell has one; this keeps mypy and click honest
        raise click.UsageError(f"no completion for {shell}")
    click.echo(completer(cli, {}, "backupctl", COMPLETE_VAR).source())
