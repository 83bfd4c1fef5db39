"""The README's walkthroughs and its secure setup, run as written against live processes.

Every ```sh block of a section is run in order with bash, as one terminal would run them
(what a block exports, the next one sees). The README's fixed addresses and paths are
replaced by live ones. In the backupctl and grpcurl sections: the server (50051), agents
ws1 (50061) and ws2 (50062), a closed port (50069) and /tmp/walkthrough, with the
processes of the ```console blocks started by fixtures. In the secure setup and the two
replicas over PostgreSQL, every process is started from its own block, as written.
"""

import asyncio
import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_support import clean_environment
from postgres_support import PostgresServer

from agent_stub.app import AgentServer
from backup_server.app import BackupServer

from conftest import Process, restore_points

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass(frozen=True)
class Step:
    """What the block containing `marker` must do: its exit code and what it prints.

    A block that `serves` a README address starts a process that keeps running; it must
    come to listen, and its log must say `prints`. Later blocks reach it at that address.
    """

    marker: str
    exit_code: int = 0
    prints: tuple[str, ...] = ()
    serves: str = ""


SECTIONS = {
    "backupctl: the operator's command line": [
        Step("backupctl group create desks", prints=("created protection group desks",)),
        Step("backupctl policy create daily", prints=("created policy daily",)),
        Step("backupctl policy update daily", prints=("14 restore points", "20971520 bytes/s")),
        Step("backupctl group update desks", prints=("updated protection group desks", "ws2")),
        Step(
            "backupctl start daily",
            3,
            ("start daily: WARNING - 3 computers: 2 received, 1 not received",),
        ),
        Step("backupctl start daily --wait", 3, ("outcome: WARNING", "succeeded")),
        Step("backupctl status daily", 3, ("never ran", "succeeded")),
        Step("backupctl stop daily -o json", 3, ('"action": "SESSION_ACTION_STOP"',)),
        Step("backupctl sessions daily", prints=("stop", "start")),
        Step("backupctl jobs 127.0.0.1:50061", prints=("daily",)),
    ],
    "grpcurl walkthrough": [
        Step(" list", prints=("backup.v1.PolicyService", "grpc.health.v1.Health")),
        Step("/CreateProtectionGroup", prints=('"kind": "PROTECTION_GROUP_KIND_MANUAL"',)),
        Step('"policyId": "nightly",\n  "policy"', prints=('"protectionGroupIds": [',)),
        Step('"broken"', 64 + 3, ('"fieldViolations"', "policy.computers[0].address")),
        Step("/UpdatePolicy", prints=('"retentionPoints": 14',)),
        Step(
            "/StartPolicy",
            prints=('"id": "first-start"', '"notReceived": 1', '"computerResults"'),
        ),
        Step("/GetSession", prints=('"id": "first-start"', '"state": "SESSION_STATE_WARNING"')),
        Step("/ListJobs", prints=('"sessionId": "first-start"',)),
        Step("/StopPolicy", prints=('"action": "SESSION_ACTION_STOP"',)),
        Step("/ListSessions", prints=('"id": "first-start"',)),
    ],
}
TWO_REPLICAS = [
    Step("createdb"),
    Step("--listen 127.0.0.1:50051", prints=("database postgresql://",), serves="127.0.0.1:50051"),
    Step("--listen 127.0.0.1:50052", prints=("database postgresql://",), serves="127.0.0.1:50052"),
    Step(
        "policy create nightly",
        prints=("created policy nightly", "outcome: SUCCESS", "start nightly: SUCCESS", "start"),
    ),
]
SERVER, AGENT = "backup.example.net:50051", "web-1.example.net:50061"
SECURE_SETUP = [
    Step(
        "backupctl certs init",
        prints=("wrote pki/ca.pem and pki/ca.key (0600)", "pki/operator.key (0600)"),
    ),
    Step("backupctl certs issue-agent web-1", prints=("pki/agents/web-1.key (0600)", "web-2")),
    Step("mkdir -p -m 700"),
    Step(
        "backup-server --listen",
        prints=("mutual TLS: operators need an operator certificate",),
        serves=SERVER,
    ),
    Step(
        "backup-agent --listen",
        prints=("mutual TLS: only the backup server's certificate", "policies may use paths"),
        serves=AGENT,
    ),
    Step(
        "--tls-ca pki/ca.pem policy list",
        1,
        ("backupctl: UNAVAILABLE: cannot reach the backup server", "require a client certif"),
    ),
    Step("export BACKUP_SERVER="),
    Step("backupctl policy create nightly", prints=("created policy nightly",)),
    Step("backupctl start nightly", prints=("start nightly: SUCCESS - 1 computer: 1 received",)),
    Step("backupctl start stray", 3, ("rejected", "outside the paths this agent allows")),
    Step("-cert pki/operator.pem", prints=('"id": "nightly"', '"id": "stray"')),
    Step("backupctl jobs web-1", 1, ("backupctl: PERMISSION_DENIED: permission denied: ",)),
    Step("backupctl jobs unix:", prints=("nightly",)),
    Step("secrets.token_urlsafe"),
    Step(
        "--api-token-file api-token",
        prints=("TLS: operators need the API token",),
        serves=SERVER,
    ),
    Step("backupctl --token-file api-token stop nightly", prints=("stop nightly: SUCCESS",)),
    Step('"authorization: Bearer', prints=('"action": "SESSION_ACTION_STOP"',)),
]


