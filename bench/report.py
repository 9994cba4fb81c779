#!/usr/bin/env python3
"""bench/report.py - turn a bench/run results directory into figures.

    bench/report.py DIR

Reads DIR/raw/<run>/{meta.json, src.json, dst.json, src-timeline.csv,
dst-timeline.csv, dst-console.txt}, and writes
    DIR/runs.csv       one row per run, every figure
    DIR/summary.md     per link profile: one row per guest/mode/policy,
                       median [min..max] over the repetitions
    DIR/targets.md     the post-copy targets against the run's floors
                       (bench/targets.py)
    DIR/*.svg          plots (gnuplot), when gnuplot is installed
docs/bench.md defines each figure.  Standard library only.
"""
import csv
import glob
import json
import math
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import targets  # noqa: E402  (bench/targets.py)

FIELDS = [
    "run", "link", "guest", "ram", "mode", "prepaging", "rep", "status", "failed",
    "failure", "downtime_ms", "blackout_ms", "switch_gap_ms", "max_beat_gap_ms",
    "guest_rate_during_postcopy", "total_ms", "wire_bytes", "ram_bytes",
    "bytes_per_ram", "pages_bulk", "pages_urgent", "pages_zero", "pages_resent", "pages_dup",
    "rounds", "converged", "faults", "fault_us_p50", "fault_us_p99", "fault_us_max",
    "rate_before_hz", "lost_work_s",
]
# figures summarised per cell: (key, header, format)
SUMMARY = [
    ("downtime_ms", "downtime ms", "{:.2f}"),
    ("blackout_ms", "blackout ms", "{:.1f}"),
    ("switch_gap_ms", "switch gap ms", "{:.1f}"),
    ("max_beat_gap_ms", "max beat gap ms", "{:.1f}"),
    ("guest_rate_during_postcopy", "rate in post", "{:.2f}"),
    ("total_ms", "total ms", "{:.0f}"),
    ("bytes_per_ram", "bytes/RAM", "{:.2f}"),
    ("faults", "faults", "{:.0f}"),
    ("fault_us_p50", "fault p50 µs", "{:.0f}"),
    ("fault_us_p99", "fault p99 µs", "{:.0f}"),
    ("lost_work_s", "lost work s", "{:.2f}"),
]


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_timeline(path):
    """[(t_ns, beats)] sorted by time; [] if absent or malformed."""
    out = []
    try:
        with open(path) as f:
            for row in csv.DictReader(f):
                out.append((int(row["t_ns"]), int(row["beats"])))
    except (OSError, ValueError, KeyError):
        return []
    return sorted(out)


def beats_at(tl, t):
    """Cumulative beats at time t (last sample at or before t), None if before all."""
    best = None
    for ts, b in tl:
        if ts > t:
            break
        best = b
    return best


def degradation(rec, src_tl, dst_tl):
    """(undisturbed beats/s, seconds of guest work lost during the migration).

    The undisturbed rate is measured over the 2 s before the migration
    starts; the window runs from the start to 1 s after the end, and lost
    work = (rate x window - beats done in the window) / rate.  The beat
    count continues across the migration, so source and destination
    timelines join into one.
    """
    t0, t1 = rec.get("t_start_ns"), rec.get("t_end_ns")
    if not t0 or not t1 or not src_tl:
        return None, None
    b_before, b0 = beats_at(src_tl, t0 - 2_000_000_000), beats_at(src_tl, t0)
    if b_before is None or b0 is None or b0 <= b_before:
        return None, None
    rate = (b0 - b_before) / 2.0
    end = t1 + 1_000_000_000
    joined = sorted(src_tl + dst_tl)
    b1 = beats_at(joined, end)
    if b1 is None:
        return rate, None
    window = (end - t0) / 1e9
    return rate, max(0.0, (rate * window - (b1 - b0)) / rate)


