#!/usr/bin/env bash
# make demo: a backup server, three agents and one computer that is down, all on
# loopback, driven with backupctl exactly as an operator would type it: a backup that
# ends with restore points, a stop of running jobs, a restore compared with the original
# by cmp, and a verify.
#
# Every process listens on port 0 and says where it landed, so no port is assumed free.
# The commands need backup-server, backup-agent and backupctl on PATH (make demo sees to it).
set -euo pipefail

WORK=$(mktemp -d "${TMPDIR:-/tmp}/backup-demo.XXXXXX")
PIDS=()

stop_everything() {
  if ((${#PIDS[@]})); then
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap stop_everything EXIT

say() { printf '\n\033[1m## %s\033[0m\n' "$*"; }
# Shows the command as it would be typed (quoted where the shell needs it), then runs it.
run() {
  local arg line="$"
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then line+=" $arg"; else line+=" '$arg'"; fi
  done
  printf '\n%s\n' "$line"
  "$@"
}
# Waits until FILE has a line matching REGEX and prints the part of it in \(...\).
wait_for() {
  local file=$1 regex=$2 found=""
  for _ in $(seq 100); do
    found=$(sed -n "s/$regex/\\1/p" "$file" 2>/dev/null | head -n 1)
    [[ -n $found ]] && break
    sleep 0.1
  done
  [[ -n $found ]] || { echo "demo: nothing matched '$regex' in $file" >&2; exit 1; }
  echo "$found"
}

say "A backup server and three agents (alpha, bravo, charlie) on loopback"
backup-server --listen 127.0.0.1:0 --db "$WORK/server.db" --agent-deadline 2 2>"$WORK/server.log" &
PIDS+=($!)
for name in alpha bravo charlie; do
  backup-agent --listen 127.0.0.1:0 --name "$name" --data-dir "$WORK/agents/$name" 2>"$WORK/$name.log" &
  PIDS+=($!)
done
# Development mode: plaintext on loopback, so no TLS material or token from the caller's
# environment may reach backupctl.
unset BACKUP_TLS_CA BACKUP_TLS_CERT BACKUP_TLS_KEY BACKUP_TOKEN_FILE
export BACKUP_SERVER
BACKUP_SERVER=$(wait_for "$WORK/server.log" '.*listening on \([0-9.]*:[0-9]*\).*')
declare -A AGENT
for name in alpha bravo charlie; do
  AGENT[$name]=$(wait_for "$WORK/agents/$name/agent.json" '.*"address": "\([^"]*\)".*')
done
# The computer "dc-down", whose agent is not running: a port held bound but never
# listening, so connecting is refused and nothing started meanwhile can take it.
coproc HOLD {
  exec python3 -c 'import signal, socket, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit())
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1], flush=True); signal.pause()'
}
PIDS+=("$HOLD_PID")
read -r DOWN_PORT <&"${HOLD[0]}"
DOWN=127.0.0.1:$DOWN_PORT
echo "server $BACKUP_SERVER; agents alpha ${AGENT[alpha]}, bravo ${AGENT[bravo]}, charlie ${AGENT[charlie]}; dc-down $DOWN (nothing listens)"

# Something to back up: a small tree for the nightly policy, and 2 MiB read at 256 KiB/s
# for the archive policy, so that its jobs are still running when it is stopped.
mkdir -p "$WORK/data/reports" "$WORK/archive"
head -c 262144 /dev/urandom >"$WORK/data/reports/q3.bin"
echo "quarterly figures" >"$WORK/data/reports/q3.txt"
head -c 2097152 /dev/urandom >"$WORK/archive/scans.bin"

# Waits until the agent at ADDRESS has no running job of POLICY, then prints its last job's state.
wait_job() {
  local address=$1 policy=$2 state=""
  for _ in $(seq 300); do
    state=$(backupctl jobs "$address" --policy "$policy" -o json |
      python3 -c 'import json, sys; jobs = json.load(sys.stdin)["jobs"]; print(jobs[0]["state"] if jobs else "")')
    [[ -n $state && $state != JOB_STATE_RUNNING ]] && break
    sleep 0.1
  done
  echo "$state"
}

say "Charlie's agent is installed and driven locally: a pre-installed-agents group"
run backupctl group create branch-office --name "Branch office" --kind preinstalled-agents \
  --computer "charlie=${AGENT[charlie]}"

say "A policy over alpha, bravo, the down computer and the branch office"
run backupctl policy create nightly --name Nightly \
  --computer "alpha=${AGENT[alpha]}" --computer "bravo=${AGENT[bravo]}" --computer "dc-down=$DOWN" \
  --group branch-office --source "$WORK/data" --repository "$WORK/repository"

say "Start it: alpha and bravo receive it, dc-down does not, charlie is skipped"
status=0
run backupctl start nightly || status=$?
echo "exit code $status (3: not every targeted computer received the start)"

say "Each job runs on its computer and ends with a restore point"
wait_job "${AGENT[alpha]}" nightly >/dev/null
wait_job "${AGENT[bravo]}" nightly >/dev/null
run backupctl jobs "${AGENT[alpha]}"
run backupctl jobs "${AGENT[bravo]}"

say "Is every computer protected? The server's answer, per computer"
status=0
run backupctl status nightly || status=$?
echo "status exits $status (3: some computer has no successful backup: dc-down never received one)"

say "A slower policy, stopped while its jobs run"
run backupctl policy create archive --name Archive \
  --computer "alpha=${AGENT[alpha]}" --computer "bravo=${AGENT[bravo]}" \
  --source "$WORK/archive" --repository "$WORK/repository" --throttle 256KiB
run backupctl start archive
status=0
run backupctl stop archive || status=$?
echo "exit code $status (0: every targeted computer received the stop)"
echo "archive job on alpha: $(wait_job "${AGENT[alpha]}" archive)"

say "Every session, as the server recorded it"
run backupctl sessions

say "Restore alpha's file from its restore point, and compare it with the original"
POINT=$(backupctl jobs "${AGENT[alpha]}" --policy nightly -o json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["jobs"][0]["restorePointId"])')
run backup-agent points --data-dir "$WORK/agents/alpha"
run backup-agent ls "$POINT" --data-dir "$WORK/agents/alpha"
run backup-agent restore "$POINT" --to "$WORK/restored" --data-dir "$WORK/agents/alpha"
RESTORED="$WORK/restored$WORK/data/reports/q3.bin"
run cmp "$WORK/data/reports/q3.bin" "$RESTORED"
echo "identical: the restored q3.bin is byte for byte the original"

say "Verify: re-read every chunk alpha's restore points need"
run backup-agent verify --data-dir "$WORK/agents/alpha"

say "The server logged each computer that did not receive a command"
grep 'not received' "$WORK/server.log"

say "Shutting down"
kill -TERM "${PIDS[@]}"
for pid in "${PIDS[@]}"; do
  wait "$pid" # each must exit 0: set -e stops the demo otherwise
done
PIDS=()
echo "server and agents stopped cleanly"