def sh_blocks(section: str) -> list[str]:
    """The ```sh blocks under the README heading `## <section>` (or `### ...`), in order."""
    text = README.read_text()
    match = re.search(rf"\n(#+) {re.escape(section)}\n", text)
    assert match, f"no README section {section!r}"
    level = len(match.group(1))
    end = re.compile(rf"\n#{{1,{level}}} ").search(text, match.end())
    body = text[match.end() : end.start() if end else len(text)]
    return re.findall(r"```sh\n(.*?)```", body, re.DOTALL)


def substitute(block: str, live: dict[str, str]) -> str:
    for written, actual in live.items():
        block = block.replace(written, actual)
    return block


class Shell:
    """Runs blocks one after another as one terminal would: a variable one block exports,
    the next one sees. Each block stops at its first failing command (bash -e)."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self._exported = cwd / ".walkthrough-environment"

    async def run(self, command: str) -> subprocess.CompletedProcess[str]:
        script = f"trap 'env -0 > {shlex.quote(str(self._exported))}' EXIT\n{command}"
        result = await asyncio.to_thread(
            subprocess.run, ["bash", "-e", "-o", "pipefail", "-c", script],
            capture_output=True, text=True, env=self.env, cwd=self.cwd, timeout=60,
        )  # fmt: skip
        variables = self._exported.read_text().split("\0")
        self.env = dict(variable.split("=", 1) for variable in variables if "=" in variable)
        return result

    def start(self, command: str, log: Path) -> Process:
        """A block that keeps running (a server or an agent), in the background."""
        return Process([], log, command=["bash", "-c", command], env=self.env, cwd=self.cwd)


def check(step: Step, block: str, result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == step.exit_code, (block, output)
    assert "Traceback" not in output
    for expected in step.prints:
        assert expected in output, (block, expected, output)


async def run_section(
    section: str,
    steps: list[Step],
    shell: Shell,
    live: dict[str, str],
    serving: dict[str, Process] | None = None,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Runs the section's blocks in order, each checked against its step; returns what each
    printed, by marker. Processes it starts are left running in `serving`, by the README
    address they serve: the caller stops them."""
    blocks = sh_blocks(section)
    assert len(blocks) == len(steps), f"{len(blocks)} README blocks for {len(steps)} steps"
    for block, step in zip(blocks, steps, strict=True):
        assert step.marker in block, f"expected a block with {step.marker!r}, not:\n{block}"
    outputs = {}
    for index, (block, step) in enumerate(zip(blocks, steps, strict=True)):
        command = substitute(block, live)
        if step.serves:
            assert serving is not None, f"{step.marker!r} starts a process: pass `serving`"
            previous = serving.pop(step.serves, None)
            if previous is not None:
                previous.stop()  # the README restarts it: the same address, new options
            log = shell.cwd / f"process-{index}.log"
            serving[step.serves] = shell.start(command, log)
            written_before = live[step.serves]
            live[step.serves] = serving[step.serves].wait_listening()
            # A restart here listens on a new port, the README's on the same one: what the
            # shell exported (BACKUP_SERVER) follows it.
            shell.env = {
                name: value.replace(written_before, live[step.serves])
                for name, value in shell.env.items()
            }
            log_text = log.read_text()
            for expected in step.prints:
                assert expected in log_text, (block, expected, log_text)
            continue
        result = await shell.run(command)
        check(step, block, result)
        outputs[step.marker] = result
    return outputs


