#!/usr/bin/env bash
# Incremental-backup benchmark: chatvault vs restic (and borg when installed), same data, same run.
#
#   bench/incremental.sh [--preset benchmark|small] [--workdir DIR] [--seed N] [--no-borg]
#                        [--no-build] [--target-dir DIR]
#
# See bench/README.md for what is measured and how to read the output. Not part of the test
# suite: it only reports figures (and whether the issue's floors are met); it exits non-zero
# only when a tool fails.
set -euo pipefail

PRESET=benchmark
WORKDIR=
SEED=1
USE_BORG=auto
BUILD=yes
TARGET_DIR=

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
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
        --no-build) BUILD=no; shift ;;
        --target-dir) TARGET_DIR=${2:?}; shift 2 ;;
        --target-dir=*) TARGET_DIR=${1#*=}; shift ;;
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

# Runs a command under GNU time, its stdout to $LOGS/<name>.log, its stderr to $LOGS/<name>.err
# and time's figures to $LOGS/<name>.time; records <name>_s (wall seconds), <name>_cpu_s (user +
# sys seconds, the command and the children it waited for) and <name>_rss_mb (peak resident set
# of the largest process, MiB = 2^20 B).
timed() {
    local name=$1; shift
    local t0=$EPOCHREALTIME rc=0
    /usr/bin/time -f '%e %U %S %M' -o "$LOGS/$name.time" "$@" \
        > "$LOGS/$name.log" 2> "$LOGS/$name.err" || rc=$?
    local t1=$EPOCHREALTIME
    if [ $rc -ne 0 ]; then
        echo "---- $name failed ($rc): $*" >&2
        tail -n 30 "$LOGS/$name.log" "$LOGS/$name.err" "$LOGS/$name.time" >&2
        exit 1
    fi
    local _e user sys rss_kib
    read -r _e user sys rss_kib < <(tail -n 1 "$LOGS/$name.time")
    fig "${name}_s" "$(python3 -c "print(round($t1 - $t0, 3))")"
    fig "${name}_cpu_s" "$(python3 -c "print(round($user + $sys, 2))")"
    fig "${name}_rss_mb" "$(python3 -c "print(round($rss_kib / 1024, 1))")"
}
# Before each timed backup: the earlier steps' writes are flushed (`sync`), so that no tool pays
# for the writeback of the sample generation or of another tool's repository (chatvault syncs
# each pack it writes, and would wait for that), and the folder is read once, so the page cache
# is warm for every tool.
settle() { sync; find "$CHATS" -type f -exec cat {} + > /dev/null; }
# Before each timed restore and check (they read only the repository, which is still in the page
# cache): the previous step's writes are flushed, so that no tool pays for another's writeback
# (chatvault's restore does not fsync media files; a deleted restore folder is written back too).
flush() { sync; }
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
cd "$ROOT"
if [ -n "$TARGET_DIR" ]; then
    TARGET=$(cd "$TARGET_DIR" && pwd)
else
    TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    # --no-build in a git worktree with no binaries of its own: the main checkout's target/.
    if [ "$BUILD" = no ] && [ ! -x "$TARGET/release/chatvault" ] \
            && common=$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2> /dev/null) \
            && [ -x "$(dirname "$common")/target/release/chatvault" ]; then
        TARGET="$(dirname "$common")/target"
    fi
fi
if [ "$BUILD" = yes ]; then
    log "building release binaries"
    # (two invocations: with --example, cargo builds only the named targets, not the binary)
    cargo build --release --quiet -p chatvault-cli --bin chatvault --target-dir "$TARGET"
    cargo build --release --quiet -p chatvault-repo --example page_diff --target-dir "$TARGET"
fi
CV="$TARGET/release/chatvault"
PAGE_DIFF="$TARGET/release/examples/page_diff"
[ -x "$CV" ] || die "$CV not found"
if [ ! -x "$PAGE_DIFF" ]; then
    [ "$BUILD" = no ] || die "$PAGE_DIFF not found"
    echo "--no-build: $PAGE_DIFF not found: no changed-page reference figures" >&2
    PAGE_DIFF=
