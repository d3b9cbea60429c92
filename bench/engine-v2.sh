#!/usr/bin/env bash
# Engine-v2 benchmarks at real users' scale: a 4.5 GB database, a year of daily backups, and
# backup/restore over a high-latency S3.
#
#   bench/engine-v2.sh large-db [--db-bytes N] [--media-bytes N]
#   bench/engine-v2.sh year [--days N] [--max-minutes M] [--preset benchmark|small]
#                           [--same-source-days N]
#   bench/engine-v2.sh rtt [--snapshots 30] [--delay-ms 50] [--preset small|benchmark]
#   common: [--workdir DIR] (kept afterwards; default /work/bench-tmp/engine-v2-<cmd>, removed)
#           [--keep] [--no-build]
#
# See bench/README.md ("engine-v2.sh"). Figures go to bench/results/engine-v2-<date>.json
# (one section per sub-command, bench/engine_v2_report.py prints the table); a run replaces its
# own section. Performance is reported, never asserted: the
# exit status is non-zero only when a tool fails or a restored database does not match.
set -euo pipefail

CMD=${1:-}
[ -n "$CMD" ] && shift || true
case "$CMD" in large-db|year|rtt) ;; *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;; esac

WORKDIR= KEEP=no BUILD=yes
DB_BYTES=4600000000 MEDIA_BYTES=300000000
DAYS=365 MAX_MINUTES=0 PRESET= SAME_SOURCE_DAYS=5
SNAPSHOTS=30 DELAY_MS=50
while [ $# -gt 0 ]; do
    case "$1" in
        --workdir) WORKDIR=${2:?}; shift 2 ;;
        --keep) KEEP=yes; shift ;;
        --no-build) BUILD=no; shift ;;
        --db-bytes) DB_BYTES=${2:?}; shift 2 ;;
        --media-bytes) MEDIA_BYTES=${2:?}; shift 2 ;;
        --days) DAYS=${2:?}; shift 2 ;;
        --max-minutes) MAX_MINUTES=${2:?}; shift 2 ;;
        --same-source-days) SAME_SOURCE_DAYS=${2:?}; shift 2 ;;
        --preset) PRESET=${2:?}; shift 2 ;;
        --snapshots) SNAPSHOTS=${2:?}; shift 2 ;;
        --delay-ms) DELAY_MS=${2:?}; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ -n "$PRESET" ] || { [ "$CMD" = rtt ] && PRESET=small || PRESET=benchmark; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR="$ROOT/bench/results"
DATE=$(date +%Y-%m-%d)
die() { echo "engine-v2.sh: $*" >&2; exit 1; }
log() { printf '\n== %s  (%s)\n' "$*" "$(date +%T)" >&2; }

WORK=${WORKDIR:-/work/bench-tmp/engine-v2-$CMD}
mkdir -p "$WORK"
[ -z "$(ls -A "$WORK")" ] || die "work folder $WORK is not empty"
WORK=$(cd "$WORK" && pwd)
CLEANUP=()
cleanup() {
    local pid
    for pid in "${CLEANUP[@]}"; do kill "$pid" 2> /dev/null || true; done
    if [ "$KEEP" = no ] && [ -z "$WORKDIR" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
LOGS="$WORK/logs"; mkdir -p "$LOGS"
FIG="$WORK/figures.env"; : > "$FIG"
fig() { printf '%s=%s\n' "$1" "$2" >> "$FIG"; }
dusb() { du -sb "$1" | cut -f1; }
secs() { python3 -c "print(round($2 - $1, 3))"; }

# Runs a command under /usr/bin/time -v: stdout to $LOGS/<name>.log, stderr to .err; records
# <name>_s (wall), <name>_cpu_s (user+sys) and <name>_rss_mb (peak resident set, MB = 10^6 B).
measured() {
    local name=$1; shift
    local t0=$EPOCHREALTIME rc=0
    /usr/bin/time -v -o "$LOGS/$name.time" "$@" > "$LOGS/$name.log" 2> "$LOGS/$name.err" || rc=$?
    local t1=$EPOCHREALTIME
    if [ $rc -ne 0 ]; then
        echo "---- $name failed ($rc): $*" >&2
        tail -n 30 "$LOGS/$name.log" "$LOGS/$name.err" "$LOGS/$name.time" >&2
        exit 1
    fi
    fig "${name}_s" "$(secs "$t0" "$t1")"
    fig "${name}_cpu_s" "$(awk -F': ' '/User time|System time/ {s+=$2} END {printf "%.2f", s}' "$LOGS/$name.time")"
    fig "${name}_rss_mb" "$(awk -F': ' '/Maximum resident/ {printf "%.1f", $2*1024/1e6}' "$LOGS/$name.time")"
}
json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$@"; }

# ---------------------------------------------------------------------------------------------
cd "$ROOT"
if [ "$BUILD" = yes ]; then
    log "building release binaries"
    nice -n 10 cargo build --release --quiet -p chatvault-cli --bin chatvault
fi
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
CV="$TARGET/release/chatvault"
[ -x "$CV" ] || die "$CV not found"
REPO_STATS="$TARGET/release/repo-stats"
if [ "$BUILD" = yes ] && ! nice -n 10 cargo build --release --quiet \
        --manifest-path "$ROOT/bench/repo-stats/Cargo.toml" --target-dir "$TARGET"; then
    echo "bench/repo-stats did not build: no tree/list split" >&2
fi
[ -x "$REPO_STATS" ] || REPO_STATS=
unset CHATVAULT_HOME CHATVAULT_REPO CHATVAULT_KEY
fig benchmark "$CMD"
fig chatvault_version "$("$CV" --version | head -n1)"
fig commit "$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo '+dirty')"
fig host_cpus "$(nproc)"
fig host_load_start "$(cut -d' ' -f1 /proc/loadavg)"
fig date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
HOME1="$WORK/home-device1"; HOME2="$WORK/home-device2"
CHATS="$WORK/chats"
cv() { nice -n 10 "$CV" --quiet "$@"; }   # (nice: the machine is shared)
CVN=(nice -n 10 "$CV" --quiet)

# =============================================================================================
large_db() {
    local REPO="$WORK/repo" DB="$CHATS/Databases/msgstore.db"
    mkdir -p "$CHATS/Databases" "$CHATS/Media"
    log "generating a ${DB_BYTES}-byte database and ${MEDIA_BYTES} B of media"
    measured gen_db nice -n 10 python3 "$ROOT/bench/gen_large_db.py" create "$DB" --bytes "$DB_BYTES"
    measured gen_media nice -n 10 python3 "$ROOT/bench/gen_large_db.py" media "$CHATS/Media" --bytes "$MEDIA_BYTES"
    fig db_bytes "$(stat -c %s "$DB")"
    fig db_pages "$(sqlite3 "$DB" 'PRAGMA page_count')"
    fig db_rows "$(head -n1 "$LOGS/gen_db.log" | cut -d' ' -f1)"
    fig media_bytes "$(dusb "$CHATS/Media")"
    fig source_bytes "$(dusb "$CHATS")"

    log "source digest of the messages table"
    measured digest_source python3 "$ROOT/bench/gen_large_db.py" digest "$DB"

    log "init + initial backup"
    "$CV" --home "$HOME1" init --repo "$REPO" --key --key-out "$WORK/backup.key" > "$LOGS/init.log" 2>&1 \
        || { cat "$LOGS/init.log" >&2; die "init failed"; }
    measured backup0 "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json
    fig backup0_uploaded_bytes "$(json_get "$LOGS/backup0.log" snapshot.summary.uploaded_bytes)"
    fig backup0_new_blobs "$(json_get "$LOGS/backup0.log" snapshot.summary.new_blobs)"
    fig repo0_bytes "$(dusb "$REPO")"

    log "restore latest on a new device home (key from 'key show')"
    local KEY; KEY=$("$CV" --home "$HOME1" key show --yes | tr -cd '0-9a-fA-F')
    [ ${#KEY} -eq 64 ] || die "key show did not print a 64-digit key"
    CHATVAULT_KEY=$KEY measured restore "${CVN[@]}" --home "$HOME2" --repo "$REPO" restore latest --target "$WORK/restored" --json
    local RDB; RDB=$(find "$WORK/restored" -name msgstore.db | head -n1)
    [ -n "$RDB" ] || die "restored msgstore.db not found"
    fig restored_media_bytes "$(find "$WORK/restored" -path '*Media*' -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')"
    log "integrity_check + digest of the restored database"
    fig restored_integrity "$(sqlite3 "$RDB" 'PRAGMA integrity_check' | head -n1)"
    measured digest_restored python3 "$ROOT/bench/gen_large_db.py" digest "$RDB"
    if cmp -s "$LOGS/digest_source.log" "$LOGS/digest_restored.log"; then fig restored_digest_equal true
    else fig restored_digest_equal false; echo "restored messages differ" >&2; fi
    fig restored_rows "$(cut -d' ' -f1 "$LOGS/digest_restored.log")"
    rm -rf "$WORK/restored"

    log "one day: 2 000 messages + 50 read receipts"
    measured gen_day nice -n 10 python3 "$ROOT/bench/gen_large_db.py" day "$DB" --messages 2000 --receipts 50
    fig db_pages_day1 "$(sqlite3 "$DB" 'PRAGMA page_count')"
    measured backup1 "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json
    fig backup1_uploaded_bytes "$(json_get "$LOGS/backup1.log" snapshot.summary.uploaded_bytes)"
    fig backup1_new_bytes "$(json_get "$LOGS/backup1.log" snapshot.summary.new_bytes)"
    fig backup1_new_blobs "$(json_get "$LOGS/backup1.log" snapshot.summary.new_blobs)"
    fig repo1_bytes "$(dusb "$REPO")"

    log "a backup with nothing changed"
    measured backup2 "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json
    fig backup2_uploaded_bytes "$(json_get "$LOGS/backup2.log" snapshot.summary.uploaded_bytes)"
    fig backup2_files_read "$(json_get "$LOGS/backup2.log" snapshot.summary.files_read)"
    fig repo2_bytes "$(dusb "$REPO")"
    if [ -n "$REPO_STATS" ]; then
        measured repo_stats "$REPO_STATS" "$REPO" "$WORK/backup.key" || true
    fi
    log "check (metadata only)"
    measured check "${CVN[@]}" --home "$HOME1" check
}

# =============================================================================================
year() {
    local REPO="$WORK/repo" T_START=$EPOCHREALTIME day
    log "generating the $PRESET sample"
    fig preset "$PRESET"
    measured sample_generate nice -n 10 "$CV" sample "$CHATS" --preset "$PRESET"
    fig source_bytes_day0 "$(dusb "$CHATS")"
    "$CV" --home "$HOME1" init --repo "$REPO" --key --key-out "$WORK/backup.key" > "$LOGS/init.log" 2>&1 \
        || { cat "$LOGS/init.log" >&2; die "init failed"; }
    measured backup_day0 "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json
    fig repo_day0_bytes "$(dusb "$REPO")"
    local DAYS_TSV="$WORK/days.tsv"
    printf 'day\tsample_s\tbackup_s\tbackup_cpu_s\tbackup_rss_mb\tgrowth\tuploaded\tnew_bytes\tnew_blobs\tindex_added\tsnapshot_added\tdata_added\tsource_bytes\n' > "$DAYS_TSV"
    sizes() { for d in index snapshots data; do find "$REPO/$d" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f ", s+0}'; done; }
    local done_days=0
    for day in $(seq 1 "$DAYS"); do
        if [ "$MAX_MINUTES" != 0 ] && python3 -c "import sys; sys.exit(0 if $EPOCHREALTIME - $T_START > $MAX_MINUTES * 60 else 1)"; then
            echo "time limit of $MAX_MINUTES min reached after $done_days days" >&2
            break
        fi
        local t0=$EPOCHREALTIME
        nice -n 10 "$CV" sample "$CHATS" --preset "$PRESET" --next-day "$day" > "$LOGS/sample.log" 2>&1 \
            || { cat "$LOGS/sample.log" >&2; die "sample --next-day $day failed"; }
        local t1=$EPOCHREALTIME
        local before; before=$(dusb "$REPO"); read -r i0 s0 d0 <<< "$(sizes)"
        : > "$FIG.day"
        FIG="$FIG.day" measured backup_day "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json
        local after; after=$(dusb "$REPO"); read -r i1 s1 d1 <<< "$(sizes)"
        # shellcheck disable=SC1090
        . <(sed 's/^/local /' "$FIG.day")
        python3 - "$LOGS/backup_day.log" <<EOF >> "$DAYS_TSV"
import json, sys
s = json.load(open(sys.argv[1]))["snapshot"]["summary"]
print("\t".join(map(str, [$day, $(secs "$t0" "$t1"), $backup_day_s, $backup_day_cpu_s, $backup_day_rss_mb,
      $after - $before, s["uploaded_bytes"], s["new_bytes"], s["new_blobs"],
      $i1 - $i0, $s1 - $s0, $d1 - $d0, $(dusb "$CHATS")])))
EOF
        done_days=$day
        if [ $((day % 10)) -eq 0 ] || [ "$day" -le 3 ]; then
            tail -n1 "$DAYS_TSV" | awk -F'\t' '{printf "day %d: backup %.2f s (cpu %.2f), growth %d B\n", $1, $3, $4, $6}' >&2
        fi
    done
    fig days_run "$done_days"
    fig days_requested "$DAYS"
    fig repo_final_bytes "$(dusb "$REPO")"
    fig source_final_bytes "$(dusb "$CHATS")"
    cp "$DAYS_TSV" "$LOGS/days.tsv"
    if [ -n "$REPO_STATS" ]; then
        log "repo-stats (trees and content lists added by each snapshot)"
        measured repo_stats "$REPO_STATS" "$REPO" "$WORK/backup.key" || true
    fi
    log "cold 'snapshots' on a new device home"
    local KEY; KEY=$("$CV" --home "$HOME1" key show --yes | tr -cd '0-9a-fA-F')
    sync; echo 1 > /proc/sys/vm/drop_caches 2> /dev/null && fig snapshots_cold_page_cache dropped || fig snapshots_cold_page_cache warm
    CHATVAULT_KEY=$KEY measured snapshots_cold "${CVN[@]}" --home "$HOME2" --repo "$REPO" snapshots --json
    fig snapshots_listed "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$LOGS/snapshots_cold.log")"
    CHATVAULT_KEY=$KEY measured snapshots_again "${CVN[@]}" --home "$HOME2" --repo "$REPO" snapshots --json
    measured snapshots_device "${CVN[@]}" --home "$HOME1" snapshots --json
    [ "$SAME_SOURCE_DAYS" != 0 ] && same_source "$done_days"
    return 0
}

# History against source: the last day's folder backed up into a new repository, then the same
# simulated days backed up in both repositories, alternating which goes first. The year's
# backups cost more than day 2's partly because its folder grew (files, database); this
# separates what history costs from what the source costs. A replayed first week (a new sample's
# days 2, 3, …) is backed up in the same rounds: the floor's ratio under one machine state.
same_source() {
    local last=$1 FRESH="$WORK/fresh" FHOME="$WORK/home-fresh" n first
    log "history against source: day $last's folder in a new repository, then $SAME_SOURCE_DAYS days in both"
    rm -rf "$FRESH" "$FHOME"; mkdir -p "$FRESH/chats"
    # Databases copied (a simulated day rewrites them in place); the rest hard-linked (a day
    # only adds files).
    local d
    for d in "$CHATS"/*; do
        if [ "$(basename "$d")" = Databases ]; then cp -a "$d" "$FRESH/chats/"; else cp -al "$d" "$FRESH/chats/"; fi
    done
    "$CV" --home "$FHOME" init --repo "$FRESH/repo" --key > "$LOGS/fresh-init.log" 2>&1 \
        || { cat "$LOGS/fresh-init.log" >&2; die "init of the same-source repository failed"; }
    measured same_source_initial "${CVN[@]}" --home "$FHOME" backup "$FRESH/chats" --json
    # Linking changed every linked file's ctime: the year's next backup reads them all once.
    measured same_source_relinked "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json
    # The first week replayed beside them: a new sample (day 0 and day 1 backed up), whose days
    # 2, 3, … are backed up in the same rounds. Day 2 at the start of the year ran on another
    # machine state (an empty page cache, free memory the hypervisor had taken back); this is
    # the floor's comparison under the same conditions.
    local REPLAY="$WORK/replay" RHOME="$WORK/home-replay" k
    rm -rf "$REPLAY" "$RHOME"; mkdir -p "$REPLAY"
    nice -n 10 "$CV" sample "$REPLAY/chats" --preset "$PRESET" > "$LOGS/sample.log" 2>&1 \
        || { cat "$LOGS/sample.log" >&2; die "sample for the replayed week failed"; }
    "$CV" --home "$RHOME" init --repo "$REPLAY/repo" --key > "$LOGS/replay-init.log" 2>&1 \
        || { cat "$LOGS/replay-init.log" >&2; die "init of the replay repository failed"; }
    "${CVN[@]}" --home "$RHOME" backup "$REPLAY/chats" --json > "$LOGS/replay-day0.log" 2>&1 \
        || { cat "$LOGS/replay-day0.log" >&2; die "replay day 0 backup failed"; }
    nice -n 10 "$CV" sample "$REPLAY/chats" --preset "$PRESET" --next-day 1 > "$LOGS/sample.log" 2>&1 \
        || { cat "$LOGS/sample.log" >&2; die "replay day 1 failed"; }
    "${CVN[@]}" --home "$RHOME" backup "$REPLAY/chats" --json > "$LOGS/replay-day1.log" 2>&1 \
        || { cat "$LOGS/replay-day1.log" >&2; die "replay day 1 backup failed"; }
    local TSV="$WORK/same-source.tsv"
    printf 'day\tyear_s\tyear_cpu_s\tfresh_s\tfresh_cpu_s\treplay_day\treplay_s\treplay_cpu_s\n' > "$TSV"
    for n in $(seq $((last + 1)) $((last + SAME_SOURCE_DAYS))); do
        k=$((n - last + 1))
        for d in "$CHATS" "$FRESH/chats"; do
            nice -n 10 "$CV" sample "$d" --preset "$PRESET" --next-day "$n" > "$LOGS/sample.log" 2>&1 \
                || { cat "$LOGS/sample.log" >&2; die "sample --next-day $n failed in $d"; }
        done
        nice -n 10 "$CV" sample "$REPLAY/chats" --preset "$PRESET" --next-day "$k" > "$LOGS/sample.log" 2>&1 \
            || { cat "$LOGS/sample.log" >&2; die "sample --next-day $k failed in $REPLAY"; }
        : > "$FIG.day"
        # Which of the three goes first rotates from day to day.
        for first in $((n % 3)) $(((n + 1) % 3)) $(((n + 2) % 3)); do
            sync
            case "$first" in
                0) FIG="$FIG.day" measured same_year "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json ;;
                1) FIG="$FIG.day" measured same_fresh "${CVN[@]}" --home "$FHOME" backup "$FRESH/chats" --json ;;
                2) FIG="$FIG.day" measured same_replay "${CVN[@]}" --home "$RHOME" backup "$REPLAY/chats" --json ;;
            esac
        done
        # shellcheck disable=SC1090
        . <(sed 's/^/local /' "$FIG.day")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$same_year_s" "$same_year_cpu_s" "$same_fresh_s" \
            "$same_fresh_cpu_s" "$k" "$same_replay_s" "$same_replay_cpu_s" >> "$TSV"
    done
    rm -rf "$REPLAY"
    cp "$TSV" "$LOGS/same-source.tsv"
    fig same_source_files "$(find "$FRESH/chats" -type f | wc -l)"
}

# =============================================================================================
rtt() {
    local S3DIR="$WORK/s3" PORT=${RTT_S3_PORT:-9811} PPORT=${RTT_PROXY_PORT:-9812} P0PORT=${RTT_PROXY0_PORT:-9813}
    log "starting moto (127.0.0.1:$PORT) and two proxies (+${DELAY_MS} ms on :$PPORT, +0 ms on :$P0PORT)"
    local VENV_DIR=${RTT_MOTO_DIR:-/work/bench-tmp/moto}
    eval "$(CHATVAULT_S3_PORT=$PORT CHATVAULT_S3_DIR=$VENV_DIR bash "$ROOT/scripts/ci-s3.sh")"
    CLEANUP+=("$(cat "$VENV_DIR/moto.pid")")
    local DIRECT=$AWS_ENDPOINT_URL
    python3 "$ROOT/bench/delay_proxy.py" --listen "$PPORT" --upstream "$PORT" --delay-ms "$DELAY_MS" \
        --log "$WORK/requests.log" > "$LOGS/proxy.log" 2>&1 &
    CLEANUP+=($!)
    python3 "$ROOT/bench/delay_proxy.py" --listen "$P0PORT" --upstream "$PORT" --delay-ms 0 \
        --log "$WORK/requests0.log" > "$LOGS/proxy0.log" 2>&1 &
    CLEANUP+=($!)
    sleep 1
    : > "$WORK/requests.log"; : > "$WORK/requests0.log"
    local URL="s3://$CHATVAULT_TEST_S3_BUCKET/engine-v2-rtt-$$"
    fig preset "$PRESET"; fig delay_ms "$DELAY_MS"
    measured sample_generate nice -n 10 "$CV" sample "$CHATS" --preset "$PRESET"
    fig source_bytes_day0 "$(dusb "$CHATS")"
    AWS_ENDPOINT_URL=$DIRECT "$CV" --home "$HOME1" init --repo "$URL" --key --key-out "$WORK/backup.key" \
        > "$LOGS/init.log" 2>&1 || { cat "$LOGS/init.log" >&2; die "init failed"; }
    local KEY; KEY=$("$CV" --home "$HOME1" key show --yes | tr -cd '0-9a-fA-F')
    count() { wc -l < "$1"; }
    # through(proxy-port name cmd...): runs cmd with the endpoint at the proxy, records requests.
    through() {
        local port=$1 name=$2 logf=$WORK/requests.log; shift 2
        [ "$port" = "$P0PORT" ] && logf=$WORK/requests0.log
        local n0; n0=$(count "$logf")
        AWS_ENDPOINT_URL="http://127.0.0.1:$port" measured "$name" "$@"
        local n1; n1=$(count "$logf")
        fig "${name}_requests" $((n1 - n0))
        tail -n $((n1 - n0)) "$logf" > "$LOGS/$name.requests"
        awk '{print $2}' "$LOGS/$name.requests" | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}' > "$LOGS/$name.methods"
        # Sequential rounds: a request that reaches the proxy >= 0.9 x delay after the previous
        # one started waited for an earlier answer (16 parallel readers start within a few ms).
        fig "${name}_rounds" "$(awk -v d="$DELAY_MS" 'NR==1 {n=1} NR>1 && ($1-p)*1000 >= 0.9*d {n++} {p=$1} END {print n+0}' "$LOGS/$name.requests")"
        fig "${name}_methods" "\"$(cat "$LOGS/$name.methods")\""
    }
    log "initial backup (direct, no delay)"
    through "$P0PORT" backup_initial "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json
    # Before the backup of day k the repository holds k snapshots.
    local k
    for k in $(seq 1 "$SNAPSHOTS"); do
        nice -n 10 "$CV" sample "$CHATS" --preset "$PRESET" --next-day "$k" > "$LOGS/sample.log" 2>&1 \
            || { cat "$LOGS/sample.log" >&2; die "sample --next-day $k failed"; }
        case " 1 10 30 $SNAPSHOTS " in
            *" $k "*)
                log "$k snapshots: incremental backup via the +${DELAY_MS} ms proxy, then restore on a new home"
                through "$PPORT" "backup_at$k" "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json
                fig "backup_at${k}_uploaded_bytes" "$(json_get "$LOGS/backup_at$k.log" snapshot.summary.uploaded_bytes)"
                local h="$WORK/home-r$k" t="$WORK/restored-$k"
                rm -rf "$h" "$t"
                CHATVAULT_KEY=$KEY through "$PPORT" "restore_at$((k + 1))" "${CVN[@]}" --home "$h" --repo "$URL" restore latest --target "$t"
                rm -rf "$h" "$t"
                CHATVAULT_KEY=$KEY through "$P0PORT" "restore0_at$((k + 1))" "${CVN[@]}" --home "$h" --repo "$URL" restore latest --target "$t"
                rm -rf "$h" "$t"
                CHATVAULT_KEY=$KEY through "$PPORT" "snapshots_at$((k + 1))" "${CVN[@]}" --home "$h" --repo "$URL" snapshots --json
                rm -rf "$h"
                ;;
            *)
                through "$P0PORT" "backup0_at$k" "${CVN[@]}" --home "$HOME1" backup "$CHATS" --json
                ;;
        esac
    done
    fig snapshots_made "$SNAPSHOTS"
}

case "$CMD" in
    large-db) large_db ;;
    year) year ;;
    rtt) rtt ;;
esac
fig host_load_end "$(cut -d' ' -f1 /proc/loadavg)"
mkdir -p "$RESULTS_DIR" "$WORK/logs"
OUT="$RESULTS_DIR/engine-v2-$DATE.json"
python3 "$ROOT/bench/engine_v2_report.py" "$CMD" --figures "$FIG" --logs "$LOGS" --out "$OUT"
if [ "$KEEP" = yes ] || [ -n "$WORKDIR" ]; then echo "work folder kept: $WORK" >&2; fi
grep -q '^restored_digest_equal=false' "$FIG" && die "the restored database differs from the source"
exit 0
