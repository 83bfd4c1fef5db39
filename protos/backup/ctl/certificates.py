"""`backupctl certs init`, `issue-agent`, `issue-operator`, `renew`: the private CA and its
certificates.

Nothing here talks to a server: the files are made on the machine that runs the command,
by backup.ctl.pki.
"""

import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from backup.ctl import pki
from backup.ctl.pki import CertificateError, Issued

from .client import Failure
from .root import Backupctl, cli, examples

T = TypeVar("T")
DIRECTORY = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="The certificate directory (created 0700 if missing).",
)


def _made(make: Callable[[], T]) -> T:
    """Runs `make`; what stops it becomes one line and exit 1."""
    try:
        return make()
    except CertificateError as error:
        raise Failure(str(error)) from None
    except OSError as error:
        raise Failure(f"{error.filename}: {error.strerror}") from None


def _show(issued: Issued, what: str) -> None:
    key_mode = stat.S_IMODE(issued.key.stat().st_mode)
    click.echo(f"wrote {issued.cert} and {issued.key} ({key_mode:04o}): {what}")


@cli.group(
    cls=Backupctl,
    epilog=examples(
        "backupctl certs init --dir pki --server-address backup.example.net:50051",
        "backupctl certs issue-agent web-1 --address web-1.example.net:50061 --dir pki",
        "backupctl certs issue-operator ann --dir pki",
        "backupctl certs renew pki/server.pem --dir pki",
    ),
)
def certs() -> None:
    """Certificates for mutual TLS: a private CA, and the server's, operators' and agents'.

    Run these on a trusted machine, which keeps ca.key (offline if you can). Keys are
    written 0600, the directory 0700, and never overwritten; only `renew` replaces a
    certificate (keeping the previous one). Each certificate
    carries its role (backup-server, backup-agent, backup-operator), so that one role
    cannot act as another.
    """


@certs.command(
    "init",
    epilog=examples(
        "backupctl certs init --dir pki --server-address backup.example.net:50051",
        "backupctl certs init --dir pki --server-address 10.0.0.2:50051",
    ),
)
@DIRECTORY
@click.option(
    "--server-address",
    required=True,
    metavar="HOST:PORT",
    help="Where agents and operators reach the server; its host goes in the certificate.",
)
def certs_init(directory: Path, server_address: str) -> None:
    """Create the CA, the backup server's certificate and an operator's, in DIR.

    Writes DIR/ca.pem and ca.key, DIR/server.pem and server.key (for the host of
    --server-address: clients check it), DIR/operator.pem and operator.key.
    """
    made = _made(lambda: pki.init(directory, server_address))
    _show(made.ca, "the CA; copy ca.pem to the server, every agent and every operator")
    _show(made.server, f"the backup server, for the host {pki.host_of(server_address)}")
    _show(made.operator, "an operator (backupctl --tls-cert, --tls-key)")
    click.echo(
        f"next, each agent: backupctl certs issue-agent NAME --address HOST:PORT --dir {directory}"
    )


@certs.command(
    "issue-agent",
    epilog=examples(
        "backupctl certs issue-agent web-1 --address web-1.example.net:50061 --dir pki",
        "backupctl certs issue-agent web-2 --address 10.0.0.12:50061 --dir pki",
    ),
)
@click.argument("name", metavar="NAME")
@click.option(
    "--address",
    required=True,
    metavar="HOST:PORT",
    help="The agent's address as policies give it; the server checks its host against it.",
)
@DIRECTORY
def certs_issue_agent(name: str, address: str, directory: Path) -> None:
    """Issue the certificate of the agent NAME serving at HOST:PORT, with DIR's CA.

    Writes DIR/agents/NAME.pem and NAME.key. Policies must name the computer by the same
    host (DNS name or IP address) as --address, or the server refuses the agent.
    """
    issued = _made(lambda: pki.issue_agent(directory, name, address))
    _show(issued, f"the agent {name}, for the host {pki.host_of(address)}; copy both to it only")


@certs.command(
    "issue-operator",
    epilog=examples(
        "backupctl certs issue-operator ann --dir pki",
        "backupctl --tls-ca pki/ca.pem --tls-cert pki/operators/ann.pem \\",
        "    --tls-key pki/operators/ann.key policy list",
    ),
)
@click.argument("name", metavar="NAME")
@DIRECTORY
def certs_issue_operator(name: str, directory: Path) -> None:
    """Issue the operator NAME a certificate of their own, with DIR's CA.

    Writes DIR/operators/NAME.pem and NAME.key. The server logs each call with the
    caller's name (the certificate's CN), so access can be told apart; give each person
    their own, rather than sharing operator.pem.
    """
    issued = _made(lambda: pki.issue_operator(directory, name))
    _show(issued, f"the operator {name}; give both to {name} alone (--tls-cert, --tls-key)")


@certs.command(
    "renew",
    epilog=examples(
        "backupctl certs renew pki/server.pem --dir pki",
        "backupctl certs renew pki/agents/web-1.pem --dir pki",
        "backupctl certs renew pki/ca.pem --dir pki",
    ),
)
@click.argument("cert", metavar="CERT", type=click.Path(dir_okay=False, path_type=Path))
@DIRECTORY
def certs_renew(cert: Path, directory: Path) -> None:
    """Issue CERT again before it expires: same names, role and key, valid from now.

    CERT is any certificate DIR's CA issued (the CA's own too). Its key file is not
    touched, so only CERT has to be copied again to where it is used (then restart or
    reload that process); the old certificate is kept as CERT.previous.
    """
    renewed = _made(lambda: pki.renew(directory, cert))
    click.echo(
        f"renewed {renewed.cert}: valid until {renewed.valid_until:%Y-%m-%d %H:%M %Z} "
        f"(was {renewed.was_valid_until:%Y-%m-%d %H:%M %Z}); the previous one is "
        f"{renewed.previous}, the key is unchanged"
    )
