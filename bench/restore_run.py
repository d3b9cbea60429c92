#!/usr/bin/env python3
"""Runs one restore command under /usr/bin/time and reports it as one JSON line on stdout.

    python3 bench/restore_run.py NAME -- COMMAND ARGS...

Measures wall time, CPU time (user + system), and peak RSS (GNU time's %M, KiB). When the
command prints newline-delimited JSON events (`chatvault restore --json`), it stamps the arrival
of the `started` (repository opened, index loaded, trees walked) and `messages_ready` events
(seconds since the start) and keeps the final `summary` event.
Lines that are not JSON (restic, borg) are ignored. Exits non-zero when the command fails.
"""

import json
import os
import subprocess
import sys
import tempfile
import time


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    name, cmd = sys.argv[1], sys.argv[3:]
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.monotonic()
        p = subprocess.Popen(
            ["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name] + cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = None
        started = None
        summary = None
        events = 0
        for line in p.stdout:
            now = time.monotonic() - t0
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if not isinstance(ev, dict):
                continue
            events += 1
            if ev.get("event") == "messages_ready" and ready is None:
                ready = now
            elif ev.get("event") == "started" and started is None:
                started = now
            elif ev.get("event") == "summary":
                summary = ev
        err = p.stderr.read()
        rc = p.wait()
        wall_outer = time.monotonic() - t0
        if rc != 0:
            sys.stderr.write(f"{name}: exit {rc}\n{err[-3000:]}\n")
            sys.exit(1)
        fields = open(tf.name).read().split()[-4:]
    wall, user, system, rss_kib = float(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
    out = {
        "name": name,
        "wall_s": round(wall_outer, 3),
        "cpu_s": round(user + system, 3),
        "user_s": user,
        "sys_s": system,
        "peak_rss_mb": round(rss_kib * 1024 / 1e6, 1),
    }
    if started is not None:
        out["started_s"] = round(started, 3)
    if ready is not None:
        out["messages_ready_s"] = round(ready, 3)
        out["messages_ready_ratio"] = round(ready / wall_outer, 3)
    if summary is not None:
        for k in ("files", "kept", "bytes", "downloaded_bytes"):
            if k in summary:
                out[k] = summary[k]
        if summary.get("downloaded_bytes"):
            out["download_rate_kib_s"] = round(summary["downloaded_bytes"] / 1024 / wall_outer, 1)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
