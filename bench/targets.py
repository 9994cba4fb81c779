"""bench/targets.py - the post-copy targets (issue 12) against this run's floors.

report.py calls write_targets(res, raw_dirs): for each target, the runs it
applies to, the floor measured in the same run (DIR/floors-*.json, written
by bench/floors before the matrix), the median and min-max of the figure,
whether the median reaches the target, and what usually limits it on this
machine.  Writes DIR/targets.md.  Standard library only.
"""
import json
import os
import statistics


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _runs(raw_dirs):
    out = []
    for d in raw_dirs:
        meta = _load(os.path.join(d, "meta.json")) or {}
        src = _load(os.path.join(d, "src.json"))
        if not src or src.get("status") != "completed":
            continue
        dst = _load(os.path.join(d, "dst.json")) or {}
        out.append((meta, src, dst))
    return out


def push_mbps(src):
    """Bulk bytes over the post-copy phase (resume to completion), MB/s."""
    ms = src.get("postcopy_ms") or 0
    return src.get("wire_bytes_bulk", 0) / (ms / 1000) / 1e6 if ms > 0 else None


def nonzero_bytes(src):
    return (src.get("pages_bulk", 0) + src.get("pages_urgent", 0) - src.get("pages_dup", 0)) * 4096


def max_gap(src, dst):
    return max(float(src.get("max_beat_gap_ms", 0)), float(dst.get("max_beat_gap_ms", 0)))


