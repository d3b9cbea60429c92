#!/usr/bin/env bash
# Bounded fuzzing run of every decoder of untrusted bytes (see fuzz/README.md). This is the
# documented long/local run (ASan, cargo-fuzz); CI uses the cheaper scripts/ci-fuzz.sh.
#
#   scripts/fuzz.sh [SECONDS_TOTAL]      # default 60: SECONDS_TOTAL / n_targets per target
#
# Builds all fuzz targets once (cargo-fuzz, ASan), seeds fuzz/corpus/<target>/ from real
# encoder output (fuzz/src/seeds.rs, via the `all` binary; plus the WhatsApp fixture when
# present), runs each target in turn and prints executions per target. Exits non-zero if any
# target crashes (panic, failed assertion, sanitizer report, OOM > 2 GiB, or an input taking
# > 10 s); the crashing input is in fuzz/artifacts/<target>/.
#
# Needs stable Rust + crates.io only: nightly flags are enabled with RUSTC_BOOTSTRAP=1, and
# cargo-fuzz is installed (`cargo install cargo-fuzz --locked`, ~2 min) when missing.
#
# Environment:
#   FUZZ_TARGET_DIR    cargo target dir of the fuzz build (default: <repo>/target-fuzz)
#   FUZZ_SANITIZER     address (default) or none (faster build and runs; Rust panics and
#                      assertions are still caught, memory errors in C/unsafe code are not)
#   FUZZ_TARGETS       space-separated subset of targets (default: all, from `cargo fuzz list`,
#                      without the multiplexing binary `all`)
#   WHATSAPP_FIXTURES  directory with msgstore.db.crypt15 / encrypted_backup.key to seed from
#                      (default: <repo>/../shared/fixtures/whatsapp, skipped if absent)
set -euo pipefail

total=${1:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$root/target-fuzz}
export RUSTC_BOOTSTRAP=1
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
sanitizer=${FUZZ_SANITIZER:-address}
# ASan's default 256 MB quarantine recycles the 64 MiB buffers that zstd's one-shot API
# reserves for every broken frame so slowly that blob_payload runs at ~60 exec/s. With 32 MB
# it runs at ~1,200 exec/s, and use-after-free detection for small chunks is unchanged.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=32}
fixtures=${WHATSAPP_FIXTURES:-$root/../shared/fixtures/whatsapp}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    start=$SECONDS
    cargo install cargo-fuzz --locked
    echo "== cargo-fuzz installed in $((SECONDS - start)) s"
fi

echo "== building fuzz targets (sanitizer: $sanitizer)"
start=$SECONDS
cargo fuzz build --sanitizer "$sanitizer"
echo "== built in $((SECONDS - start)) s"

triple=$(rustc -vV | sed -n 's/^host: //p')
bindir=$CARGO_TARGET_DIR/$triple/release

echo "== seeding fuzz/corpus"
# The `all` binary writes the seeds of fuzz/src/seeds.rs (same as examples/seed_corpus.rs,
# without a second, uninstrumented build of the whole dependency graph).
if [[ -d $fixtures ]]; then export WHATSAPP_FIXTURES=$fixtures; else unset WHATSAPP_FIXTURES; fi
CHATVAULT_FUZZ_SEEDS=fuzz/corpus "$bindir/all"
# `all` is the multiplexing binary of scripts/ci-fuzz.sh (every target in one), not a target.
targets=${FUZZ_TARGETS:-$(cargo fuzz list | grep -vx all)}
n=$(wc -w <<<"$targets")
per=$((total / n))
((per >= 1)) || per=1
logdir=$CARGO_TARGET_DIR/fuzz-logs
mkdir -p "$logdir"

# Per-target libFuzzer options. crypt15's seeds include the 240 KB WhatsApp fixture; without a
# cap libFuzzer would mutate inputs that large and run at ~30 exec/s instead of ~200.
target_args() {
    case $1 in
        crypt15) echo "-max_len=32768" ;;
    esac
}

echo "== running $n targets for $per s each"
failed=()
summary=()
sum=0
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log=$logdir/$t.log
    status=ok
    # shellcheck disable=SC2046
    if ! "$bindir/$t" "fuzz/corpus/$t" $(target_args "$t") \
        -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
        status=CRASH
        failed+=("$t")
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=${execs:-0}
    sum=$((sum + execs))
    summary+=("$(printf '%-16s %12s execs  %s' "$t" "$execs" "$status")")
    echo "${summary[-1]}"
    if [[ $status != ok ]]; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 || true
        echo "   (full log: $log)"
    fi
done

echo "== summary (${per} s per target)"
printf '%s\n' "${summary[@]}"
printf '%-16s %12s execs\n' total "$sum"
if ((${#failed[@]})); then
    echo "== FAILED: ${failed[*]}: crashing inputs are in fuzz/artifacts/<target>/;" \
        "reproduce with: \$CARGO_TARGET_DIR/$triple/release/<target> <file>" >&2
    exit 1
fi
