#!/usr/bin/env bash
# Incremental-backup benchmark: chatvault vs restic (and borg when installed), same data, same run.
#
#   bench/incremental.sh [--preset benchmark|small] [--workdir DIR] [--seed N] [--no-borg]
#
# See bench/README.md for what is measured and how to read the output. Not part of the test
# suite: it only reports figures (and whether the issue's two floors are met); it exits non-zero
# only when a tool fails.
set -euo pipefail

PRESET=benchmark
WORKDIR=
SEED=1
USE_BORG=auto

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}
while [ $# -gt 0 ]; do
    case "$1" in
        --preset) PRESET=${2:?}; shift 2 ;;
        --preset=*) PRESET=${1#*=}; shift ;;
        --workdir) WORKDIR=${2:?}; shift 2 ;;
        --workdir=*) WORKDIR=${1#*=}; shift ;;
        --seed) SEED=${2:?}; shift 2 ;;
        --no-borg) USE_BORG=no; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
case "$PRESET" in benchmark|small) ;; *) echo "--preset must be benchmark or small" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR="$ROOT/bench/results"

die() { echo "incremental.sh: $*" >&2; exit 1; }
log() { printf '\n== %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Work folder (kept when given, removed otherwise).
if [ -n "$WORKDIR" ]; then
    mkdir -p "$WORKDIR"
    [ -z "$(ls -A "$WORKDIR")" ] || die "--workdir $WORKDIR is not empty"
    WORK=$(cd "$WORKDIR" && pwd)
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/chatvault-bench.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
CHATS="$WORK/chats"          # the folder every tool backs up
BEFORE="$WORK/before"        # consistent copies of the databases before the day
FIG="$WORK/figures.env"      # raw figures, KEY=VALUE, turned into JSON at the end
LOGS="$WORK/logs"
mkdir -p "$BEFORE" "$LOGS"
: > "$FIG"
fig() { printf '%s=%s\n' "$1" "$2" >> "$FIG"; }
# Fingerprint of the backed-up folder (path, size, mtime of every file). `-shm` files are left
# out: SQLite readers (chatvault's consistent copy, page_diff) create a 0-byte `-wal` and a
# 32 KiB `-shm` next to a WAL database and touch the `-shm` on every open.
state() { (cd "$CHATS" && find . -type f ! -name '*-shm' -printf '%p %s %T@\n' | sort | md5sum | cut -c1-32); }
same_state() {
    local now; now=$(state)
    [ "$now" = "$1" ] || die "the sample folder changed between tools (before $2)"
}

# Runs a command, its stdout to $LOGS/<name>.log and stderr to $LOGS/<name>.err; records
# <name>_s (wall seconds).
timed() {
    local name=$1; shift
    local t0=$EPOCHREALTIME
    if ! "$@" > "$LOGS/$name.log" 2> "$LOGS/$name.err"; then
        echo "---- $name failed: $*" >&2
        tail -n 30 "$LOGS/$name.log" "$LOGS/$name.err" >&2
        exit 1
    fi
    local t1=$EPOCHREALTIME
    fig "${name}_s" "$(python3 -c "print(round($t1 - $t0, 3))")"
}
# Before each timed backup: the earlier steps' writes are flushed (`sync`), so that no tool pays
# for the writeback of the sample generation or of another tool's repository (chatvault syncs
# each pack it writes, and would wait for that), and the folder is read once, so the page cache
# is warm for every tool.
settle() { sync; find "$CHATS" -type f -exec cat {} + > /dev/null; }
dusb() { du -sb "$1" | cut -f1; }
# Per-folder sizes of a repository (missing folders count 0).
dus_parts() {
    local tool=$1 repo=$2 when=$3 part
    shift 3
    for part in "$@"; do
        if [ -e "$repo/$part" ]; then fig "${tool}_${when}_${part}_bytes" "$(dusb "$repo/$part")"
        else fig "${tool}_${when}_${part}_bytes" 0; fi
    done
    fig "${tool}_${when}_files" "$(find "$repo" -type f | wc -l)"
    # du -sb also counts directory entries; this is file content only.
    fig "${tool}_${when}_file_bytes" "$(find "$repo" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')"
}

# ---------------------------------------------------------------------------------------------
log "building release binaries"
cd "$ROOT"
# (two invocations: with --example, cargo builds only the named targets, not the binary)
cargo build --release --quiet -p chatvault-cli --bin chatvault
cargo build --release --quiet -p chatvault-repo --example page_diff
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
CV="$TARGET/release/chatvault"
PAGE_DIFF="$TARGET/release/examples/page_diff"
[ -x "$CV" ] && [ -x "$PAGE_DIFF" ] || die "binaries not found under $TARGET/release"
# Byte breakdown of chatvault's repository (decrypts with the key; a separate small crate, since
# it is not part of the product). Optional: without it the figures are the same, minus the split.
REPO_STATS="$TARGET/release/repo-stats"
if ! cargo build --release --quiet --manifest-path "$ROOT/bench/repo-stats/Cargo.toml" \
        --target-dir "$TARGET"; then
    echo "bench/repo-stats did not build: no byte breakdown of the chatvault repository" >&2
    REPO_STATS=
fi

command -v restic > /dev/null || die "restic not found (apt-get install -y restic)"
if [ "$USE_BORG" = auto ]; then
    if command -v borg > /dev/null; then USE_BORG=yes; else
        USE_BORG=no; echo "borg not found: skipped (apt-get install -y borgbackup)" >&2; fi
fi

fig chatvault_version "$("$CV" --version | head -n1)"
fig restic_version "$(restic version | head -n1)"
[ "$USE_BORG" = yes ] && fig borg_version "$(borg --version | head -n1)"
fig host_cpus "$(nproc)"
fig host_kernel "$(uname -sr)"
fig preset "$PRESET"
if git -C "$ROOT" rev-parse --git-dir > /dev/null 2>&1; then
    fig commit "$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo '+dirty')"
else
    fig commit "${BENCH_COMMIT:-unknown}"
fi
fig seed "$SEED"

# Isolated homes, caches and passwords: nothing outside $WORK is read or written.
CV_HOME="$WORK/cv-home"; CV_REPO="$WORK/repo-chatvault"
RESTIC_REPO="$WORK/repo-restic"; BORG_REPO_DIR="$WORK/repo-borg"
export RESTIC_PASSWORD_FILE="$WORK/restic-password"
export RESTIC_CACHE_DIR="$WORK/cache-restic"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RESTIC_PASSWORD_FILE"
BORG_PASSPHRASE=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BORG_PASSPHRASE BORG_BASE_DIR="$WORK/borg-base" BORG_DISPLAY_PASSPHRASE=no
unset CHATVAULT_HOME CHATVAULT_REPO CHATVAULT_KEY RESTIC_REPOSITORY RESTIC_PASSWORD BORG_REPO

# ---------------------------------------------------------------------------------------------
log "generating the $PRESET sample (seed $SEED)"
timed sample_generate "$CV" sample "$CHATS" --preset "$PRESET" --seed "$SEED"
cat "$LOGS/sample_generate.log" "$LOGS/sample_generate.err" >&2
fig source_bytes_day0 "$(dusb "$CHATS")"
fig source_files_day0 "$(find "$CHATS" -type f | wc -l)"
(cd "$CHATS" && find . -type f -printf '%p\t%s\n' | sort) > "$WORK/files-day0.tsv"

# Consistent copies of the databases as of day 0, for page_diff after the day. Taken before the
# backups so that every tool sees the same files: opening a WAL database leaves an empty `-wal`
# and a `-shm` next to it (as on a phone, where they always exist), which restic and borg store
# and chatvault skips (FORMAT.md §5.1).
for db in $(cd "$CHATS" && find . -type f -name '*.db' | sort); do
    mkdir -p "$BEFORE/$(dirname "$db")"
    "$PAGE_DIFF" --copy "$CHATS/$db" "$BEFORE/$db"
done
ls -la "$CHATS"/Databases > "$LOGS/databases-day0.txt"

# ---------------------------------------------------------------------------------------------
log "initial backups (day 0)"
"$CV" --home "$CV_HOME" init --repo "$CV_REPO" --key --key-out "$WORK/chatvault.key" \
    > "$LOGS/chatvault_init.log" 2>&1 \
    || { cat "$LOGS/chatvault_init.log" >&2; die "chatvault init failed"; }
STATE0=$(state)
settle
timed chatvault_backup0 "$CV" --home "$CV_HOME" --quiet backup "$CHATS" --json
fig chatvault_repo0_bytes "$(dusb "$CV_REPO")"
dus_parts chatvault "$CV_REPO" repo0 data index snapshots
repo_stats() {
    [ -n "$REPO_STATS" ] || return 0
    "$REPO_STATS" "$CV_REPO" "$WORK/chatvault.key" > "$LOGS/chatvault_stats$1.json" \
        || { echo "repo-stats failed: no byte breakdown" >&2; rm -f "$LOGS/chatvault_stats$1.json"; }
}
repo_stats 0

restic -r "$RESTIC_REPO" init > "$LOGS/restic_init.log" 2>&1 \
    || { cat "$LOGS/restic_init.log" >&2; die "restic init failed"; }
same_state "$STATE0" "restic day 0"
settle
timed restic_backup0 restic -r "$RESTIC_REPO" --host bench backup "$CHATS" --json
fig restic_repo0_bytes "$(dusb "$RESTIC_REPO")"
dus_parts restic "$RESTIC_REPO" repo0 data index snapshots

if [ "$USE_BORG" = yes ]; then
    borg init -e repokey "$BORG_REPO_DIR" > "$LOGS/borg_init.log" 2>&1 \
        || { cat "$LOGS/borg_init.log" >&2; die "borg init failed"; }
    same_state "$STATE0" "borg day 0"
    settle
    timed borg_backup0 borg create --compression zstd,3 --stats "$BORG_REPO_DIR::day0" "$CHATS"
    fig borg_repo0_bytes "$(dusb "$BORG_REPO_DIR")"
    dus_parts borg "$BORG_REPO_DIR" repo0 data
fi

# ---------------------------------------------------------------------------------------------
log "simulating one day"
timed sample_next_day "$CV" sample "$CHATS" --preset "$PRESET" --seed "$SEED" --next-day 1
cat "$LOGS/sample_next_day.log" "$LOGS/sample_next_day.err" >&2
fig source_bytes_day1 "$(dusb "$CHATS")"
(cd "$CHATS" && find . -type f -printf '%p\t%s\n' | sort) > "$WORK/files-day1.tsv"
# The same folder state is backed up by every tool below: nothing writes to $CHATS from here on.
ls -la "$CHATS"/Databases > "$LOGS/databases-day1.txt"

# New media: files that did not exist before the day (summed from the listings), cross-checked
# against what `sample --next-day` printed.
python3 - "$WORK/files-day0.tsv" "$WORK/files-day1.tsv" >> "$FIG" <<'EOF'
import sys
def load(p):
    d = {}
    for line in open(p):
        path, size = line.rstrip("\n").rsplit("\t", 1)
        d[path] = int(size)
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
new = {p: s for p, s in b.items() if p not in a}
media = {p: s for p, s in new.items() if p.startswith("./Media/")}
changed = [p for p, s in b.items() if p in a and a[p] != s]
print(f"new_files={len(new)}")
print(f"new_media_files={len(media)}")
print(f"new_media_bytes={sum(media.values())}")
print(f"new_other_bytes={sum(s for p, s in new.items() if p not in media)}")
print(f"resized_files={' '.join(sorted(changed))}")
EOF
sed -n 's/.*media files (\([0-9]*\) bytes) added.*/next_day_reported_media_bytes=\1/p' \
    "$LOGS/sample_next_day.log" >> "$FIG"

# Changed pages of every database between its consistent copies before and after the day.
PAGES_JSON="$WORK/page_diff.jsonl"
: > "$PAGES_JSON"
for db in $(cd "$BEFORE" && find . -type f -name '*.db' | sort); do
    [ -f "$CHATS/$db" ] || continue
    "$PAGE_DIFF" "$BEFORE/$db" "$CHATS/$db" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); d["db"]=sys.argv[1]; print(json.dumps(d))' "$db" \
        >> "$PAGES_JSON"
