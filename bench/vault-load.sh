#!/usr/bin/env bash
# Backup Key Vault load benchmark (issue 12): complete recoveries (KE1 → KE2 → KE3 → release)
# over HTTP from the Rust load generator crates/chatvault-vault/examples/loadgen.rs, on this
# machine (load generator and vault share the cores). Client-side Argon2 is excluded: the
# accounts use the test KSF, which the vault accepts because the script builds it together with
# its examples (dev-dependency feature insecure-test-ksf); never deploy that binary.
#
#   bash bench/vault-load.sh                  # SQLite (1 process) and, if PostgreSQL is set up
#                                             # (CHATVAULT_TEST_POSTGRES_URL, scripts/ci-postgres.sh),
#                                             # 3 processes sharing PostgreSQL
# Env: CLIENTS (default 32), SECONDS_PER_RUN (15), RATE (paced run, default 300/s),
#      BACKENDS ("sqlite postgres", the runs to make), PG_POOL_SIZE (--pg-pool-size, default 8),
#      OUT (result file), TAG (written into each result line, e.g. the commit measured),
#      VAULT_BIN / LOADGEN_BIN (other binaries, e.g. a saved build for an A/B comparison;
#      SKIP_BUILD=1 skips cargo).
# Prints one JSON line per run and appends them to OUT (default bench/results/vault-load-DATE.jsonl).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENTS=${CLIENTS:-32}
SECS=${SECONDS_PER_RUN:-15}
RATE=${RATE:-300}
BACKENDS=${BACKENDS:-sqlite postgres}
PG_POOL_SIZE=${PG_POOL_SIZE:-8}
OUT=${OUT:-"$ROOT/bench/results/vault-load-$(date -u +%Y-%m-%d).jsonl"}

log() { echo "vault-load: $*" >&2; }

log "building release binaries (vault + load generator)"
[ -n "${SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release -q -p chatvault-vault --bins --examples)
BIN=${VAULT_BIN:-"$ROOT/target/release/chatvault-vault"}
GEN=${LOADGEN_BIN:-"$ROOT/target/release/examples/loadgen"}

WORK=$(mktemp -d /tmp/chatvault-vault-load.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
    if [ -n "${DB:-}" ]; then
        psql "$CHATVAULT_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" \
            >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# start_vault NAME [serve args…]: starts a vault on 127.0.0.1 with the data dir $WORK/data and
# sets URL to its URL. Not to be called in a command substitution: the subshell would keep the
# PID from PIDS and the vault would outlive the script.
start_vault() {
    local name=$1
    shift
    mkdir -p "$WORK/data"
    RUST_LOG=error "$BIN" serve --dev-issuer --listen 127.0.0.1:0 --data-dir "$WORK/data" \
        --rate-limit-ip 0 --rate-limit-account 0 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        url=$(sed -n 's/^listening on //p' "$WORK/$name.out" | head -n 1)
        if [ -n "$url" ]; then
            URL=$url
            return
        fi
        sleep 0.1
    done
    cat "$WORK/$name.err" >&2
    log "vault $name did not start"
    exit 1
}

stop_vaults() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    PIDS=()
    rm -rf "$WORK/data"
}

run() {
    local label=$1
    shift
    local line load_before
    load_before=$(cut -d' ' -f1 /proc/loadavg)
    line=$("$GEN" --data-dir "$WORK/data" --clients "$CLIENTS" --seconds "$SECS" "$@")
    line="{\"run\":\"$label\",\"tag\":\"${TAG:-}\",\"cores\":$(nproc),\"loadavg_1m_before\":$load_before,${line#\{}"
    echo "$line" | tee -a "$OUT"
}

if [[ " $BACKENDS " == *" sqlite "* ]]; then
    log "SQLite, one process"
    start_vault sqlite
    run "sqlite-1proc-max" --url "$URL"
    run "sqlite-1proc-${RATE}per_s" --url "$URL" --rate "$RATE"
    stop_vaults
fi

if [[ " $BACKENDS " != *" postgres "* ]]; then
    :
elif [ -n "${CHATVAULT_TEST_POSTGRES_URL:-}" ]; then
    DB="chatvault_load_$$"
    psql "$CHATVAULT_TEST_POSTGRES_URL" -qc "CREATE DATABASE $DB" >/dev/null
    PG_URL="${CHATVAULT_TEST_POSTGRES_URL%/*}/$DB"
    log "PostgreSQL, three processes"
    urls=()
    for i in 1 2 3; do
        start_vault "pg$i" --db "$PG_URL" --pg-pool-size "$PG_POOL_SIZE"
        urls+=(--url "$URL")
    done
    run "postgres-3proc-max" "${urls[@]}"
    run "postgres-3proc-${RATE}per_s" "${urls[@]}" --rate "$RATE"
    stop_vaults
    psql "$CHATVAULT_TEST_POSTGRES_URL" -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null || true
    DB=
else
    log "CHATVAULT_TEST_POSTGRES_URL not set: PostgreSQL runs skipped"
fi
log "results appended to $OUT"