def _floor(floors, link, key):
    f = floors.get(link) or {}
    v = f.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def _targets(floors):
    """(name, link, selector, value(src, dst), floor value or None, limit(floor), limits text)."""
    lf = floors.get("local") or {}
    uffd = lf.get("uffd_fault_us_p50")

    def svc(link):
        rtt = _floor(floors, link, "rtt_us_p50")
        return uffd + rtt if uffd is not None and rtt is not None else None

    def post(meta):
        return meta.get("mode") == "post" and meta.get("prepaging") == "bubble"

    def hybrid(meta):
        return meta.get("mode") == "hybrid"

    def guest(name):
        return lambda meta: post(meta) and meta.get("guest") == name

    def ram(r):
        return lambda meta: post(meta) and meta.get("ram") == r

    tput = {l: _floor(floors, l, "tcp_MBps") for l in ("unshaped", "1gbit-prio")}
    cpu = "2 shared cores: vCPU, fault thread, bulk receiver, push and TCP compete"
    t = [
        ("fault p50 <= 2x (uffd fault + RTT)", "unshaped", post, lambda s, d: s.get("fault_us_p50"),
         svc("unshaped"), lambda f: 2 * f, "µs", cpu),
        ("fault p99 < 500 µs", "unshaped", post, lambda s, d: s.get("fault_us_p99"),
         svc("unshaped"), lambda f: 500, "µs", "faults queued behind bulk placement; " + cpu),
        ("fault p99 < 2 ms", "1gbit-prio", post, lambda s, d: s.get("fault_us_p99"),
         svc("1gbit-prio"), lambda f: 2000, "µs", "bulk bytes queued ahead of the fault in the shaper"),
        ("switch_gap < 5 ms", "unshaped", post, lambda s, d: s.get("switch_gap_ms"),
         None, lambda f: 5, "ms", "first beat at the destination waits for the guest's first faults"),
        ("switch_gap < 5 ms", "1gbit-prio", post, lambda s, d: s.get("switch_gap_ms"),
         None, lambda f: 5, "ms", "first beat at the destination waits for the guest's first faults"),
        ("max_beat_gap < 10 ms (dirty seq 256M)", "unshaped", guest("dirty-seq-256M"), max_gap,
         None, lambda f: 10, "ms", "a sequential writer faults on every page the push has not reached"),
        ("max_beat_gap < 50 ms (dirty seq 256M)", "1gbit-prio", guest("dirty-seq-256M"), max_gap,
         None, lambda f: 50, "ms", "a sequential writer faults on every page the push has not reached"),
        ("push >= 75% of raw TCP", "unshaped", post, lambda s, d: push_mbps(s),
         tput["unshaped"], lambda f: 0.75 * f, "MB/s", "UFFDIO_COPY per page and the guest share 2 cores"),
        ("push >= 90% of raw TCP", "1gbit-prio", post, lambda s, d: push_mbps(s),
         tput["1gbit-prio"], lambda f: 0.9 * f, "MB/s", "urgent replies and framing share the link"),
        ("downtime < 1 ms (1 GiB)", "unshaped", ram("1G"), lambda s, d: s.get("downtime_ms"),
         None, lambda f: 1, "ms", "state save/load, vCPU start and the commit round trip"),
        ("downtime < 1 ms (4 GiB)", "unshaped", ram("4G"), lambda s, d: s.get("downtime_ms"),
         None, lambda f: 1, "ms", "state save/load, vCPU start and the commit round trip"),
        ("total <= 1.1x non-zero RAM / raw TCP", "unshaped", post,
         lambda s, d: (s.get("total_ms", 0) - s.get("precopy_ms", 0)) /
         (nonzero_bytes(s) / (tput["unshaped"] * 1e6) * 1000) if tput["unshaped"] and nonzero_bytes(s) else None,
         None, lambda f: 1.1, "x", "the push runs below the link's raw throughput (see push)"),
        ("total <= 1.1x non-zero RAM / raw TCP", "1gbit-prio", post,
         lambda s, d: (s.get("total_ms", 0) - s.get("precopy_ms", 0)) /
         (nonzero_bytes(s) / (tput["1gbit-prio"] * 1e6) * 1000) if tput["1gbit-prio"] and nonzero_bytes(s) else None,
         None, lambda f: 1.1, "x", "the push runs below the link's raw throughput (see push)"),
        ("hybrid downtime < 5 ms", "unshaped", hybrid, lambda s, d: s.get("downtime_ms"),
         None, lambda f: 5, "ms", "the pause and the load wait on 2 loaded cores (see the downtime's parts)"),
        ("hybrid downtime < 5 ms", "1gbit-prio", hybrid, lambda s, d: s.get("downtime_ms"),
         None, lambda f: 5, "ms", "the pause and the load wait on 2 loaded cores (see the downtime's parts)"),
        ("hybrid switch_gap < 10 ms", "unshaped", hybrid, lambda s, d: s.get("switch_gap_ms"),
         None, lambda f: 10, "ms", "resume to first beat: the guest's first writes fault on discarded pages"),
        ("hybrid switch_gap < 10 ms", "1gbit-prio", hybrid, lambda s, d: s.get("switch_gap_ms"),
         None, lambda f: 10, "ms", "resume to first beat: the guest's first writes fault on discarded pages"),
    ]
    return t


# The downtime's parts (docs/metrics.md): source-clock parts that sum to
# downtime_ms, then the destination's steps inside load and commit.
DOWNTIME_PARTS = [
    ("pause", "downtime_pause_ms"), ("dirty", "downtime_dirty_ms"),
    ("pages/discards", "downtime_pages_ms"), ("save", "downtime_save_ms"),
    ("send", "downtime_send_ms"), ("load wait", "downtime_load_ms"),
    ("commit", "downtime_commit_ms"), ("dst load", "dst_load_ms"),
    ("dst vCPU start", "dst_vcpu_start_ms"),
]