done
cat "$PAGES_JSON" >&2

# ---------------------------------------------------------------------------------------------
log "incremental backups (day 1)"
STATE1=$(state)
settle
timed chatvault_backup1 "$CV" --home "$CV_HOME" --quiet backup "$CHATS" --json
fig chatvault_repo1_bytes "$(dusb "$CV_REPO")"
dus_parts chatvault "$CV_REPO" repo1 data index snapshots
repo_stats 1
# Size of every object the incremental added (to tell data packs from tree packs, index, ...).
(cd "$CV_REPO" && find . -type f -newer "$LOGS/chatvault_backup0.log" -printf '%p\t%s\n' | sort) \
    > "$LOGS/chatvault_new_objects.tsv"

same_state "$STATE1" "restic day 1"
settle
timed restic_backup1 restic -r "$RESTIC_REPO" --host bench backup "$CHATS" --json
fig restic_repo1_bytes "$(dusb "$RESTIC_REPO")"
dus_parts restic "$RESTIC_REPO" repo1 data index snapshots

if [ "$USE_BORG" = yes ]; then
    same_state "$STATE1" "borg day 1"
    settle
    timed borg_backup1 borg create --compression zstd,3 --stats "$BORG_REPO_DIR::day1" "$CHATS"
    fig borg_repo1_bytes "$(dusb "$BORG_REPO_DIR")"
    dus_parts borg "$BORG_REPO_DIR" repo1 data
