#!/usr/bin/env python3
"""replay - play a recorded migration to a fresh destination, mutated.

    replay.py [options] RECORDING_DIR PORT

RECORDING_DIR is what `tests/faultproxy.py --record=DIR` wrote for one real
migration; the source's side of each channel (NN-CHANNEL-s2d.bin) is sent
to a `umig incoming` listening on 127.0.0.1:PORT, as a source would: the
control connection first, the page channels once the destination has
answered the handshake (or given up on it). After its recorded bytes the
control channel goes on with a PING every 0.1 s for --ping-secs seconds,
so that a destination whose guest runs on keeps hearing a live source;
then everything is held open, silent, until the destination closes
control or --lifetime seconds pass. What the destination sends is read
and dropped.

Mutations (--mutate, any number; frames are numbered from 0 per channel,
after the greeting; FRAME is an index or TYPE#K, the K-th frame of that
type, e.g. 34#0 the first MARK):
  CH:cut=N            close CH after N bytes of its frames (N < 0: all
                      but the last -N bytes)
  CH:stall=N          send only N bytes of CH's frames, then nothing (held
                      open: no more PINGs either)
  CH:field=FRAME:NAME=VALUE   set a field of a frame: len, type, flags
                      (header), or in the payload pfn (u64 at 0), count
                      (u32 at 8), mark (u32 at 0), u32@OFF / u64@OFF
  CH:flip=FRAME:BIT   flip bit BIT of the frame's header and first payload
                      fields (BIT < 8*(8+16)), never of page data
  CH:insert=FRAME:HEX insert raw bytes (a whole frame) before FRAME
  CH:greeting=HEX     replace the channel's 16-byte greeting
  random=SEED         one mutation chosen from SEED (printed), of the kinds
                      above, that a correct receiver can detect: cuts and
                      stalls anywhere; a frame's length or type; a run's
                      page or count, a mark, a control field set to a
                      value outside its range; a frame out of its place.
                      Excluded until the stream has an integrity check,
                      because they cannot be told from a real stream: page
                      data and machine-state bytes, runs moved to other
                      pages inside RAM, valid marks moved, frames dropped
                      or stale copies of page frames replayed
CH is control, bulk or urgent. It prints "replay: MUTATION" for each.
"""
import ctypes
import os
import random
import socket
import struct
import sys
import threading
import time

CHANNELS = ("control", "bulk", "urgent")
opts = {"ping_secs": 6.0, "lifetime": 30.0}


def log(msg):
    print("replay: " + msg, flush=True)


def parse(data):
    """greeting, [frame bytes], trailing bytes."""
    greeting, off, frames = data[:16], 16, []
    while len(data) - off >= 8:
        length = struct.unpack_from("<I", data, off)[0]
        if len(data) - off < 8 + length:
            break
        frames.append(bytearray(data[off:off + 8 + length]))
        off += 8 + length
    return bytearray(greeting), frames, data[off:]


def load(rec):
    streams = {}
    for name in sorted(os.listdir(rec)):
        if name.endswith("-s2d.bin"):
            channel = name.split("-")[1]
            if channel in CHANNELS and channel not in streams:
                with open(os.path.join(rec, name), "rb") as f:
                    streams[channel] = parse(f.read())
    return streams


_xxh = []


def xxh3(data):
    """XXH3-64, from the system's libxxhash (umig's own dependency)."""
    if not _xxh:
        lib = ctypes.CDLL("libxxhash.so.0")
        lib.XXH3_64bits.restype = ctypes.c_uint64
        lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        _xxh.append(lib)
    return _xxh[0].XXH3_64bits(data, len(data))


def redigest(frame):
    """A hostile peer recomputes the unkeyed frame digest (FEAT_DIGEST) after
    its edit, so the edit reaches the decoders; a frame whose length field
    no longer matches its bytes is left as it is."""
    length, _, flags = struct.unpack_from("<IHH", frame, 0)
    if not flags & 1 or length < 8 or len(frame) != 8 + length:
        return
    struct.pack_into("<Q", frame, len(frame) - 8, xxh3(bytes(frame[:len(frame) - 8])))


def digested(frames):
    return any(struct.unpack_from("<H", f, 6)[0] & 1 for f in frames)


def add_digest(frame):
    """An inserted frame, as a digest-speaking sender would frame it."""
    length, ftype, flags = struct.unpack_from("<IHH", frame, 0)
    frame[:] = struct.pack("<IHH", length + 8, ftype, flags | 1) + frame[8:] + bytes(8)
    redigest(frame)


