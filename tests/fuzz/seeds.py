#!/usr/bin/env python3
"""seeds.py - cut recorded migration streams into fuzzing seeds.

    tests/fuzz/seeds.py OUT_DIR MODE:RECORDING_DIR ...

Each RECORDING_DIR is what `tests/faultproxy.py --record=DIR` wrote for one
real migration (NN-CHANNEL-DIRECTION.bin, greeting included), MODE the
mode it ran in. Writes OUT_DIR/frames/, OUT_DIR/handshake/ and
OUT_DIR/discard/, the input formats of tests/fuzz/fuzz-frames.c,
fuzz-handshake.c and fuzz-discard.c (see each file's top comment). A
stream longer than 48 KiB is cut at frame boundaries into its head and
its tail (the bulk stream's marks are at its end), so that the seeds stay
small enough for libFuzzer to mutate quickly.
"""
import os
import struct
import sys

MODES = {"stop-copy": 0, "pre": 1, "post": 2, "hybrid": 3}
STREAMS = {("control", "s2d"): 0, ("control", "d2s"): 1, ("bulk", "s2d"): 2,
           ("urgent", "s2d"): 3, ("urgent", "d2s"): 4}
LIMIT = 48 << 10


def frames(data):
    out, off = [], 0
    while len(data) - off >= 8:
        length = struct.unpack_from("<I", data, off)[0]
        if len(data) - off < 8 + length:
            break
        out.append(data[off:off + 8 + length])
        off += 8 + length
    return out


def cut(fr):
    """Head and tail of a frame list, each at most LIMIT bytes."""
    total = sum(map(len, fr))
    if total <= LIMIT:
        return [b"".join(fr)]
    head, n = [], 0
    for f in fr:
        if n + len(f) > LIMIT:
            break
        head.append(f)
        n += len(f)
    tail, n = [], 0
    for f in reversed(fr):
        if n + len(f) > LIMIT:
            break
        tail.insert(0, f)
        n += len(f)
    return [b"".join(head), b"".join(tail)]


def load(rec):
    streams = {}
    for name in sorted(os.listdir(rec)):
        if not name.endswith(".bin"):
            continue
        num, channel, direction = name[:-4].split("-")
        if num not in ("00", "01", "02"):
            continue    # connections of a recovery or a resolution
        data = open(os.path.join(rec, name), "rb").read()
        greeting = data[:16] if direction == "s2d" else b""
        streams[(channel, direction)] = (greeting, data[len(greeting):])
    return streams


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    out = sys.argv[1]
    for arg in sys.argv[2:]:
        mode, _, rec = arg.partition(":")
        streams = load(rec)
        for (channel, direction), (greeting, body) in streams.items():
            sel = STREAMS[(channel, direction)] | MODES[mode] << 3 | 0x20
            for i, part in enumerate(cut(frames(body))):
                write("%s/frames/%s-%s-%s-%d" % (out, mode, channel, direction, i),
                      bytes([sel]) + part)
        g, ctl = streams[("control", "s2d")]
        hs = b"".join(frames(ctl)[:3]) + streams[("bulk", "s2d")][0] + \
            streams[("urgent", "s2d")][0]
        write("%s/handshake/%s-destination" % (out, mode), bytes([0]) + g + hs)
        write("%s/handshake/%s-source" % (out, mode),
              bytes([1]) + b"".join(frames(streams[("control", "d2s")][1])[:2]))
        if mode == "hybrid":
            write("%s/discard/%s-control" % (out, mode), bytes([1]) + ctl)


if __name__ == "__main__":
    main()
