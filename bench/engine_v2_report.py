#!/usr/bin/env python3
"""Turns the raw figures of bench/engine-v2.sh into JSON and prints a table.

    engine_v2_report.py large-db|year|rtt --figures W/figures.env --logs W/logs --out FILE

FILE (bench/results/engine-v2-<date>.json) holds one section per sub-command; a run replaces its
own section and keeps the others. Can be re-run on a kept work folder.
"""
import argparse
import json
import os
import re
import statistics

RSS_FLOOR_MB = 300
DAY_FLOOR_BYTES = 2_000_000
YEAR_TIME_FLOOR = 1.25
META_FLOOR = 0.10


def load_figures(path):
    figs = {}
    for line in open(path):
        line = line.rstrip("\n")
        if "=" not in line:
            continue
        k, v = line.split("=", 1)
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        if isinstance(v, str) and v.startswith('"') and v.endswith('"'):
            v = v[1:-1]
        figs[k] = v
    return figs


def mb(b):
    return f"{b / 1e6:,.2f} MB"


def table(rows):
    w = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        print("| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (x + 2) for x in w) + "|")


def large_db(f, logs):
    d = dict(f)
    d["day_growth_bytes"] = f["repo1_bytes"] - f["repo0_bytes"]
    d["nochange_growth_bytes"] = f["repo2_bytes"] - f["repo1_bytes"]
    d["meets_floor_backup_rss"] = f["backup0_rss_mb"] <= RSS_FLOOR_MB
    d["meets_floor_restore_rss"] = f["restore_rss_mb"] <= RSS_FLOOR_MB
    d["meets_floor_day"] = d["day_growth_bytes"] <= DAY_FLOOR_BYTES
    stats = os.path.join(logs, "repo_stats.log")
    if os.path.exists(stats) and os.path.getsize(stats):
        rs = json.load(open(stats))
        d["repo_stats"] = {k: rs[k] for k in ("sqlite_pages", "other_data", "trees", "lists",
                                              "packs", "index_objects", "snapshot_objects")
                           if k in rs}
        d["repo_stats_per_snapshot"] = rs.get("snapshots")
    print(f"\nlarge-db: {f['db_bytes'] / 1e9:.2f} GB database ({f['db_pages']:,} pages, "
          f"{f['db_rows']:,} rows) + {mb(f['media_bytes'])} media; generated in "
          f"{f['gen_db_s']:.0f} s")
    table([
        ["step", "wall", "cpu", "peak RSS", "uploaded", "repo growth", "floor"],
        ["initial backup", f"{f['backup0_s']:.1f} s", f"{f['backup0_cpu_s']:.1f} s",
         f"{f['backup0_rss_mb']:.0f} MB", mb(f["backup0_uploaded_bytes"]), mb(f["repo0_bytes"]),
         f"RSS ≤ {RSS_FLOOR_MB} MB: {'met' if d['meets_floor_backup_rss'] else 'MISSED'}"],
        ["restore (new home)", f"{f['restore_s']:.1f} s", f"{f['restore_cpu_s']:.1f} s",
         f"{f['restore_rss_mb']:.0f} MB", "", "",
         f"RSS ≤ {RSS_FLOOR_MB} MB: {'met' if d['meets_floor_restore_rss'] else 'MISSED'}"],
        ["day (+2000 msgs, 50 receipts)", f"{f['backup1_s']:.1f} s", f"{f['backup1_cpu_s']:.1f} s",
         f"{f['backup1_rss_mb']:.0f} MB", f"{f['backup1_uploaded_bytes']:,} B",
         f"{d['day_growth_bytes']:,} B",
         f"≤ 2 MB: {'met' if d['meets_floor_day'] else 'MISSED'}"],
        ["nothing changed", f"{f['backup2_s']:.1f} s", f"{f['backup2_cpu_s']:.1f} s",
         f"{f['backup2_rss_mb']:.0f} MB", f"{f['backup2_uploaded_bytes']:,} B",
         f"{d['nochange_growth_bytes']:,} B", ""],
    ])
    print(f"restored: integrity_check={f['restored_integrity']}, rows={f['restored_rows']:,}, "
          f"messages digest equal={f['restored_digest_equal']}")
    return d


def year(f, logs):
    rows = []
    with open(os.path.join(logs, "days.tsv")) as fh:
        head = fh.readline().rstrip("\n").split("\t")
        for line in fh:
            vals = [float(x) if "." in x else int(x) for x in line.rstrip("\n").split("\t")]
            rows.append(dict(zip(head, vals)))
    stats = os.path.join(logs, "repo_stats.log")
    per_snap = []
    if os.path.exists(stats) and os.path.getsize(stats):
        rs = json.load(open(stats))
        per_snap = sorted(rs["snapshots"], key=lambda s: (s.get("seq", 0), s["time"]))
    for r in rows:
        s = per_snap[r["day"]] if len(per_snap) > r["day"] else None
        r["trees_added"] = s["new_trees"]["sealed"] if s else None
        r["lists_added"] = s["new_lists"]["sealed"] if s and "new_lists" in s else None
        if s:
            r["metadata"] = (r["index_added"] + r["snapshot_added"] + r["trees_added"]
                             + (r["lists_added"] or 0))
            r["changed_data"] = r["growth"] - r["metadata"]
            r["metadata_ratio"] = r["metadata"] / r["changed_data"] if r["changed_data"] else None
    d = dict(f)
    d["days"] = rows
    n = len(rows)
    if n >= 2:
        day2, last = rows[1], rows[-1]
        d["day2_backup_s"], d["last_day_backup_s"] = day2["backup_s"], last["backup_s"]
        d["last_over_day2_wall"] = last["backup_s"] / day2["backup_s"]
        d["last_over_day2_cpu"] = last["backup_cpu_s"] / day2["backup_cpu_s"]
        k = min(7, n // 2)
        first = statistics.median(r["backup_s"] for r in rows[1:1 + k])
        final = statistics.median(r["backup_s"] for r in rows[-k:])
        d["median_first_week_backup_s"], d["median_last_week_backup_s"] = first, final
        d["last_week_over_first_week_wall"] = final / first
        fc = statistics.median(r["backup_cpu_s"] for r in rows[1:1 + k])
        lc = statistics.median(r["backup_cpu_s"] for r in rows[-k:])
        d["last_week_over_first_week_cpu"] = lc / fc
        d["meets_floor_time"] = d["last_week_over_first_week_cpu"] <= YEAR_TIME_FLOOR
    ratios = [r["metadata_ratio"] for r in rows if r.get("metadata_ratio") is not None]
    if ratios:
        d["metadata_ratio_median"] = statistics.median(ratios)
        d["metadata_ratio_max"] = max(ratios)
        d["metadata_ratio_last"] = ratios[-1]
        d["meets_floor_metadata"] = d["metadata_ratio_max"] <= META_FLOOR
    print(f"\nyear: {n} of {f['days_requested']} days run, preset {f['preset']}; repository "
          f"{mb(f['repo_day0_bytes'])} after day 0, {mb(f['repo_final_bytes'])} at the end")
    pick = sorted({1, 2, 3, 10, 30, 60, 90, 120, 180, 240, 300, 365, n} & set(range(1, n + 1)))
    t = [["day", "backup wall", "cpu", "growth", "uploaded", "index", "snapshot", "trees",
          "lists", "metadata/data"]]
    for i in pick:
        r = rows[i - 1]
        t.append([r["day"], f"{r['backup_s']:.2f} s", f"{r['backup_cpu_s']:.2f} s",
                  mb(r["growth"]), mb(r["uploaded"]), f"{r['index_added']:,}",
                  f"{r['snapshot_added']:,}", f"{r['trees_added']:,}" if r["trees_added"] is not None else "?",
                  f"{r['lists_added']:,}" if r["lists_added"] is not None else "?",
                  f"{r['metadata_ratio'] * 100:.2f} %" if r.get("metadata_ratio") is not None else "?"])
    table(t)
    if n >= 2:
        print(f"last/day-2 backup time: wall {d['last_over_day2_wall']:.2f}×, cpu "
              f"{d['last_over_day2_cpu']:.2f}×; median last week / first week: wall "
              f"{d['last_week_over_first_week_wall']:.2f}×, cpu {d['last_week_over_first_week_cpu']:.2f}× "
              f"(floor ≤ {YEAR_TIME_FLOOR}×)")
    if ratios:
        print(f"metadata / changed data: median {d['metadata_ratio_median'] * 100:.2f} %, max "
              f"{d['metadata_ratio_max'] * 100:.2f} % (floor ≤ {META_FLOOR * 100:.0f} %)")
    print(f"cold `snapshots` on a new home: {f['snapshots_cold_s']:.2f} s for "
          f"{f['snapshots_listed']} snapshots (page cache {f['snapshots_cold_page_cache']}); "
          f"again {f['snapshots_again_s']:.2f} s; on the device {f['snapshots_device_s']:.2f} s")
    same = os.path.join(logs, "same-source.tsv")
    if os.path.exists(same):
        with open(same) as fh:
            head = fh.readline().rstrip("\n").split("\t")
            pairs = [dict(zip(head, map(float, line.split("\t")))) for line in fh if line.strip()]
        if pairs:
            d["same_source_days"] = pairs
            for k in ("year_s", "year_cpu_s", "fresh_s", "fresh_cpu_s"):
                d[f"same_source_median_{k}"] = statistics.median(p[k] for p in pairs)
            d["same_source_history_wall"] = d["same_source_median_year_s"] / d["same_source_median_fresh_s"]
            d["same_source_history_cpu"] = (d["same_source_median_year_cpu_s"]
                                            / d["same_source_median_fresh_cpu_s"])
            print(f"same source ({f.get('same_source_files', '?')} files), {len(pairs)} days in both: "
                  f"year repository median {d['same_source_median_year_s']:.2f} s, new repository "
                  f"{d['same_source_median_fresh_s']:.2f} s: history costs "
                  f"{d['same_source_history_wall']:.2f}× wall, {d['same_source_history_cpu']:.2f}× cpu")
            if all("replay_s" in p for p in pairs):
                for k in ("replay_s", "replay_cpu_s"):
                    d[f"replayed_first_week_median_{k}"] = statistics.median(p[k] for p in pairs)
                d["last_week_over_replayed_first_week_wall"] = (
                    d["same_source_median_year_s"] / d["replayed_first_week_median_replay_s"])
                d["last_week_over_replayed_first_week_cpu"] = (
                    d["same_source_median_year_cpu_s"] / d["replayed_first_week_median_replay_cpu_s"])
                days = [int(p["replay_day"]) for p in pairs]
                print(f"first week replayed in the same rounds (days {min(days)}–{max(days)} of a new "
                      f"sample): median {d['replayed_first_week_median_replay_s']:.2f} s; year "
                      f"repository / replayed first week: "
                      f"{d['last_week_over_replayed_first_week_wall']:.2f}× wall, "
                      f"{d['last_week_over_replayed_first_week_cpu']:.2f}× cpu "
                      f"(floor ≤ {YEAR_TIME_FLOOR}×)")
    return d


def rtt(f, logs):
    d = dict(f)
    t = [["snapshots before", "op", "requests", "methods", f"wall +{f['delay_ms']} ms",
          "wall +0 ms", "(wall−wall0)/delay", "sequential rounds"]]
    points = sorted(int(m.group(1)) for m in (re.fullmatch(r"backup_at(\d+)_s", k) for k in f) if m)
    d["points"] = []
    base = [f[k] for k in f if re.fullmatch(r"backup0_at\d+_s", k)]
    base_backup = statistics.median(base) if base else None
    for k in points:
        b, r = f"backup_at{k}", f"restore_at{k + 1}"
        seq_b = (f[b + "_s"] - base_backup) / (f["delay_ms"] / 1000) if base_backup else None
        seq_r = (f[r + "_s"] - f[f"restore0_at{k + 1}_s"]) / (f["delay_ms"] / 1000)
        p = {"snapshots": k, "backup_requests": f[b + "_requests"], "backup_s": f[b + "_s"],
             "backup_methods": f[b + "_methods"], "backup_uploaded_bytes": f.get(b + "_uploaded_bytes"),
             "backup_sequential_rtt_estimate": seq_b, "backup_rounds": f.get(b + "_rounds"),
             "restore_rounds": f.get(r + "_rounds"),
             "snapshots_cold_rounds": f.get(f"snapshots_at{k + 1}_rounds"),
             "restore_requests": f[r + "_requests"], "restore_s": f[r + "_s"],
             "restore_methods": f[r + "_methods"],
             "restore_no_delay_s": f[f"restore0_at{k + 1}_s"], "restore_sequential_rtt_estimate": seq_r,
             "snapshots_cold_requests": f[f"snapshots_at{k + 1}_requests"],
             "snapshots_cold_s": f[f"snapshots_at{k + 1}_s"]}
        d["points"].append(p)
        t.append([k, "incremental backup", p["backup_requests"], p["backup_methods"],
                  f"{p['backup_s']:.2f} s", f"{base_backup:.2f} s (median, other days)",
                  f"{seq_b:.0f}" if seq_b is not None else "?", f.get(b + "_rounds", "?")])
        t.append([k + 1, "restore latest (new home)", p["restore_requests"], p["restore_methods"],
                  f"{p['restore_s']:.2f} s", f"{p['restore_no_delay_s']:.2f} s", f"{seq_r:.0f}",
                  f.get(r + "_rounds", "?")])
        t.append([k + 1, "snapshots (new home)", p["snapshots_cold_requests"],
                  f[f"snapshots_at{k + 1}_methods"], f"{p['snapshots_cold_s']:.2f} s", "", "",
                  f.get(f"snapshots_at{k + 1}_rounds", "?")])
    print(f"\nrtt: moto S3 behind a proxy adding {f['delay_ms']} ms per request; preset {f['preset']} "
          f"({mb(f['source_bytes_day0'])}); (wall − wall without delay) / delay and 'sequential rounds' (requests that reached the proxy ≥ 0.9 × delay after the previous one) both estimate the round trips taken one after another")
    table(t)
    return d


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("--figures", required=True)
    p.add_argument("--logs", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    f = load_figures(a.figures)
    section = {"large-db": large_db, "year": year, "rtt": rtt}[a.cmd](f, a.logs)
    doc = json.load(open(a.out)) if os.path.exists(a.out) else {}
    doc[a.cmd] = section
    with open(a.out, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"\nfigures: {a.out}")


if __name__ == "__main__":
    main()
