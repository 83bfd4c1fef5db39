"""backupctl with certificates and tokens: `certs`, start and stop over mutual TLS, refusals in one line."""

import asyncio
import stat
import subprocess
from pathlib import Path

import grpc
import pytest
from cli_support import BACKUPCTL, backupctl, clean_environment, one_line_error
from cryptography import x509
from google.protobuf import json_format
from security_support import TOKEN, Pki

from backup.ctl import pki as certs
from backup.security.roles import Role
from backup.v1 import resources_pb2 as pb

from conftest import policy_over

EXIT_SOME_NOT_RECEIVED = 3


def operator_flags(pki: Pki, pair: str = "operator", directory: Path | None = None) -> list[str]:
    issued = pki.issued(pair, directory)
    return ["--tls-ca", str(pki.ca), "--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]


def operator_environment(pki: Pki) -> dict[str, str]:
    issued = pki.issued("operator")
    return {
        "BACKUP_TLS_CA": str(pki.ca),
        "BACKUP_TLS_CERT": str(issued.cert),
        "BACKUP_TLS_KEY": str(issued.key),
    }


def write_token(path: Path, token: str = TOKEN) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_certs_init_and_issue_agent_write_the_files_they_name(tmp_path: Path) -> None:
    """`certs init` writes the CA, server and operator pairs and `certs issue-agent` an agent's, each printed with its key's mode: keys 0600, certificates 0644, directories 0700, roles and hosts in the certificates."""
    made = await backupctl(
        "unused:1", "certs", "init", "--dir", "pki", "--server-address", "backup.example.net:50051",
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    issued = await backupctl(
        "unused:1", "certs", "issue-agent", "web-1", "--address", "10.0.0.12:50061",
        "--dir", "pki", cwd=tmp_path,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    pki = tmp_path / "pki"
    roles = {
        "ca": None,
        "server": Role.SERVER,
        "operator": Role.OPERATOR,
        "agents/web-1": Role.AGENT,
    }
    for stem, role in roles.items():
        output = issued.stdout if stem.startswith("agents/") else made.stdout
        assert f"wrote pki/{stem}.pem and pki/{stem}.key (0600)" in output, output
        assert (mode(pki / f"{stem}.key"), mode(pki / f"{stem}.pem")) == (0o600, 0o644)
        assert certs.role_of((pki / f"{stem}.pem").read_bytes()) is role
    assert mode(pki) == mode(pki / "agents") == 0o700

    def hosts(stem: str) -> list[str]:
        certificate = x509.load_pem_x509_certificate((pki / f"{stem}.pem").read_bytes())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [str(name.value) for name in names.value]

    assert hosts("server") == ["backup.example.net"]
    assert hosts("agents/web-1") == ["10.0.0.12"]


async def test_certs_errors_are_one_line_and_overwrite_nothing(tmp_path: Path) -> None:
    """Issuing twice, a bad name or address, a directory without a CA, or a second init: exit 1, one line, the files as they were."""
    directory = str(tmp_path / "pki")
    assert (await backupctl("unused:1", "certs", "init", "--dir", directory,
                            "--server-address", "127.0.0.1:50051")).returncode == 0  # fmt: skip
    before = (tmp_path / "pki" / "ca.key").read_bytes()
    issue = ["certs", "issue-agent", "web-1", "--address", "127.0.0.1:50061", "--dir", directory]
    assert (await backupctl("unused:1", *issue)).returncode == 0
    again = await backupctl("unused:1", *issue)
    assert "web-1.pem exists; not overwriting it" in one_line_error(again, "")
    reinit = await backupctl(
        "unused:1", "certs", "init", "--dir", directory, "--server-address", "127.0.0.1:50051"
    )
    assert "exists" in one_line_error(reinit, "")
    assert (tmp_path / "pki" / "ca.key").read_bytes() == before
    bad_name = await backupctl("unused:1", "certs", "issue-agent", "../web", "--address",
                               "127.0.0.1:50061", "--dir", directory)  # fmt: skip
    assert "not a usable agent name" in one_line_error(bad_name, "")
    bad_address = await backupctl("unused:1", "certs", "issue-agent", "web-2", "--address",
                                  "web-2", "--dir", directory)  # fmt: skip
    assert "'web-2' is not HOST:PORT" in one_line_error(bad_address, "")
    no_ca = await backupctl("unused:1", "certs", "issue-agent", "web-2", "--address",
                            "127.0.0.1:50062", "--dir", str(tmp_path / "empty"))  # fmt: skip
    assert "run `certs init` first" in one_line_error(no_ca, "")


@pytest.mark.parametrize("credential", ["operator certificate", "token"])
async def test_start_and_stop_over_mutual_tls(
    credential: str,
    start_server,
    start_agent,
    pki: Pki,
    closed_address: str,
    hung_address: str,
    tmp_path: Path,
    source_tree: Path,
) -> None:
    """With the operator certificate (flags) or the token (environment), start, stop and session --watch reach the server and the TLS agents; a closed and a hung computer make them exit 3."""
    if credential == "token":
        token = write_token(tmp_path / "api-token")
        server = await start_server(tls=pki.tls(pki.issued("server")), api_token_file=token)
        flags: list[str] = []
        env = {"BACKUP_TLS_CA": str(pki.ca), "BACKUP_TOKEN_FILE": str(token)}
    else:
        server = await start_server(tls=pki.tls(pki.issued("server")))
        flags, env = operator_flags(pki), {}
    agents = [await start_agent(name, tls=pki.tls(pki.agent())) for name in ("a1", "a2")]
    computers = [("a1", agents[0].address), ("a2", agents[1].address)]
    computers += [("down", closed_address), ("hung", hung_address)]
    policy = policy_over(computers, tmp_path, source_tree)
    created = await backupctl(
        server.address, *flags, "policy", "create", "nightly", "--name", "Nightly",
        *(f"--computer={c.name}={c.address}" for c in policy.computers),
        "--source", policy.source_paths[0], "--repository", policy.repository, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    for action in ("start", "stop"):
        result = await backupctl(server.address, *flags, action, "nightly", "-o", "json", env=env)
        assert result.returncode == EXIT_SOME_NOT_RECEIVED, result.stderr
        session = json_format.Parse(result.stdout, pb.PolicySession())
        results = {r.computer.name: r for r in session.computer_results}
        assert {name: r.delivery for name, r in results.items()} == {
            "a1": pb.DELIVERY_RECEIVED,
            "a2": pb.DELIVERY_RECEIVED,
            "down": pb.DELIVERY_NOT_RECEIVED,
            "hung": pb.DELIVERY_NOT_RECEIVED,
        }, action
        assert results["down"].detail.startswith("UNAVAILABLE")
        # The first session waits out its deadline; a later one may meet the end of the
        # TLS handshake the first began (grpc times it out: "Handshake read failed").
        assert results["hung"].detail.split(":")[0] in ("DEADLINE_EXCEEDED", "UNAVAILABLE")
    # WatchSession, a server-streaming call, carries the credential too.
    watched = await backupctl(server.address, *flags, "session", session.id, "--watch", env=env)
    assert watched.returncode == EXIT_SOME_NOT_RECEIVED, watched.stderr
    assert f"session {session.id}" in watched.stdout


async def test_refusals_and_bad_material_are_one_line(
    start_server, pki: Pki, hung_address: str, tmp_path: Path
) -> None:
    """Without the right credential, or with bad files, start exits 1 with one line saying what was wrong, and no grpc-core log."""
    mtls = await start_server(tls=pki.tls(pki.issued("server")), db=tmp_path / "mtls.db")
    token = write_token(tmp_path / "api-token")
    with_token = await start_server(
        tls=pki.tls(pki.issued("server")), api_token_file=token, db=tmp_path / "token.db"
    )
    plaintext = await start_server(db=tmp_path / "plain.db")
    wrong = write_token(tmp_path / "wrong-token", "wrong-" + TOKEN)
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    expired = pki.expired[Role.OPERATOR]
    operator = pki.issued("operator")
    ca = ["--tls-ca", str(pki.ca)]
    localhost = "localhost:" + mtls.address.rpartition(":")[2]
    cases: list[tuple[str, list[str], str, str]] = [
        (mtls.address, [], "UNAVAILABLE: ", "if it serves TLS, give --tls-ca"),
        (mtls.address, ca, "UNAVAILABLE: ", "it may require a client certificate"),
        (
            mtls.address,
            ["--tls-ca", str(pki.other / "ca.pem"), *operator_flags(pki)[2:]],
            "UNAVAILABLE: ",
            "TLS: the server's certificate did not verify: unable to get local issuer",
        ),
        (
            mtls.address,
            operator_flags(pki, "operator", pki.other),
            "UNAVAILABLE: ",
            "it may have refused the --tls-cert certificate",
        ),
        (
            mtls.address,
            operator_flags(pki, "server"),
            "PERMISSION_DENIED: permission denied: ",
            "--tls-cert is of role backup-server",
        ),
        (
            localhost,
            operator_flags(pki),
            "UNAVAILABLE: ",
            "the server's certificate is not issued for this address",
        ),
        (
            hung_address,
            [*operator_flags(pki), "--timeout", "0.5"],
            "DEADLINE_EXCEEDED: ",
            "did not answer in time",
        ),
        (with_token.address, ca, "UNAUTHENTICATED: authentication required: ", "or the API token"),
        (
            with_token.address,
            [*ca, "--token-file", str(wrong)],
            "UNAUTHENTICATED: ",
            "did not accept the token in --token-file",
        ),
        (
            with_token.address,
            operator_flags(pki),
            "UNAUTHENTICATED: ",
            "takes the API token instead (--token-file)",
        ),
        (plaintext.address, ca, "UNAVAILABLE: ", "the server does not speak TLS"),
        (
            mtls.address,
            [*ca, "--tls-cert", str(expired.cert), "--tls-key", str(expired.key)],
            f"--tls-cert {expired.cert} is valid from 2020-01-01 to 2020-01-31, not now",
            "",
        ),
        (
            mtls.address,
            [*ca, "--tls-cert", str(operator.cert), "--tls-key", str(pki.agent().key)],
            f"--tls-key {pki.agent().key} is not the key of --tls-cert",
            "",
        ),
        (
            mtls.address,
            ["--tls-cert", str(operator.cert), "--tls-key", str(operator.key)],
            "a client certificate is only sent over TLS",
            "",
        ),
        (with_token.address, [*ca, "--token-file", str(empty)], "--token-file", "printable"),
    ]
    results = await asyncio.gather(
        *(backupctl(address, *flags, "start", "nightly") for address, flags, _, _ in cases)
    )
    for (_, flags, start, says), result in zip(cases, results, strict=True):
        line = one_line_error(result, start)
        assert says in line, (flags, line)
        assert str(TOKEN) not in result.stdout + result.stderr


async def test_jobs_on_a_tls_agent(start_agent, pki: Pki) -> None:
    """An operator's certificate is refused by a TLS agent in one line that names the way that works: its local socket; the server's certificate, given explicitly, works too."""
    agent = await start_agent("web-1", tls=pki.tls(pki.agent()))
    env = operator_environment(pki)
    refused = await backupctl("unused:1", "jobs", agent.address, env=env)
    line = one_line_error(refused, "PERMISSION_DENIED: permission denied: ")
    assert f"the agent at {agent.address} takes commands only from the backup server's" in line
    assert "backupctl jobs unix:DATA_DIR/agent.sock" in line

    socket = agent.config.data_dir / "agent.sock"
    local = await backupctl("unused:1", "jobs", f"unix:{socket}", "-o", "json", env=env)
    assert (local.returncode, local.stdout.strip()) == (0, '{\n  "jobs": []\n}'), local.stderr
    server = pki.issued("server")
    explicit = await backupctl(
        "unused:1", "jobs", agent.address, "--tls-cert", str(server.cert),
        "--tls-key", str(server.key), env=env,
    )  # fmt: skip
    assert explicit.returncode == 0, explicit.stderr
    bad_socket = await backupctl("unused:1", "jobs", "unix:", env=env)
    assert bad_socket.returncode == 1 and "unix:DATA_DIR/agent.sock" in bad_socket.stderr


async def test_the_token_is_never_sent_to_an_agent(tmp_path: Path) -> None:
    """`backupctl jobs` with a token file sends no authorization metadata to the agent: the token is the server's secret."""
    received: list[tuple[tuple[str, str | bytes], ...]] = []

    async def list_jobs(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        received.append(tuple(context.invocation_metadata() or ()))
        return b""

    recorder = grpc.aio.server()
    recorder.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "backup.v1.AgentControl",
                {"ListJobs": grpc.unary_unary_rpc_method_handler(list_jobs)},
            ),
        )
    )
    port = recorder.add_insecure_port("127.0.0.1:0")
    await recorder.start()
    try:
        token = write_token(tmp_path / "api-token")
        result = await backupctl(
            "unused:1", "jobs", f"127.0.0.1:{port}", env={"BACKUP_TOKEN_FILE": str(token)}
        )
    finally:
        await recorder.stop(0)
    assert result.returncode == 0, result.stderr
    assert len(received) == 1
    assert all(key != "authorization" for key, _ in received[0]), received


async def test_completion_presents_the_credentials(
    start_server, pki: Pki, tmp_path: Path, source_tree: Path
) -> None:
    """Shell completion asks a mutual-TLS server for policy ids with the operator's certificate from the environment."""
    server = await start_server(tls=pki.tls(pki.issued("server")))
    env = operator_environment(pki)
    policy = policy_over([("db", "127.0.0.1:50062")], tmp_path, source_tree)
    created = await backupctl(
        server.address, "policy", "create", "nightly", "--name", "Nightly",
        "--computer", "db=127.0.0.1:50062", "--source", policy.source_paths[0],
        "--repository", policy.repository, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    completing = clean_environment(
        BACKUP_SERVER=server.address,
        _BACKUPCTL_COMPLETE="bash_complete",
        COMP_WORDS="backupctl start n",
        COMP_CWORD="2",
        **env,
    )
    result = await asyncio.to_thread(
        subprocess.run, [BACKUPCTL], capture_output=True, text=True, env=completing, timeout=60
    )
    assert result.stdout.split() == ["plain,nightly"], result
