#!/usr/bin/env python3
"""Turns the raw figures of bench/incremental.sh into the results JSON and a table.

Called by incremental.sh; can be re-run on a kept --workdir:
    python3 bench/report.py --figures W/figures.env --logs W/logs --pages W/page_diff.jsonl \
        --out bench/results/x.json --date 2025-01-01T00:00:00Z
"""

import argparse
import json
import os
import sys

FLOOR_VS_RESTIC = 0.55
FLOOR_VS_REFERENCE = 1.15

# The speed issue's floors, chatvault / restic in the same run: (name, step, measure, floor).
# Time floors are judged on wall time (the CPU-time ratio is reported beside them).
SPEED_STEPS = ("initial_backup", "incremental_backup", "restore", "check_read_data")
# step -> figure prefix in figures.env (<tool>_<prefix>_s, _cpu_s, _rss_mb)
STEP_FIGURE = {"initial_backup": "backup0", "incremental_backup": "backup1",
               "restore": "restore", "check_read_data": "check"}
SPEED_FLOORS = (
    ("initial_backup_time", "initial_backup", "wall_s", 0.5),
    ("restore_time", "restore", "wall_s", 0.5),
    ("incremental_bytes", None, "added_bytes", 0.5),
    ("incremental_backup_time", "incremental_backup", "wall_s", 0.5),
    ("initial_backup_rss", "initial_backup", "rss_mb", 1.0),
    ("incremental_backup_rss", "incremental_backup", "rss_mb", 1.0),
    ("restore_rss", "restore", "rss_mb", 1.0),
)


def load_figures(path):
    figs = {}
    for line in open(path):
        line = line.rstrip("\n")
        if not line or "=" not in line:
            continue
        k, v = line.split("=", 1)
        try:
            figs[k] = int(v)
        except ValueError:
            try:
                figs[k] = float(v)
            except ValueError:
                figs[k] = v
    return figs


def read_json_doc(path):
    """The stdout of `chatvault ... --json`: one (pretty) JSON document."""
    with open(path) as f:
        return json.load(f)


def restic_summary(path):
    """The summary line of `restic backup --json` (status lines are skipped)."""
    summary = None
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("message_type") == "summary":
            summary = d
    return summary


def borg_stats(path):
    """`borg create --stats` (stderr): 'This archive:' original / compressed / deduplicated."""
    out = {}
    if not os.path.exists(path):
        return out
    units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    for line in open(path):
        if line.startswith("This archive:"):
            parts = line.split()[2:]
            vals = []
            i = 0
            while i + 1 < len(parts):
                vals.append(int(float(parts[i]) * units.get(parts[i + 1], 1)))
                i += 2
            if len(vals) == 3:
                out = {"original": vals[0], "compressed": vals[1], "deduplicated": vals[2]}
    return out


def chatvault_breakdown(logs, d):
    """What the incremental added to chatvault's repository, by object kind (bench/repo-stats
    run after each backup; the difference is exact since nothing is ever deleted)."""
    p0, p1 = (os.path.join(logs, f"chatvault_stats{i}.json") for i in (0, 1))
    if not (os.path.exists(p0) and os.path.exists(p1)):
        return None
    a, b = json.load(open(p0)), json.load(open(p1))
    out = {}
    for k in ("sqlite_pages", "other_data", "trees"):
        out[k] = {f: b[k][f] - a[k][f] for f in ("count", "sealed", "raw", "envelope")}
    out["pack_overhead"] = {"packs": b["packs"]["count"] - a["packs"]["count"],
                            "bytes": b["packs"]["overhead"] - a["packs"]["overhead"]}
    for k in ("index_objects", "snapshot_objects"):
        out[k] = {f: b[k][f] - a[k][f] for f in ("count", "bytes")}
    total = (out["sqlite_pages"]["sealed"] + out["other_data"]["sealed"] + out["trees"]["sealed"]
             + out["pack_overhead"]["bytes"] + out["index_objects"]["bytes"]
             + out["snapshot_objects"]["bytes"])
    out["objects_total"] = total
    out["unaccounted_file_bytes"] = d["added_file_bytes"] - total
    out["largest_content_lists"] = b.get("largest_content_lists", [])
    return out