fi

# ---------------------------------------------------------------------------------------------
log "restores of the latest snapshot (into empty folders, page cache warm)"
# Verifies the media came back complete (count and bytes); databases are checked by each tool.
check_restore() {
    local tool=$1 dir=$2 media
    media=$(find "$dir" -type d -name Media | head -n1)
    [ -n "$media" ] || die "$tool restore: no Media folder"
    fig "${tool}_restore_files" "$(find "$dir" -type f | wc -l)"
    fig "${tool}_restore_media_bytes" "$(find "$media" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')"
}
timed chatvault_restore "$CV" --home "$CV_HOME" --quiet restore latest --target "$WORK/restore-chatvault"
check_restore chatvault "$WORK/restore-chatvault"
rm -rf "$WORK/restore-chatvault"

timed restic_restore restic -r "$RESTIC_REPO" restore latest --target "$WORK/restore-restic"
check_restore restic "$WORK/restore-restic"
rm -rf "$WORK/restore-restic"

if [ "$USE_BORG" = yes ]; then
    mkdir -p "$WORK/restore-borg"
    timed borg_restore sh -c 'cd "$1" && borg extract "$2::day1"' _ "$WORK/restore-borg" "$BORG_REPO_DIR"
    check_restore borg "$WORK/restore-borg"
    rm -rf "$WORK/restore-borg"
fi
same_state "$STATE1" "the end"
ls -la "$CHATS"/Databases > "$LOGS/databases-end.txt"
fig source_media_bytes_day1 "$(find "$CHATS/Media" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')"
fig source_files_day1 "$(find "$CHATS" -type f | wc -l)"

# ---------------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/incremental-$PRESET-$(date +%Y-%m-%d).json"
python3 "$ROOT/bench/report.py" --figures "$FIG" --logs "$LOGS" --pages "$PAGES_JSON" \
    --out "$OUT" --date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "raw figures: $OUT" >&2
[ -n "$WORKDIR" ] && echo "work folder kept: $WORK" >&2
exit 0