def downtime_parts_lines(runs):
    """Median of each downtime part per link and mode, next to the downtime."""
    lines = ["", "## The downtime's parts (medians, ms; docs/metrics.md)", "",
             "| link | mode | downtime | " + " | ".join(n for n, k in DOWNTIME_PARTS) + " |",
             "|---|---|---|" + "---|" * len(DOWNTIME_PARTS)]
    keys = sorted({(m.get("link"), m.get("mode")) for m, s, d in runs})
    for link, mode in keys:
        sel = [s for m, s, d in runs if m.get("link") == link and m.get("mode") == mode]
        if not any("downtime_pause_ms" in s for s in sel):
            continue    # a record from before the parts were measured
        cells = [_stat([s.get(k) for s in sel], "{:.2f}")[0] for n, k in DOWNTIME_PARTS]
        lines.append("| {} | {} | {} | {} |".format(
            link, mode, _stat([s.get("downtime_ms") for s in sel], "{:.2f}")[1],
            " | ".join("n/a" if c is None else "{:.2f}".format(c) for c in cells)))
    return lines


def _stat(vals, fmt):
    vals = sorted(v for v in vals if isinstance(v, (int, float)))
    if not vals:
        return None, "n/a"
    m = statistics.median(vals)
    return m, "{} [{}–{}] (n={})".format(fmt.format(m), fmt.format(vals[0]), fmt.format(vals[-1]), len(vals))


def write_targets(res, raw_dirs):
    floors = {}
    for name in os.listdir(res):
        if name.startswith("floors-") and name.endswith(".json"):
            floors[name[len("floors-"):-len(".json")]] = _load(os.path.join(res, name)) or {}
    runs = _runs(raw_dirs)
    lines = ["# Post-copy targets (issue 12)", "",
             "Floors measured in this run: " + "; ".join(
                 "{}: {}".format(k, json.dumps(v)) for k, v in sorted(floors.items())), "",
             "Cells: `post` with `--prepaging bubble` (urgent duplicates on) unless the target "
             "says hybrid. `floor` is the in-process userfaultfd fault plus the link's round "
             "trip for fault latency, and the link's raw TCP throughput for the push.", "",
             "| target | link | floor | measured median [min–max] | reached | likely limit (from the design, not measured per run) |",
             "|---|---|---|---|---|---|"]
    for name, link, sel, val, floor, limit, unit, why in _targets(floors):
        vals = [val(s, d) for m, s, d in runs if m.get("link") == link and sel(m)]
        fmt = "{:.2f}" if unit in ("x", "ms") else "{:.0f}"
        med, txt = _stat(vals, fmt)
        try:
            lim = limit(floor)      # a target relative to a floor needs the floor
        except TypeError:
            lim = None
        higher_better = "push" in name
        if med is None or lim is None:
            ok = "n/a"
        else:
            ok = "yes" if (med >= lim if higher_better else med <= lim) else "no"
        fl = "n/a" if floor is None else (fmt.format(floor) + " " + unit)
        lines.append("| {} | {} | {} | {} {} | {} | {} |".format(
            name, link, fl, txt, unit, ok, "" if ok == "yes" else why))
    lines += downtime_parts_lines(runs)
    lines += ["", "## The lever: urgent duplicates of in-flight pages (on vs `--dup-inflight off`)", "",
              "| link | guest | dup | fault p50 µs | fault p99 µs | max_beat_gap ms | pages_dup |",
              "|---|---|---|---|---|---|---|"]
    keys = sorted({(m.get("link"), m.get("guest")) for m, s, d in runs if m.get("mode") == "post"})
    for link, g in keys:
        for pp, label in (("bubble", "on"), ("bubble+nodup", "off")):
            sel = [(s, d) for m, s, d in runs if m.get("link") == link and m.get("guest") == g
                   and m.get("mode") == "post" and m.get("prepaging") == pp]
            if not sel:
                continue
            lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
                link, g, label, _stat([s.get("fault_us_p50") for s, d in sel], "{:.0f}")[1],
                _stat([s.get("fault_us_p99") for s, d in sel], "{:.0f}")[1],
                _stat([max_gap(s, d) for s, d in sel], "{:.1f}")[1],
                _stat([s.get("pages_dup", 0) for s, d in sel], "{:.0f}")[1]))
    with open(os.path.join(res, "targets.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
