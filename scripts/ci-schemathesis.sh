#!/usr/bin/env bash
# Property-based API tests of the Backup Key Vault against the OpenAPI document it serves.
#
#   bash scripts/ci-schemathesis.sh [VAULT_BINARY]      # default: target/debug/chatvault-vault
#
# Needs: python3 (installs python3-venv with apt-get when missing; run as root in CI) and the
# `chatvault` CLI next to the vault binary (the workspace test run builds both). Installs a pinned schemathesis
# into a private venv (CHATVAULT_SCHEMATHESIS_VENV, default /tmp/chatvault-schemathesis/venv),
# starts the vault on 127.0.0.1 with a temporary data directory and no rate limits, mints an
# account token, registers that account (plus a rollback commitment) so the recovery and
# commitment paths also run on a live record, then runs schemathesis with a fixed seed:
#   1. every operation except the reset (DELETE /v1/accounts/{account}), on the live record;
#   2. the reset alone.
# Checks: not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance. Exits non-zero on any failure; prints one summary line last.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${CHATVAULT_SCHEMATHESIS_MAX_EXAMPLES:-40}
SEED=${CHATVAULT_SCHEMATHESIS_SEED:-20261130}
ACCOUNT=schemathesis
CHECKS=${CHATVAULT_SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SETUP_ONLY=no
if [ "${1:-}" = --setup-only ]; then SETUP_ONLY=yes; shift; fi
VAULT_BIN=${1:-$ROOT/target/debug/chatvault-vault}
VENV=${CHATVAULT_SCHEMATHESIS_VENV:-/tmp/chatvault-schemathesis/venv}

log() { echo "ci-schemathesis: $*" >&2; }
started=$(date +%s)

# --- pinned schemathesis in a private venv ---------------------------------------------------
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        log "installing python3-venv with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq python3-venv >&2
    fi
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi
# --setup-only: install, nothing else (.ci/run does it while clippy compiles).
[ "$SETUP_ONLY" = no ] || exit 0

if [ ! -x "$VAULT_BIN" ]; then
    log "vault binary $VAULT_BIN not found; build it first (cargo build -p chatvault-vault)"
    exit 2
fi

# --- the chatvault CLI registers the account (built next to the vault by the test run) --------
CLI_BIN=$(dirname "$VAULT_BIN")/chatvault
if [ ! -x "$CLI_BIN" ]; then
    log "chatvault CLI $CLI_BIN not found; build it first (cargo build -p chatvault-cli)"
    exit 2
fi

# --- the vault ---------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/chatvault-schemathesis-run.XXXXXX)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/data"
RUST_LOG=warn "$VAULT_BIN" serve --dev-issuer --listen 127.0.0.1:0 --data-dir "$WORK/data" \
    --rate-limit-ip 0 --rate-limit-account 0 >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!
URL=
for _ in $(seq 1 100); do
    URL=$(sed -n 's/^listening on //p' "$WORK/stdout" | head -n 1)
    [ -n "$URL" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        cat "$WORK/stderr" >&2
        log "the vault exited at start"
        exit 1
    fi
    sleep 0.1
done
[ -n "$URL" ] || { log "the vault did not start"; exit 1; }
log "vault at $URL"

TOKEN=$("$VAULT_BIN" token --account "$ACCOUNT" --data-dir "$WORK/data" --ttl 3600)
# Register through the real client (password mode), then back up once so that a rollback
# commitment is stored too. Cheap Argon2 parameters: this record only serves the API tests.
mkdir -p "$WORK/src"
echo "schemathesis" >"$WORK/src/chat.txt"
export CHATVAULT_ACCOUNT_TOKEN=$TOKEN CHATVAULT_INSECURE_TEST_KSF=1
CHATVAULT_NEW_PASSWORD=schemathesis-password "$CLI_BIN" --home "$WORK/home" -q init --password \
    --repo "$WORK/repo" --vault "$URL" --account "$ACCOUNT" >/dev/null
"$CLI_BIN" --home "$WORK/home" -q backup "$WORK/src" >/dev/null
unset CHATVAULT_ACCOUNT_TOKEN CHATVAULT_INSECURE_TEST_KSF

# Every operation on the registered account (a random account id would only ever get 403).
cat >"$WORK/schemathesis.toml" <<TOML
[parameters]
"path.account" = "$ACCOUNT"
TOML

run_schemathesis() {
    "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$URL/openapi.json" \
        --checks "$CHECKS" \
        --header "Authorization: Bearer $TOKEN" \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --workers 1 \
        --generation-database none \
        --no-color \
        --output-sanitize true \
        "$@"
}

status=0
status2=0
run_schemathesis --exclude-method DELETE >"$WORK/run1.log" 2>&1 || status=$?
# The reset needs a recent token (issued in the last 5 minutes, PROTOCOL.md §8).
TOKEN=$("$VAULT_BIN" token --account "$ACCOUNT" --data-dir "$WORK/data" --ttl 3600)
run_schemathesis --include-method DELETE >"$WORK/run2.log" 2>&1 || status2=$?
cat "$WORK/run1.log" "$WORK/run2.log" >&2
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "the vault died during the run"
    cat "$WORK/stderr" >&2
    status=1
fi

# Which routes answered what (shows that the live-record paths were reached).
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "$URL/metrics" 2>/dev/null | grep '^chatvault_vault_http_requests_total' >&2 || true

cases=$(grep -hoE '[0-9]+ generated' "$WORK/run1.log" "$WORK/run2.log" | awk '{s += $1} END {print s + 0}')
elapsed=$(($(date +%s) - started))
if [ "$status" -eq 0 ] && [ "$status2" -eq 0 ]; then
    echo "ci-schemathesis: OK: schemathesis $SCHEMATHESIS_VERSION, $cases generated cases, checks $CHECKS, seed $SEED, ${elapsed}s"
else
    echo "ci-schemathesis: FAILED (exit $status/$status2): schemathesis $SCHEMATHESIS_VERSION, $cases generated cases, seed $SEED, ${elapsed}s; see the report above"
    exit 1
fi
