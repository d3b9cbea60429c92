#!/usr/bin/env bash
# CI fuzz smoke run (see fuzz/README.md, "CI mode"): every fuzz target for a short, bounded time;
# exits non-zero on any crash.
#
#   scripts/ci-fuzz.sh [SECONDS_TOTAL]     # default 60: wall time of the fuzzing itself
#
# Cheap on a fresh machine by construction:
# - no `cargo install cargo-fuzz`: cargo build is called directly with the flags cargo-fuzz
#   passes (SanitizerCoverage passes, --cfg fuzzing), on stable Rust via RUSTC_BOOTSTRAP=1;
# - no AddressSanitizer (the long run in scripts/fuzz.sh keeps it): Rust panics, failed
#   assertions, debug assertions and integer overflow are still caught;
# - ONE binary (`all`) for every target, picked with CHATVAULT_FUZZ_TARGET, so the dependency
#   graph is compiled and linked once; release profile with cargo's default codegen units
#   (cargo-fuzz forces codegen-units=1, which compiles much slower);
# - the seed corpora are written by that same binary (CHATVAULT_FUZZ_SEEDS), not by a second
#   build of examples/seed_corpus.rs.
# The targets run $(nproc) at a time; each gets SECONDS_TOTAL * jobs / n_targets seconds.
#
# Environment:
#   FUZZ_TARGET_DIR    cargo target dir (default: <repo>/target-fuzz-ci; keep it apart from the
#                      ASan build of scripts/fuzz.sh, the flags differ)
#   FUZZ_TARGETS       space-separated subset of targets (default: all)
#   FUZZ_JOBS          targets run in parallel (default: nproc)
#   WHATSAPP_FIXTURES  directory with msgstore.db.crypt15 / encrypted_backup.key to seed from
#                      (default: <repo>/../shared/fixtures/whatsapp, skipped if absent)
set -euo pipefail

total=${1:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$root/target-fuzz-ci}
export RUSTC_BOOTSTRAP=1
unset CARGO_ENCODED_RUSTFLAGS
triple=$(rustc -vV | sed -n 's/^host: //p')
# The flags of `cargo fuzz build --sanitizer none` (cargo-fuzz 0.13, src/project.rs), plus
# debug assertions and overflow checks.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing -Cdebug-assertions"
fixtures=${WHATSAPP_FIXTURES:-$root/../shared/fixtures/whatsapp}

echo "== building the fuzz binary (no sanitizer)"
start=$SECONDS
# --target: RUSTFLAGS then apply to the target only, not to build scripts and proc macros.
cargo build --manifest-path fuzz/Cargo.toml --release --target "$triple" --bin all \
    --config profile.release.opt-level=1 --config profile.release.debug=false
echo "== built in $((SECONDS - start)) s"
bin=$CARGO_TARGET_DIR/$triple/release/all

echo "== seeding fuzz/corpus"
if [[ -d $fixtures ]]; then export WHATSAPP_FIXTURES=$fixtures; else unset WHATSAPP_FIXTURES; fi
CHATVAULT_FUZZ_SEEDS=fuzz/corpus "$bin"

targets=${FUZZ_TARGETS:-$("$bin" 2>/dev/null || true)}
n=$(wc -w <<<"$targets")
jobs=${FUZZ_JOBS:-$(nproc)}
((jobs >= 1)) || jobs=1
per=$((total * jobs / n))
((per >= 1)) || per=1
logdir=$CARGO_TARGET_DIR/fuzz-logs
mkdir -p "$logdir"

target_args() {
    case $1 in
        # Seeds include the 240 KB WhatsApp fixture; cap what libFuzzer mutates.
        crypt15) echo "-max_len=32768" ;;
    esac
}

run_one() {
    local t=$1 rc=0
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    # shellcheck disable=SC2046
    CHATVAULT_FUZZ_TARGET=$t "$bin" "fuzz/corpus/$t" $(target_args "$t") \
        -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$logdir/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$logdir/$t.rc"
}

echo "== running $n targets, $jobs at a time, $per s each"
start=$SECONDS
running=0
for t in $targets; do
    rm -f "$logdir/$t.rc"
    run_one "$t" &
    running=$((running + 1))
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true
echo "== fuzzed in $((SECONDS - start)) s"

failed=()
sum=0
for t in $targets; do
    log=$logdir/$t.log
    rc=$(cat "$logdir/$t.rc" 2>/dev/null || echo missing)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=${execs:-0}
    sum=$((sum + execs))
    status=ok
    if [[ $rc != 0 ]]; then
        status="CRASH (exit $rc)"
        failed+=("$t")
    fi
    printf '%-18s %12s execs  %s\n' "$t" "$execs" "$status"
    if [[ $status != ok ]]; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 || true
        echo "   (full log: $log)"
    fi
done
printf '%-18s %12s execs\n' total "$sum"
if ((${#failed[@]})); then
    echo "== FAILED: ${failed[*]}: crashing inputs are in fuzz/artifacts/<target>/;" \
        "reproduce with: CHATVAULT_FUZZ_TARGET=<target> $bin <file>" >&2
    exit 1
fi