def mb(n):
    return f"{n / 1e6:.2f} MB"


def ratio(a, b, digits=3):
    if a is None or b is None or not b:
        return None
    return round(a / b, digits)


def speed_section(f, tools):
    """`speed`: per step and tool, wall_s / cpu_s / rss_mb (None when the run did not record it)."""
    speed = {}
    for step in SPEED_STEPS:
        speed[step] = {}
        for t in tools:
            k = f"{t}_{STEP_FIGURE[step]}"
            speed[step][t] = {"wall_s": f.get(f"{k}_s"), "cpu_s": f.get(f"{k}_cpu_s"),
                              "rss_mb": f.get(f"{k}_rss_mb")}
    return speed


def speed_ratios(speed, tools, bytes_ratio):
    out = {}
    for step in SPEED_STEPS:
        out[step] = {}
        for other in [t for t in ("restic", "borg") if t in tools]:
            cv, ot = speed[step]["chatvault"], speed[step][other]
            out[step][f"chatvault_over_{other}"] = {
                m: ratio(cv[m], ot[m]) for m in ("wall_s", "cpu_s", "rss_mb")}
    floors = {}
    for name, step, measure, floor in SPEED_FLOORS:
        if step is None:
            r = bytes_ratio
            d = {"ratio": r, "measure": "chatvault_added_over_restic_added"}
        else:
            r = out[step]["chatvault_over_restic"][measure]
            d = {"ratio": r, "measure": f"{step}.{measure}"}
            if measure == "wall_s":
                rc = out[step]["chatvault_over_restic"]["cpu_s"]
                d["cpu_ratio"] = rc
                d["met_on_cpu"] = None if rc is None else rc <= floor
        d["floor"] = floor
        d["met"] = None if r is None else r <= floor
        floors[name] = d
    out["floors"] = floors
    return out


