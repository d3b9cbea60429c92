#!/usr/bin/env bash
# Threshold vault load benchmark (issue 13): complete 2-of-3 threshold recoveries (recover1 →
# recover2 → recover3 at each of 3 realms, with the client's blinding, proof and signature
# checks, combination and decryption) over HTTP from the Rust load generator
# crates/chatvault-vault/examples/threshold_loadgen.rs, on this machine: the 3 realm processes
# (SQLite each, own data dir and key file) and the load generator share the cores.
# Client-side Argon2 is excluded (test KSF, accepted only by the dev-feature build this script
# makes; never deploy that binary). Floor to check by eye: >= 500 recoveries/s (PROTOCOL.md §13).
#
#   bash bench/threshold-load.sh        # env: CLIENTS (16), SECONDS_PER_RUN (15), ACCOUNTS (64),
#                                       # VAULT_BIN / LOADGEN_BIN (other builds, for an A/B), SKIP_BUILD=1
# Prints one JSON line and appends it to bench/results/threshold-load-DATE.jsonl. No assertion:
# a bench, not a test.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENTS=${CLIENTS:-16}
SECS=${SECONDS_PER_RUN:-15}
ACCOUNTS=${ACCOUNTS:-64}
OUT="$ROOT/bench/results/threshold-load-$(date -u +%Y-%m-%d).jsonl"

log() { echo "threshold-load: $*" >&2; }

log "building release binaries (vault + load generator)"
[ -n "${SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release -q -p chatvault-vault --bins --examples)
BIN=${VAULT_BIN:-"$ROOT/target/release/chatvault-vault"}
GEN=${LOADGEN_BIN:-"$ROOT/target/release/examples/threshold_loadgen"}

WORK=$(mktemp -d /tmp/chatvault-threshold-load.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

args=()
for i in 1 2 3; do
    mkdir -p "$WORK/realm$i"
    RUST_LOG=error "$BIN" serve --dev-issuer --listen 127.0.0.1:0 --data-dir "$WORK/realm$i" \
        --rate-limit-ip 0 --rate-limit-account 0 >"$WORK/realm$i.out" 2>"$WORK/realm$i.err" &
    PIDS+=($!)
    url=""
    for _ in $(seq 1 100); do
        url=$(sed -n 's/^listening on //p' "$WORK/realm$i.out" | head -n 1)
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { cat "$WORK/realm$i.err" >&2; log "realm $i did not start"; exit 1; }
    args+=(--realm "$url" "$WORK/realm$i")
done

line=$("$GEN" "${args[@]}" --clients "$CLIENTS" --seconds "$SECS" --accounts "$ACCOUNTS")
line="{\"run\":\"sqlite-3realms-2of3\",\"cores\":$(nproc),${line#\{}"
mkdir -p "$(dirname "$OUT")"
echo "$line" | tee -a "$OUT"
log "results appended to $OUT"