def run_row(d):
    meta = load_json(os.path.join(d, "meta.json")) or {}
    rec = load_json(os.path.join(d, "src.json")) or {}
    row = {k: "" for k in FIELDS}
    row.update({k: meta.get(k, "") for k in ("link", "guest", "ram", "mode", "prepaging", "rep")})
    row["run"] = os.path.basename(d)
    for k in ("status", "downtime_ms", "blackout_ms", "total_ms", "wire_bytes", "ram_bytes",
              "pages_bulk", "pages_urgent", "pages_zero", "pages_resent", "rounds",
              "converged", "faults", "fault_us_p50", "fault_us_p99", "fault_us_max",
              "switch_gap_ms", "max_beat_gap_ms", "guest_rate_during_postcopy", "pages_dup"):
        if k in rec:
            row[k] = rec[k]
    # the destination's record carries max_beat_gap_ms to 1 s after completion
    drec = load_json(os.path.join(d, "dst.json")) or {}
    if "max_beat_gap_ms" in drec:
        row["max_beat_gap_ms"] = max(float(drec["max_beat_gap_ms"]), float(rec.get("max_beat_gap_ms", 0)))
    failure = []
    if not rec:
        failure.append("no statistics record")
    elif rec.get("status") != "completed":
        failure.append("migration " + str(rec.get("status")) + ": " + str(rec.get("error", "")))
    try:
        with open(os.path.join(d, "dst-console.txt"), errors="replace") as f:
            console = f.read()
        if "MISMATCH" in console or "BACKWARDS" in console:
            failure.append("memverify reported a mismatch")
    except OSError:
        pass
    row["failed"] = 1 if failure else 0
    row["failure"] = "; ".join(failure)
    if rec.get("ram_bytes"):
        row["bytes_per_ram"] = round(rec.get("wire_bytes", 0) / rec["ram_bytes"], 4)
    rate, lost = degradation(rec, load_timeline(os.path.join(d, "src-timeline.csv")),
                             load_timeline(os.path.join(d, "dst-timeline.csv")))
    row["rate_before_hz"] = "" if rate is None else round(rate, 1)
    row["lost_work_s"] = "" if lost is None else round(lost, 4)
    return row, rec


def num(v):
    try:
        f = float(v)
        return None if math.isnan(f) else f
    except (TypeError, ValueError):
        return None


def cell_key(r):
    return (r["link"], r["guest"], r["ram"], r["mode"], r["prepaging"])