async def walkthrough_world(
    server: BackupServer,
    start_agent,  # type: ignore[no-untyped-def]
    closed_address: str,
    tmp_path: Path,
) -> dict[str, str]:
    """The README's addresses and folder, mapped to this test's server, two real agents
    ws1 and ws2, a closed port for ws3, and a folder holding data/hello.txt."""
    ws1: AgentServer = await start_agent("ws1")
    ws2: AgentServer = await start_agent("ws2")
    walkthrough = tmp_path / "walkthrough"
    (walkthrough / "data").mkdir(parents=True)
    (walkthrough / "data" / "hello.txt").write_text("hello\n")
    return {
        "127.0.0.1:50051": server.address,
        "127.0.0.1:50061": ws1.address,
        "127.0.0.1:50062": ws2.address,
        "127.0.0.1:50069": closed_address,
        "/tmp/walkthrough": str(walkthrough),
    }


@pytest.mark.parametrize("section", SECTIONS)
async def test_readme_walkthrough_runs_as_written(
    section: str,
    server: BackupServer,
    start_agent,  # type: ignore[no-untyped-def]
    closed_address: str,
    tmp_path: Path,
) -> None:
    """Each command of the section runs, exits as expected and prints what the README says."""
    live = await walkthrough_world(server, start_agent, closed_address, tmp_path)
    # The README's backupctl commands use the default server, which is this one here.
    shell = Shell(clean_environment(BACKUP_SERVER=server.address), tmp_path)
    outputs = await run_section(section, SECTIONS[section], shell, live)
    if "/StartPolicy" in outputs:
        session = json.loads(outputs["/StartPolicy"].stdout)
        deliveries = {r["computer"]["name"]: r["delivery"] for r in session["computerResults"]}
        assert deliveries == {
            "ws1": "DELIVERY_RECEIVED",
            "ws2": "DELIVERY_RECEIVED",
            "ws3": "DELIVERY_NOT_RECEIVED",
        }


async def test_backupctl_walkthrough_runs_after_the_grpcurl_one(
    server: BackupServer,
    start_agent,  # type: ignore[no-untyped-def]
    closed_address: str,
    tmp_path: Path,
) -> None:
    """A reader who follows the grpcurl walkthrough, then the backupctl one, on the same
    server and database, hits no ALREADY_EXISTS: each uses its own ids."""
    live = await walkthrough_world(server, start_agent, closed_address, tmp_path)
    shell = Shell(clean_environment(BACKUP_SERVER=server.address), tmp_path)
    for section in ("grpcurl walkthrough", "backupctl: the operator's command line"):
        await run_section(section, SECTIONS[section], shell, live)