def speed_table(speed, ratios, tools):
    """Markdown table: rows = steps; per tool wall / CPU / RSS, then the ratios."""
    def num(v, fmt):
        return "–" if v is None else format(v, fmt)
    others = [t for t in ("restic", "borg") if t in tools]
    head = ["step"]
    for t in tools:
        head += [f"{t} wall s", f"{t} CPU s", f"{t} RSS MiB"]
    for o in others:
        head += [f"cv/{o} wall", f"cv/{o} CPU", f"cv/{o} RSS"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for step in SPEED_STEPS:
        row = [step]
        for t in tools:
            d = speed[step][t]
            row += [num(d["wall_s"], ".2f"), num(d["cpu_s"], ".2f"), num(d["rss_mb"], ".1f")]
        for o in others:
            r = ratios[step][f"chatvault_over_{o}"]
            row += [num(r["wall_s"], ".3f"), num(r["cpu_s"], ".3f"), num(r["rss_mb"], ".3f")]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| floor (chatvault / restic) | ratio | floor | | on CPU time |",
              "|---|---:|---:|---|---|"]
    for name, d in ratios["floors"].items():
        met = {True: "met", False: "MISSED", None: "–"}[d["met"]]
        cpu = ""
        if "cpu_ratio" in d and d["cpu_ratio"] is not None:
            cpu = f"{d['cpu_ratio']:.3f} ({'met' if d['met_on_cpu'] else 'MISSED'})"
        lines.append(f"| {name} ({d['measure']}) | {num(d['ratio'], '.3f')} | ≤ {d['floor']} | "
                     f"{met} | {cpu} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--figures", required=True)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--pages", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--date", required=True)
    a = ap.parse_args()

    f = load_figures(a.figures)
    pages = [json.loads(l) for l in open(a.pages) if l.strip()]
    tools = ["chatvault", "restic"] + (["borg"] if "borg_repo1_bytes" in f else [])

    res = {
        "date": a.date,
        "preset": f["preset"],
        "seed": f["seed"],
        "commit": f.get("commit"),
        "binaries": {"dir": f.get("binaries"), "chatvault_mtime": f.get("chatvault_binary_mtime")},
        "host": {"cpus": f["host_cpus"], "kernel": f["host_kernel"]},
        "versions": {t: f[f"{t}_version"] for t in tools},
        "source": {
            "bytes_day0": f["source_bytes_day0"],
            "bytes_day1": f["source_bytes_day1"],
            "files_day0": f["source_files_day0"],
            "files_day1": f["source_files_day1"],
            "media_bytes_day1": f["source_media_bytes_day1"],
        },
        "sample_generate_s": f["sample_generate_s"],
        "next_day": {
            "seconds": f["sample_next_day_s"],
            "new_files": f["new_files"],
            "new_media_files": f["new_media_files"],
            "new_media_bytes": f["new_media_bytes"],
            "new_other_bytes": f["new_other_bytes"],
            "reported_media_bytes": f.get("next_day_reported_media_bytes"),
            "resized_files": f.get("resized_files", ""),
        },
        "page_diff": pages,
        "tools": {},
    }

    # No page_diff output (incremental.sh --no-build without the example): no reference.
    have_pages = bool(pages)
    changed_pages = sum(p["changed_pages"] for p in pages) if have_pages else None
    zstd_cat = sum(p["changed_zstd_concatenated"] for p in pages) if have_pages else None
    zstd_page = sum(p["changed_zstd_per_page"] for p in pages) if have_pages else None
    new_media = f["new_media_bytes"]
    ref = new_media + zstd_cat if have_pages else None
    ref_pp = new_media + zstd_page if have_pages else None
    res["reference"] = {
        "new_media_bytes": new_media,
        "changed_pages": changed_pages,
        "changed_bytes": sum(p["changed_bytes"] for p in pages) if have_pages else None,
        "changed_pages_zstd_concatenated": zstd_cat,
        "changed_pages_zstd_per_page": zstd_page,
        "reference_bytes": ref,
        "reference_bytes_per_page": ref_pp,
    }

    for t in tools:
        parts = ["data", "index", "snapshots"] if t != "borg" else ["data"]
        d = {
            "initial_backup_s": f[f"{t}_backup0_s"],
            "incremental_backup_s": f[f"{t}_backup1_s"],
            "restore_s": f[f"{t}_restore_s"],
            "check_read_data_s": f.get(f"{t}_check_s"),
            "repo_bytes_day0": f[f"{t}_repo0_bytes"],
            "repo_bytes_day1": f[f"{t}_repo1_bytes"],
            "added_bytes": f[f"{t}_repo1_bytes"] - f[f"{t}_repo0_bytes"],
            "added_file_bytes": f[f"{t}_repo1_file_bytes"] - f[f"{t}_repo0_file_bytes"],
            "repo_files_day0": f[f"{t}_repo0_files"],
            "repo_files_day1": f[f"{t}_repo1_files"],
            "added_by_folder": {
                p: f[f"{t}_repo1_{p}_bytes"] - f[f"{t}_repo0_{p}_bytes"] for p in parts
            },
            "restore_files": f[f"{t}_restore_files"],
            "restore_media_bytes": f[f"{t}_restore_media_bytes"],
            "restore_media_complete": f[f"{t}_restore_media_bytes"] == f["source_media_bytes_day1"],
        }
        for step in SPEED_STEPS:
            k = f"{t}_{STEP_FIGURE[step]}"
            d[f"{step}_cpu_s"] = f.get(f"{k}_cpu_s")
            d[f"{step}_rss_mb"] = f.get(f"{k}_rss_mb")
        logs = a.logs
        if t == "chatvault":
            for day in (0, 1):
                doc = read_json_doc(os.path.join(logs, f"chatvault_backup{day}.log"))
                d[f"summary_day{day}"] = doc["snapshot"]["summary"]
            d["uploaded_bytes"] = d["summary_day1"]["uploaded_bytes"]
            d["new_bytes"] = d["summary_day1"]["new_bytes"]
            d["new_blobs"] = d["summary_day1"]["new_blobs"]
            objs = []
            p = os.path.join(logs, "chatvault_new_objects.tsv")
            if os.path.exists(p):
                for line in open(p):
                    path, size = line.rstrip("\n").rsplit("\t", 1)
                    objs.append({"path": path, "bytes": int(size)})
            d["new_objects"] = objs
            d["breakdown"] = chatvault_breakdown(logs, d)
        elif t == "restic":
            for day in (0, 1):
                s = restic_summary(os.path.join(logs, f"restic_backup{day}.log"))
                d[f"summary_day{day}"] = s
            s1 = d["summary_day1"] or {}
            d["data_added"] = s1.get("data_added")
        elif t == "borg":
            for day in (0, 1):
                d[f"stats_day{day}"] = borg_stats(os.path.join(logs, f"borg_backup{day}.err"))
        res["tools"][t] = d

    cv = res["tools"]["chatvault"]["added_bytes"]
    rs = res["tools"]["restic"]["added_bytes"]
    r1 = cv / rs if rs else float("inf")
    r2 = (cv / ref if ref else float("inf")) if have_pages else None
    r2pp = (cv / ref_pp if ref_pp else float("inf")) if have_pages else None
    res["ratios"] = {
        "chatvault_added_over_restic_added": round(r1, 4),
        "chatvault_added_over_reference": None if r2 is None else round(r2, 4),
        "chatvault_added_over_reference_per_page": None if r2pp is None else round(r2pp, 4),
        "floor_vs_restic": FLOOR_VS_RESTIC,
        "floor_vs_reference": FLOOR_VS_REFERENCE,
        "meets_floor_vs_restic": r1 <= FLOOR_VS_RESTIC,
        "meets_floor_vs_reference": None if r2 is None else r2 <= FLOOR_VS_REFERENCE,
    }
    if "borg" in res["tools"]:
        bg = res["tools"]["borg"]["added_bytes"]
        res["ratios"]["chatvault_added_over_borg_added"] = round(cv / bg, 4) if bg else None

    res["speed"] = speed_section(f, tools)
    res["speed_ratios"] = speed_ratios(res["speed"], tools,
                                       res["ratios"]["chatvault_added_over_restic_added"])

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as out:
        json.dump(res, out, indent=2)
        out.write("\n")

    # ---- table (markdown, also readable in a terminal)
    w = sys.stdout.write
    w(f"\nIncremental backup benchmark — preset {res['preset']}, seed {res['seed']}, {a.date}, "
      f"commit {res['commit']}, {res['host']['cpus']} CPUs\n\n")
    for t in tools:
        w(f"- {res['versions'][t]}\n")
    w(f"\nSource: day 0 {mb(res['source']['bytes_day0'])} in {res['source']['files_day0']} files; "
      f"the day added {res['next_day']['new_media_files']} media files ({mb(new_media)})")
    if have_pages:
        w(f" and changed {changed_pages} database pages ({mb(res['reference']['changed_bytes'])} raw, "
          f"{mb(zstd_cat)} zstd-3 concatenated, {mb(zstd_page)} zstd-3 per page).\n\n")
    else:
        w("; changed pages not measured (no page_diff).\n\n")
    w("| tool | initial backup | repo after day 0 | incremental backup | **added by the day** | restore (latest) |\n")
    w("|---|---:|---:|---:|---:|---:|\n")
    for t in tools:
        d = res["tools"][t]
        w(f"| {t} | {d['initial_backup_s']:.1f} s | {mb(d['repo_bytes_day0'])} | "
          f"{d['incremental_backup_s']:.1f} s | **{mb(d['added_bytes'])}** | {d['restore_s']:.1f} s |\n")
    w("\n")
    c = res["tools"]["chatvault"]
    w(f"chatvault uploaded_bytes (day 1): {mb(c['uploaded_bytes'])} ({c['uploaded_bytes']} B); "
      f"new_bytes {mb(c['new_bytes'])}, new_blobs {c['new_blobs']}\n")
    w("chatvault growth by folder: " + ", ".join(
        f"{k} {v} B" for k, v in c["added_by_folder"].items()) + "\n")
    bd = c.get("breakdown")
    if bd:
        w("\nchatvault incremental, by object kind (decrypted with bench/repo-stats):\n\n")
        w("| part | objects | bytes stored | plaintext |\n|---|---:|---:|---:|\n")
        for k, label in (("other_data", "media chunks (data blobs)"),
                         ("sqlite_pages", "database pages (data blobs)"),
                         ("trees", "trees (directory listings, page-id lists)")):
            w(f"| {label} | {bd[k]['count']} | {bd[k]['sealed']} | {bd[k]['raw']} |\n")
        w(f"| pack headers + trailers | {bd['pack_overhead']['packs']} packs | "
          f"{bd['pack_overhead']['bytes']} | |\n")
        w(f"| index objects | {bd['index_objects']['count']} | {bd['index_objects']['bytes']} | |\n")
        w(f"| snapshot objects | {bd['snapshot_objects']['count']} | "
          f"{bd['snapshot_objects']['bytes']} | |\n")
        w(f"| **total** (file bytes added: {c['added_file_bytes']}) | | **{bd['objects_total']}** | |\n")
        envelope = sum(bd[k]["envelope"] for k in ("other_data", "sqlite_pages", "trees"))
        w(f"\nof which blob envelopes (nonce + tag + flag, 41 B/blob): {envelope} B\n")
    r = res["tools"]["restic"]
    w("restic growth by folder:    " + ", ".join(
        f"{k} {v} B" for k, v in r["added_by_folder"].items()) + "\n")
    if have_pages:
        w(f"reference = new media {new_media} B + changed pages zstd {zstd_cat} B = {ref} B "
          f"(per-page zstd: {ref_pp} B)\n\n")
    else:
        w("reference: not measured (no page_diff)\n\n")
    ok = lambda b: "meets" if b else "MISSES"
    w("| ratio | value | floor | |\n|---|---:|---:|---|\n")
    w(f"| chatvault added / restic added | {r1:.3f} | ≤ {FLOOR_VS_RESTIC} | "
      f"{ok(res['ratios']['meets_floor_vs_restic'])} |\n")
    if have_pages:
        w(f"| chatvault added / (new media + changed pages zstd) | {r2:.3f} | ≤ {FLOOR_VS_REFERENCE} | "
          f"{ok(res['ratios']['meets_floor_vs_reference'])} |\n")
        w(f"| chatvault added / (new media + per-page zstd) | {r2pp:.3f} | (info) | |\n")
    if "borg" in res["tools"] and res["ratios"].get("chatvault_added_over_borg_added"):
        w(f"| chatvault added / borg added | {res['ratios']['chatvault_added_over_borg_added']:.3f} | (info) | |\n")
    for t in tools:
        if not res["tools"][t]["restore_media_complete"]:
            w(f"\nWARNING: {t} restore has {res['tools'][t]['restore_media_bytes']} media bytes, "
              f"source {res['source']['media_bytes_day1']}\n")

    # ---- speed table (stderr): wall / CPU / peak RSS per step and tool, and the ratios
    sys.stdout.flush()
    sys.stderr.write("\nSpeed (wall and CPU seconds, peak RSS in MiB; page cache warm; "
                     "cv = chatvault):\n\n")
    sys.stderr.write(speed_table(res["speed"], res["speed_ratios"], tools))


if __name__ == "__main__":
    main()