def fmt_stat(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt.format(med)
    return (fmt + " [" + fmt + "–" + fmt + "]").format(med, min(vals), max(vals))


def write_summary(res, rows, info):
    cells = {}
    for r in rows:
        cells.setdefault(cell_key(r), []).append(r)
    links = sorted({k[0] for k in cells}, key=lambda l: ["unshaped", "10gbit", "1gbit", "1gbit-prio"].index(l)
                   if l in ["unshaped", "10gbit", "1gbit", "1gbit-prio"] else 9)
    out = ["# umig benchmark summary", ""]
    out += ["```"] + info + ["```", ""]
    out.append("Median [min–max] over the repetitions; `lost work` is guest degradation "
               "(docs/bench.md). Pre-copy that hit its round limit is marked *no conv.*; "
               "its bytes/RAM shows what it sent before giving up.")
    out.append("")
    for link in links:
        out += ["## link: " + link, ""]
        hdr = ["guest", "RAM", "mode", "policy", "runs"] + [h for _, h, _ in SUMMARY] + ["rounds", "failed"]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        for key in sorted(k for k in cells if k[0] == link):
            rs = cells[key]
            conv = [r["converged"] for r in rs if r["mode"] == "pre"]
            rounds = fmt_stat([num(r["rounds"]) for r in rs], "{:.0f}")
            if conv and not all(c in (True, "True", "true", 1) for c in conv):
                rounds += " no conv."
            line = [key[1], key[2], key[3], key[4] if key[4] != "-" else "", str(len(rs))]
            line += [fmt_stat([num(r[k]) for r in rs], f) for k, _, f in SUMMARY]
            line += [rounds, str(sum(int(r["failed"]) for r in rs))]
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    plots = sorted(os.path.basename(p) for p in glob.glob(os.path.join(res, "*.svg")))
    if plots:
        out += ["## plots", ""] + ["![{0}]({0})".format(p) for p in plots] + [""]
    fails = [r for r in rows if int(r["failed"])]
    if fails:
        out += ["## failed runs", ""] + ["- `{}`: {}".format(r["run"], r["failure"]) for r in fails] + [""]
    with open(os.path.join(res, "summary.md"), "w") as f:
        f.write("\n".join(out))


def gnuplot(res, name, script):
    if not shutil.which("gnuplot"):
        return
    path = os.path.join(res, name + ".gp")
    with open(path, "w") as f:
        f.write(script)
    subprocess.run(["gnuplot", name + ".gp"], cwd=res, check=False, timeout=60)


def plot_bars(res, rows, guest, key, name, title, ylabel, logscale=False):
    """Clustered bars: one cluster per mode/policy, one bar per link (medians)."""
    sel = [r for r in rows if r["guest"] == guest and num(r[key]) is not None]
    if not sel:
        return
    links = [l for l in ["unshaped", "10gbit", "1gbit", "1gbit-prio"] if any(r["link"] == l for r in sel)]
    modes = sorted({(r["mode"], r["prepaging"]) for r in sel})
    dat = os.path.join(res, name + ".dat")
    with open(dat, "w") as f:
        f.write("mode " + " ".join(links) + "\n")
        for m, p in modes:
            label = m if p == "-" else m + "/" + p
            vals = []
            for l in links:
                v = [num(r[key]) for r in sel if r["link"] == l and r["mode"] == m and r["prepaging"] == p]
                v = [x for x in v if x is not None]
                vals.append("{:.4f}".format(statistics.median(v)) if v else "NaN")
            f.write('"{}" {}\n'.format(label, " ".join(vals)))
    script = """set terminal svg size 900,480 dynamic font 'sans,11' background rgb 'white'
set output '{name}.svg'
set title "{title}"
set ylabel "{ylabel}"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -25
set key top left
set grid ytics
{log}
plot for [i=2:{n}] '{name}.dat' using i:xtic(1) title columnheader(i)
""".format(name=name, title=title, ylabel=ylabel, n=len(links) + 1,
           log="set logscale y" if logscale else "")
    gnuplot(res, name, script)


def plot_progress(res, raw_dirs, guest):
    """Guest progress rate around the switchover, one line per mode (rep 1)."""
    series = []
    link = None
    for pref in ["1gbit-prio", "1gbit", "unshaped", "10gbit"]:
        if any(os.path.basename(d).startswith(pref + "." + guest + ".") for d in raw_dirs):
            link = pref
            break
    if not link:
        return
    for d in sorted(raw_dirs):
        meta = load_json(os.path.join(d, "meta.json")) or {}
        rec = load_json(os.path.join(d, "src.json")) or {}
        if meta.get("link") != link or meta.get("guest") != guest or meta.get("rep") != 1:
            continue
        if not rec.get("t_pause_ns"):
            continue
        tl = sorted(load_timeline(os.path.join(d, "src-timeline.csv")) +
                    load_timeline(os.path.join(d, "dst-timeline.csv")))
        t0, step = rec["t_pause_ns"], 100_000_000
        last = tl[-1][0] if tl else 0
        pts = []
        for i in range(-40, 121):
            if t0 + (i + 1) * step > last:
                break   # past the end of the timelines: no data, not zero progress
            a, b = beats_at(tl, t0 + i * step), beats_at(tl, t0 + (i + 1) * step)
            if a is not None and b is not None:
                pts.append((i * 0.1, (b - a) * 10))
        label = meta["mode"] if meta.get("prepaging") in ("-", None) else meta["mode"] + "/" + meta["prepaging"]
        series.append((label, pts))
    if not series:
        return
    dat = os.path.join(res, "progress.dat")
    with open(dat, "w") as f:
        for label, pts in series:
            f.write('# "{}"\n'.format(label))
            for t, r in pts:
                f.write("{:.1f} {:.1f}\n".format(t, r))
            f.write("\n\n")
    plots = ", ".join("'progress.dat' index {} using 1:2 with lines lw 2 title \"{}\"".format(i, l)
                      for i, (l, _) in enumerate(series))
    gnuplot(res, "progress", """set terminal svg size 900,480 dynamic font 'sans,11' background rgb 'white'
set output 'progress.svg'
set title "Guest progress around the switchover ({guest}, link {link}, repetition 1)"
set xlabel "seconds from the source pause"
set ylabel "heartbeats per second"
set grid
set key outside right
plot {plots}
""".format(guest=guest, link=link, plots=plots))


def plot_fault_cdf(res, raw_dirs, guest):
    """CDF of fault service latency per policy and link (one guest), from the histograms."""
    groups = {}
    for d in raw_dirs:
        meta = load_json(os.path.join(d, "meta.json")) or {}
        rec = load_json(os.path.join(d, "src.json")) or {}
        hist = rec.get("fault_us_hist") or []
        if meta.get("mode") not in ("post", "hybrid") or meta.get("guest") != guest or not hist:
            continue
        key = "{} {} {}".format(meta["link"], meta["mode"], meta["prepaging"])
        g = groups.setdefault(key, {})
        for ub, c in hist:
            g[ub] = g.get(ub, 0) + c
    if not groups:
        return
    with open(os.path.join(res, "fault-cdf.dat"), "w") as f:
        for key in sorted(groups):
            total = sum(groups[key].values())
            acc = 0
            f.write('# "{}"\n'.format(key))
            for ub in sorted(groups[key]):
                acc += groups[key][ub]
                f.write("{} {:.4f}\n".format(ub, acc / total))
            f.write("\n\n")
    plots = ", ".join("'fault-cdf.dat' index {} using 1:2 with steps lw 2 title \"{}\"".format(i, k)
                      for i, k in enumerate(sorted(groups)))
    gnuplot(res, "fault-cdf", """set terminal svg size 900,480 dynamic font 'sans,11' background rgb 'white'
set output 'fault-cdf.svg'
set title "Demand-fault service latency, fault read to page placed ({guest}, all repetitions)"
set xlabel "latency, µs (power-of-two buckets)"
set ylabel "fraction of faults"
set logscale x 2
set grid
set key outside right
plot {plots}
""".format(plots=plots, guest=guest))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    res = sys.argv[1]
    all_dirs = sorted(d for d in glob.glob(os.path.join(res, "raw", "*")) if os.path.isdir(d))
    # a run without meta.json never finished (interrupted benchmark): say so, skip it
    raw_dirs = [d for d in all_dirs if os.path.exists(os.path.join(d, "meta.json"))]
    for d in sorted(set(all_dirs) - set(raw_dirs)):
        print("bench/report.py: skipping unfinished run {}".format(os.path.basename(d)), file=sys.stderr)
    if not raw_dirs:
        print("bench/report.py: no runs under {}/raw".format(res), file=sys.stderr)
        return 1
    rows = [run_row(d)[0] for d in raw_dirs]
    with open(os.path.join(res, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    try:
        with open(os.path.join(res, "info.txt")) as f:
            info = [l.rstrip("\n") for l in f]
    except OSError:
        info = []
    main_guest = max({r["guest"] for r in rows}, key=lambda g: sum(1 for r in rows if r["guest"] == g))
    plot_bars(res, rows, main_guest, "downtime_ms", "downtime",
              "Downtime per mode ({}; median)".format(main_guest), "ms (log)", logscale=True)
    plot_bars(res, rows, main_guest, "total_ms", "total-time",
              "Total migration time per mode ({}; median)".format(main_guest), "ms")
    plot_bars(res, rows, main_guest, "bytes_per_ram", "bytes",
              "Bytes on the wire / guest RAM ({}; median)".format(main_guest), "ratio")
    plot_progress(res, raw_dirs, main_guest)
    plot_fault_cdf(res, raw_dirs, main_guest)
    write_summary(res, rows, info)
    targets.write_targets(res, raw_dirs)
    nfail = sum(int(r["failed"]) for r in rows)
    print("bench/report.py: {} runs ({} failed) -> {}/runs.csv, summary.md{}".format(
        len(rows), nfail, res, ", plots" if shutil.which("gnuplot") else " (no gnuplot: no plots)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