async def test_both_walkthroughs_run_on_two_replicas_of_one_postgresql(
    start_server,  # type: ignore[no-untyped-def]
    start_agent,  # type: ignore[no-untyped-def]
    postgres_url: str,
    closed_address: str,
    tmp_path: Path,
) -> None:
    """Two replicas over one PostgreSQL serve the README: the grpcurl walkthrough on one,
    then the backupctl walkthrough on the other, over the same database, as written."""
    first: BackupServer = await start_server(db=postgres_url)
    second: BackupServer = await start_server(db=postgres_url)
    live = await walkthrough_world(first, start_agent, closed_address, tmp_path)
    shell = Shell(clean_environment(BACKUP_SERVER=second.address), tmp_path)
    for section in ("grpcurl walkthrough", "backupctl: the operator's command line"):
        await run_section(section, SECTIONS[section], shell, live)


async def test_secure_setup(tmp_path: Path) -> None:
    """The secure setup runs as written: certificates, a TLS server and a confined TLS agent started from their blocks, backupctl and grpcurl with the operator certificate and then with the token, refusals in one line."""
    (tmp_path / "srv" / "data").mkdir(parents=True)
    (tmp_path / "srv" / "data" / "hello.txt").write_text("hello\n")
    live = {
        # Until the server or agent runs, any port will do: a certificate names the host.
        SERVER: "127.0.0.1:50051",
        AGENT: "127.0.0.1:50061",
        "0.0.0.0:50051": "127.0.0.1:0",
        "0.0.0.0:50061": "127.0.0.1:0",
        " /srv": f" {tmp_path}/srv",
        " /var/": f" {tmp_path}/var/",
        "unix:/var/": f"unix:{tmp_path}/var/",
    }
    shell = Shell(clean_environment(), tmp_path)
    serving: dict[str, Process] = {}
    try:
        await run_section("Secure setup, step by step", SECURE_SETUP, shell, live, serving)
        restarted = serving[SERVER].log.read_text()
        assert "TLS: operators need the API token" in restarted
    finally:
        for process in serving.values():
            process.stop()
    assert len(restore_points(tmp_path / "var" / "backups" / "nightly")) == 1
    assert not (tmp_path / "var" / "backups" / "stray").exists()


async def test_two_replicas_serve_the_walkthrough_as_written(
    postgres: PostgresServer,
    start_agent,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """The "Two replicas" section runs as written on the tests' PostgreSQL: the database
    made with createdb, two replica processes from their blocks, a policy made on one,
    started on the other until its job succeeded, and listed on the first."""
    postgres.admin(
        "do $$ begin if not exists (select from pg_roles where rolname = 'backup') then "
        "create role backup login createdb; end if; end $$",
        "drop database if exists backup with (force)",
    )
    web1: AgentServer = await start_agent("web-1")
    (tmp_path / "srv" / "www").mkdir(parents=True)
    (tmp_path / "srv" / "www" / "index.html").write_text("<p>hello</p>\n")
    live = {
        "-p 5432": f"-p {postgres.port}",
        "127.0.0.1:5432": f"127.0.0.1:{postgres.port}",
        # Until a replica runs, any port will do; then its real address.
        "127.0.0.1:50051": "127.0.0.1:0",
        "127.0.0.1:50052": "127.0.0.1:0",
        "127.0.0.1:50061": web1.address,
        " /srv/www": f" {tmp_path}/srv/www",
        " /backup/www": f" {tmp_path}/backup/www",
    }
    env = clean_environment()
    shell = Shell({**env, "PATH": f"{postgres.bin}:{env['PATH']}"}, tmp_path)
    serving: dict[str, Process] = {}
    try:
        outputs = await run_section("Two replicas", TWO_REPLICAS, shell, live, serving)
        listed = outputs["policy create nightly"].stdout.splitlines()[-3:]
        assert any("start" in line and "SUCCESS" in line for line in listed), listed
    finally:
        for process in serving.values():
            process.stop()
        postgres.admin("drop database if exists backup with (force)")
    assert len(restore_points(tmp_path / "backup" / "www")) == 1