fi
# Byte breakdown of chatvault's repository (decrypts with the key; a separate small crate, since
# it is not part of the product). Optional: without it the figures are the same, minus the split.
REPO_STATS="$TARGET/release/repo-stats"
if [ "$BUILD" = yes ] && ! cargo build --release --quiet \
        --manifest-path "$ROOT/bench/repo-stats/Cargo.toml" --target-dir "$TARGET"; then
    echo "bench/repo-stats did not build: no byte breakdown of the chatvault repository" >&2
fi
if [ ! -x "$REPO_STATS" ]; then
    [ "$BUILD" = no ] && echo "--no-build: $REPO_STATS not found: no byte breakdown of the chatvault repository" >&2
    REPO_STATS=
fi
log "binaries: $TARGET/release"

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
fig binaries "$TARGET/release"
fig chatvault_binary_mtime "$(date -u -r "$CV" +%Y-%m-%dT%H:%M:%SZ)"
# The commit of the checkout the binaries were built from (with --no-build, maybe not this one).
SRC=$ROOT
[ "$(dirname "$TARGET")" != "$ROOT" ] && git -C "$(dirname "$TARGET")" rev-parse --git-dir > /dev/null 2>&1 \
    && SRC=$(dirname "$TARGET")
if git -C "$SRC" rev-parse --git-dir > /dev/null 2>&1; then
    fig commit "$(git -C "$SRC" rev-parse --short HEAD)$(git -C "$SRC" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo '+dirty')"
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

# Without page_diff: opens a database read-only once, so that its empty `-wal` and `-shm` exist as
# page_diff (or chatvault's consistent copy) leaves them (a read-write connection would delete
# them when it closes).
open_ro() {
    python3 -c 'import sqlite3,sys; c=sqlite3.connect("file:"+sys.argv[1]+"?mode=ro", uri=True); c.execute("select count(*) from sqlite_master").fetchall(); c.close()' "$1"
}

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
    if [ -n "$PAGE_DIFF" ]; then
        mkdir -p "$BEFORE/$(dirname "$db")"
        "$PAGE_DIFF" --copy "$CHATS/$db" "$BEFORE/$db"
    else
        open_ro "$CHATS/$db"
    fi
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
if [ -z "$PAGE_DIFF" ]; then
    for db in $(cd "$CHATS" && find . -type f -name '*.db' | sort); do open_ro "$CHATS/$db"; done
fi
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
flush
timed chatvault_restore "$CV" --home "$CV_HOME" --quiet restore latest --target "$WORK/restore-chatvault"
check_restore chatvault "$WORK/restore-chatvault"

flush
timed restic_restore restic -r "$RESTIC_REPO" restore latest --target "$WORK/restore-restic"
check_restore restic "$WORK/restore-restic"

if [ "$USE_BORG" = yes ]; then
    mkdir -p "$WORK/restore-borg"
    flush
    timed borg_restore sh -c 'cd "$1" && borg extract "$2::day1"' _ "$WORK/restore-borg" "$BORG_REPO_DIR"
    check_restore borg "$WORK/restore-borg"
fi
# Restore folders are deleted only after every tool's restore: on an ext4 without a journal
# (these machines' disks), creating files within a minute of deleting thousands costs each
# creation a scan past the recently deleted inodes, and the tool that ran right after a deletion
# would pay for it (restic did, before).
rm -rf "$WORK/restore-chatvault" "$WORK/restore-restic" "$WORK/restore-borg"

# ---------------------------------------------------------------------------------------------
log "checks with every byte read (check --read-data, restic check --read-data, borg check --verify-data)"
flush
timed chatvault_check "$CV" --home "$CV_HOME" --quiet check --read-data
flush
timed restic_check restic -r "$RESTIC_REPO" check --read-data
if [ "$USE_BORG" = yes ]; then
    flush
    timed borg_check borg check --verify-data "$BORG_REPO_DIR"
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