def frame_index(frames, spec):
    if "#" in spec:
        ftype, k = (int(x) for x in spec.split("#"))
        hits = [i for i, f in enumerate(frames) if struct.unpack_from("<H", f, 4)[0] == ftype]
        return hits[k]
    return int(spec)


FIELDS = {"len": (0, "<I"), "type": (4, "<H"), "flags": (6, "<H"),
          "pfn": (8, "<Q"), "count": (16, "<I"), "mark": (8, "<I")}


def set_field(frame, name, value):
    if name.startswith("u32@") or name.startswith("u64@"):
        off, fmt = 8 + int(name[4:]), "<I" if name[1] == "3" else "<Q"
    else:
        off, fmt = FIELDS[name]
    struct.pack_into(fmt, frame, off, value & ((1 << (8 * struct.calcsize(fmt))) - 1))


def mutate(streams, spec, plan):
    ch, _, rest = spec.partition(":")
    kind, _, arg = rest.partition("=")
    greeting, frames, tail = streams[ch]
    if kind in ("cut", "stall"):
        n = int(arg)
        plan[ch] = (kind, n if n >= 0 else max(0, sum(map(len, frames)) + n))
    elif kind == "field":
        where, _, assign = arg.partition(":")
        name, _, value = assign.partition("=")
        f = frames[frame_index(frames, where)]
        set_field(f, name, int(value, 0))
        if name not in ("len", "flags"):
            redigest(f)
    elif kind == "flip":
        where, _, bit = arg.partition(":")
        f = frames[frame_index(frames, where)]
        bit = int(bit) % (8 * min(len(f), 24))
        f[bit // 8] ^= 1 << (bit % 8)
        if bit // 8 >= 8 or bit // 8 in (4, 5):   # not the length or the flags
            redigest(f)
    elif kind == "insert":
        where, _, raw = arg.partition(":")
        _, new, rest = parse(bytes(16) + bytes.fromhex(raw))
        if any(digested(fs) for _, fs, _ in streams.values()):
            for f in new:
                add_digest(f)
        at = frame_index(frames, where)
        frames[at:at] = new + ([bytearray(rest)] if rest else [])
    elif kind == "greeting":
        greeting[:] = bytes.fromhex(arg)
    else:
        raise SystemExit("replay: unknown mutation " + spec)
    log(spec if len(spec) < 120 else spec[:100] + "...(%d hex digits)" % len(spec))


# page data and the machine state are data: without an integrity check an
# edit inside them cannot be told from the guest's own bytes (see --help)
DATA = {2, 4, 32, 33, 49}           # STATE, SRC_STATS, PAGES, ZERO, PAGE
RUNS = {32, 33}                     # a run header {u64 pfn, u32 count} first
BAD_PFN = [1 << 40, (1 << 64) - 1, (1 << 32) - 1]


def random_mutation(streams, seed):
    """One structure-aware mutation that a correct receiver can detect."""
    rng = random.Random(seed)
    ch = rng.choice([c for c in CHANNELS if streams.get(c) and streams[c][1]])
    frames = streams[ch][1]
    i = rng.randrange(len(frames))
    f = frames[i]
    length, ftype = struct.unpack_from("<IH", f, 0)
    total = sum(map(len, frames))
    kind = rng.choice(["cut", "stall", "len", "type", "flip", "field", "field", "insert"])
    if kind in ("cut", "stall"):
        return "%s:%s=%d" % (ch, kind, rng.randrange(total))
    if kind == "len":
        value = rng.choice([0, length - 1, length + 1, length + 4096, 0xffffffff,
                            rng.getrandbits(32)])
        return "%s:field=%d:len=%d" % (ch, i, value & 0xffffffff)
    if kind == "type":
        value = rng.choice([0, 0xffff, 6, 35, 50, 99, rng.choice([1, 3, 5, 34, 48, 65, 67])])
        return "%s:field=%d:type=%d" % (ch, i, value)
    if kind == "flip":
        return "%s:flip=%d:%d" % (ch, i, rng.randrange(48))   # length and type
    if kind == "field" and ftype in RUNS:
        name = rng.choice(["pfn", "count"])
        value = rng.choice(BAD_PFN) if name == "pfn" else rng.choice([0, 0xffffffff, 1 << 31])
        return "%s:field=%d:%s=%d" % (ch, i, name, value)
    if kind == "field" and ftype == 49:
        return "%s:field=%d:pfn=%d" % (ch, i, rng.choice(BAD_PFN))
    if kind == "field" and ftype == 34:
        return "%s:field=%d:mark=%d" % (ch, i, rng.choice([0, 4, 0xffffffff]))
    if kind == "field" and ftype not in DATA and length >= 16:
        name = rng.choice(["u32@0", "u32@4", "u64@8"])
        return "%s:field=%d:%s=%d" % (ch, i, name, rng.getrandbits(32 if name[1] == "3" else 64))
    # a frame where it does not belong: a control frame out of its place, or
    # another channel's frame (never a stale copy of page data or state)
    pool = [bytes(x) for x in streams["control"][1]
            if struct.unpack_from("<H", x, 4)[0] not in DATA]
    pool.append(struct.pack("<IHHQ", 8, 48, 0, 1))             # REQ
    pool.append(struct.pack("<IHHII", 8, 34, 0, 7, 1))         # MARK 7
    return "%s:insert=%d:%s" % (ch, i, rng.choice(pool).hex())


def drain(sock):
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def count_frames(data):
    n, off = 0, 0
    while len(data) - off >= 8:
        length = struct.unpack_from("<I", data, off)[0]
        if len(data) - off < 8 + length:
            break
        n, off = n + 1, off + 8 + length
    return n


def send_channel(sock, greeting, frames, plan, stop):
    """Send one channel; True if it ended normally (the caller may then PING)."""
    data = bytes(greeting) + b"".join(bytes(f) for f in frames)
    kind, limit = plan or (None, None)
    if kind:
        data = data[:16 + limit]
    try:
        sock.sendall(data)
        if kind == "cut":
            # a FIN now: close() alone waits for the reading thread
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    return kind is None


def main():
    args = sys.argv[1:]
    muts = []
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        name, _, val = opt[2:].partition("=")
        if name == "mutate":
            muts.append(val if val else args.pop(0))
        elif name in ("ping-secs", "lifetime"):
            opts[name.replace("-", "_")] = float(val)
        else:
            raise SystemExit(__doc__)
    if len(args) != 2:
        raise SystemExit(__doc__)
    streams = load(args[0])
    port = int(args[1])
    plan = {}
    for m in muts:
        if m.startswith("random="):
            m = random_mutation(streams, int(m[7:]))
        mutate(streams, m, plan)
    deadline = time.monotonic() + opts["lifetime"]
    threading.Timer(opts["lifetime"], lambda: os._exit(0)).start()
    ctl = socket.create_connection(("127.0.0.1", port), timeout=5)
    g, frames, _ = streams["control"]
    # the handshake's frames first; the rest once the page channels are up
    hs = 3 if len(frames) >= 3 and struct.unpack_from("<H", frames[2], 4)[0] == 73 else 2
    ctl_plan = plan.get("control")
    head = bytes(g) + b"".join(bytes(f) for f in frames[:hs])
    if ctl_plan:
        head = head[:16 + ctl_plan[1]]
    ctl.sendall(head)
    ctl.settimeout(0.2)
    got = b""
    for _ in range(30):     # 6 s at most for the destination's answers
        try:
            chunk = ctl.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        got += chunk
        if count_frames(got) >= 2 or (count_frames(got) and struct.unpack_from("<H", got, 4)[0] == 17):
            break
    ctl.settimeout(None)
    socks = []
    for ch in ("bulk", "urgent"):
        if ch not in streams:
            continue
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.settimeout(None)
        except OSError:
            continue
        socks.append(s)
        threading.Thread(target=drain, args=(s,), daemon=True).start()
        cg, cf, _ = streams[ch]
        threading.Thread(target=send_channel, args=(s, cg, cf, plan.get(ch), None),
                         daemon=True).start()
    ok = True
    rest = b"".join(bytes(f) for f in frames[hs:])
    try:
        if ctl_plan:
            rest = rest[:max(0, ctl_plan[1] - (len(head) - 16))]
            ok = False
        ctl.sendall(rest)
        if ctl_plan and ctl_plan[0] == "cut":
            ctl.shutdown(socket.SHUT_RDWR)
    except OSError:
        ok = False
    done = threading.Event()

    def watch():
        drain(ctl)
        done.set()
    threading.Thread(target=watch, daemon=True).start()
    ping = bytearray(struct.pack("<IHH", 0, 67, 0))
    if digested(frames):
        add_digest(ping)
    end_ping = time.monotonic() + opts["ping_secs"]
    while not done.is_set() and time.monotonic() < deadline:
        if ok and time.monotonic() < end_ping:
            try:
                ctl.sendall(bytes(ping))
            except OSError:
                ok = False
        done.wait(0.1)
    os._exit(0)


if __name__ == "__main__":
    main()
