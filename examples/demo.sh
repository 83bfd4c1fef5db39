#!/usr/bin/env bash
# make demo: a backup server, three agents and one computer that is down, all on
# loopback, driven with backupctl exactly as an operator would type it.
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

# Something to back up: 2 MiB, read at 256 KiB/s so the jobs are still running at the stop.
mkdir -p "$WORK/data/reports"
head -c 2097152 /dev/urandom >"$WORK/data/reports/q3.bin"
echo "quarterly figures" >"$WORK/data/reports/q3.txt"

say "Charlie's agent is installed and driven locally: a pre-installed-agents group"
run backupctl group create branch-office --name "Branch office" --kind preinstalled-agents \
  --computer "charlie=${AGENT[charlie]}"

say "A policy over alpha, bravo, the down computer and the branch office"
run backupctl policy create nightly --name Nightly \
  --computer "alpha=${AGENT[alpha]}" --computer "bravo=${AGENT[bravo]}" --computer "dc-down=$DOWN" \
  --group branch-office --source "$WORK/data" --repository "$WORK/repository" --throttle 256KiB

say "Start it: alpha and bravo receive it, dc-down does not, charlie is skipped"
status=0
run backupctl start nightly || status=$?
echo "exit code $status (3: not every targeted computer received the start)"

run backupctl jobs "${AGENT[alpha]}"

say "Stop it: the running jobs are cancelled"
status=0
run backupctl stop nightly || status=$?
echo "exit code $status"

say "That stop session, as the server recorded it"
SESSION=$(backupctl sessions nightly --limit 1 -o json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["sessions"][0]["id"])')
run backupctl session "$SESSION"
run backupctl sessions nightly

say "The server logged each computer that did not receive a command"
grep 'not received' "$WORK/server.log"

say "Shutting down"
kill -TERM "${PIDS[@]}"
for pid in "${PIDS[@]}"; do
  wait "$pid" # each must exit 0: set -e stops the demo otherwise
done
PIDS=()
echo "server and agents stopped cleanly"
