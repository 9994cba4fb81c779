#!/usr/bin/env python3
"""compress-report.py - runs.csv and summary.md for a bench/compress run.

    bench/compress-report.py DIR

Reads DIR/raw/<run>/{meta,src}.json and the heartbeat timelines the way
bench/report.py does (its run_row: status, failures, bytes/RAM, lost guest
work), and adds the figures of sending less: whether pre-copy converged
and why it stopped, the compression ratio, the deltas and the throttle.
Medians over the repetitions of each cell.
"""
import csv
import importlib.util
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("report", os.path.join(HERE, "report.py"))
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

EXTRA = ["config", "switch_reason", "compress_ratio", "delta_pages", "delta_hit_rate",
         "throttle_pct_max", "throttled_ms"]


def row_of(d):
    row, rec = report.run_row(d)
    meta = report.load_json(os.path.join(d, "meta.json")) or {}
    row["config"] = meta.get("config", "")
    row["switch_reason"] = rec.get("switch_reason", "")
    zin, zout = rec.get("compress_bytes_in", 0), rec.get("compress_bytes_out", 0)
    row["compress_ratio"] = round(zin / zout, 3) if zout else ""
    for k in ("delta_pages", "delta_hit_rate", "throttle_pct_max", "throttled_ms"):
        row[k] = rec.get(k, "")
    return row


def med(rows, key):
    vals = [float(r[key]) for r in rows if r[key] not in ("", None)]
    return statistics.median(vals) if vals else None


def fmt(v, f):
    return "–" if v is None else f.format(v)


def main():
    res = sys.argv[1]
    raw = os.path.join(res, "raw")
    rows = [row_of(os.path.join(raw, d)) for d in sorted(os.listdir(raw))]
    fields = report.FIELDS + EXTRA
    with open(os.path.join(res, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    cells = {}
    for r in rows:
        cells.setdefault((r["guest"], r["mode"], r["config"]), []).append(r)
    out = ["# bench/compress", ""]
    try:
        with open(os.path.join(res, "info.txt")) as f:
            out += ["```", f.read().strip(), "```", ""]
    except OSError:
        pass
    out += ["Medians over the repetitions. `lost work` is guest degradation "
            "(bench/report.py). `ratio`: page bytes per wire byte of compressed runs.", "",
            "| guest | mode | config | converged | stop | total s | downtime ms | bytes/RAM "
            "| lost work s | ratio | deltas | throttle max % | failed |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (g, m, c), rs in cells.items():
        conv = sum(1 for r in rs if r["converged"] is True or r["converged"] == "True")
        total = med(rs, "total_ms")
        out.append("| %s | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
            g, m, c, conv, len(rs), rs[0]["switch_reason"] or "–",
            fmt(total / 1000 if total is not None else None, "{:.1f}"),
            fmt(med(rs, "downtime_ms"), "{:.0f}"), fmt(med(rs, "bytes_per_ram"), "{:.2f}"),
            fmt(med(rs, "lost_work_s"), "{:.2f}"), fmt(med(rs, "compress_ratio"), "{:.2f}"),
            fmt(med(rs, "delta_pages"), "{:.0f}"), fmt(med(rs, "throttle_pct_max"), "{:.0f}"),
            sum(int(r["failed"]) for r in rs)))
    with open(os.path.join(res, "summary.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
