#!/usr/bin/env python3
"""faultproxy - a fault-injecting TCP proxy for umig's failure tests.

It sits between a source and a destination on loopback, forwards every
connection, recognises each one's channel from its greeting (control,
bulk, urgent), parses every channel's frames, and when a rule matches it
cuts, resets, black-holes, stalls or corrupts the link:

    faultproxy.py [--lifetime=SECS] [--record=DIR] LISTEN_PORT UPSTREAM_PORT [RULE ...]

    RULE = CHANNEL:DIRECTION:TRIGGER:ACTION
      CHANNEL    control | bulk | urgent | any
      DIRECTION  s2d (source to destination) | d2s
      TRIGGER    type=N    a frame of that type, before it
                 bytes=N   once N bytes went that way on the channel
                           (on frames: the first whole frame past N)
      ACTION     cut           close both ends of every connection
                 reset         the same with a TCP reset
                 drop=SECS     a partition: a control frame is lost, and
                               every connection's bytes are held for
                               SECS (new connections are accepted and
                               reach the destination only after it),
                               then forwarding resumes
                 stall=SECS    hold this connection's bytes for SECS
                 garble        corrupt the frame that triggered the rule
                               and forward it: its first payload field
                               (a run's first page, a mark, a page
                               number) becomes all ones, or for a frame
                               with less than 8 payload bytes its type
                               becomes 0xffff (unknown)
                 garble=type   set the frame's type to 0xffff
                 garble=len    add one to the frame's length field
                               (the payload stays as it was)

With --record=DIR every connection's bytes, each direction as it arrived
(before any rule), are written to DIR/NN-CHANNEL-DIRECTION.bin (NN: the
connection's number, in accept order), for tests that replay a real
stream.

Each rule fires once.  It prints "faultproxy: ready" when it listens and
one line per rule that fires; it exits on SIGTERM or after --lifetime
seconds (default 300), whichever comes first, so a test that dies cannot
leave it behind for long.
"""
import os
import signal
import socket
import struct
import sys
import threading
import time

CHANNELS = {0: "control", 1: "bulk", 2: "urgent"}
lock = threading.Lock()
partition_until = 0.0
conns = []          # every live socket, for cut/reset/partition
rules = []
record_dir = None
nconn = [0]


def log(msg):
    print("faultproxy: " + msg, flush=True)


class Rule:
    def __init__(self, text):
        self.text = text
        ch, direction, trigger, action = text.split(":")
        self.channel, self.direction = ch, direction
        kind, _, value = trigger.partition("=")
        self.kind, self.value = kind, int(value)
        self.action, _, arg = action.partition("=")
        self.arg = arg
        self.secs = float(arg) if arg and self.action != "garble" else 0.0
        self.fired = False

    def matches(self, channel, direction, frame_type, nbytes):
        if self.fired or direction != self.direction:
            return False
        if self.channel not in ("any", channel):
            return False
        if self.kind == "type":
            return frame_type == self.value
        return nbytes >= self.value


def close_all(reset):
    with lock:
        for s in conns:
            try:
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        conns.clear()


def partitioned():
    return time.monotonic() < partition_until


def fire(rule, channel):
    """Apply a rule; True if the frame that triggered it is swallowed."""
    global partition_until
    rule.fired = True
    log("rule %s fired" % rule.text)
    if rule.action in ("cut", "reset"):
        close_all(rule.action == "reset")
        return True
    if rule.action == "drop":
        partition_until = time.monotonic() + rule.secs
        # a whole control frame is lost; other bytes are held, as TCP would
        return channel == "control"
    if rule.action == "stall":
        time.sleep(rule.secs)
    return False


def garble(rule, frame):
    """The frame with the corruption the rule asks for."""
    f = bytearray(frame)
    length, ftype = struct.unpack_from("<IH", f, 0)
    what = rule.arg
    if what == "len":
        struct.pack_into("<I", f, 0, length + 1)
    elif what == "type" or length < 8:
        struct.pack_into("<H", f, 4, 0xFFFF)
    else:
        f[8:16] = b"\xff" * 8
    log("garbled a frame of type %d (%d bytes)" % (ftype, length))
    return bytes(f)


class Pipe:
    """One direction of one connection."""

    def __init__(self, src, dst, direction, state):
        self.src, self.dst, self.direction, self.state = src, dst, direction, state
        self.buf = b""
        self.nbytes = 0
        self.rec = None
        self.raw = b""          # received before the channel is known

    def record(self, data):
        if record_dir is None:
            return
        if self.rec is None:
            if self.state.get("channel") is None:
                self.raw += data
                return
            name = "%02d-%s-%s.bin" % (self.state["n"], self.state["channel"], self.direction)
            self.rec = open(os.path.join(record_dir, name), "wb")
            data, self.raw = self.raw + data, b""
        self.rec.write(data)
        self.rec.flush()

    def send(self, data):
        # black-holed while the partition lasts; bounded wait in small steps
        while partitioned():
            time.sleep(0.05)
        if not self.state.get("dead"):
            self.dst.sendall(data)

    def handle(self, data):
        self.buf += data
        if self.state.get("channel") is None:
            if self.direction != "s2d" or len(self.buf) < 16:
                if self.direction == "d2s":
                    self.record(self.buf)
                    self.send(self.buf)
                    self.buf = b""
                return
            self.state["channel"] = CHANNELS.get(struct.unpack_from("<H", self.buf, 6)[0], "?")
            self.record(self.buf[:16])
            self.send(self.buf[:16])
            self.nbytes += 16
            self.buf = self.buf[16:]
            if not self.buf:
                return
            data = self.buf
        self.record(data)
        channel = self.state["channel"]
        # whole frames go on; an offset, not a copy per frame (bulk has many small ones)
        off, out = 0, []
        while len(self.buf) - off >= 8:
            length, ftype = struct.unpack_from("<IH", self.buf, off)
            if len(self.buf) - off < 8 + length:
                break
            frame = self.buf[off:off + 8 + length]
            off += 8 + length
            self.nbytes += len(frame)
            swallow = False
            for r in rules:
                if r.matches(channel, self.direction, ftype, self.nbytes):
                    if out:
                        self.send(b"".join(out))
                        out = []
                    if fire(r, channel):
                        swallow = True
                    elif r.action == "garble":
                        frame = garble(r, frame)
            if not swallow:
                out.append(frame)
        self.buf = self.buf[off:]
        if out:
            self.send(b"".join(out))

    def run(self):
        try:
            while True:
                data = self.src.recv(65536)
                if not data:
                    break
                self.handle(data)
        except OSError:
            pass
        self.state["dead"] = True
        for s in (self.src, self.dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(client, upstream_port):
    # a connection made during a partition reaches nobody until it ends
    while partitioned():
        time.sleep(0.05)
    try:
        up = socket.create_connection(("127.0.0.1", upstream_port), timeout=5)
        up.settimeout(None)
    except OSError:
        client.close()
        return
    with lock:
        conns.extend([client, up])
    with lock:
        state = {"channel": None, "n": nconn[0]}
        nconn[0] += 1
    for a, b, d in ((client, up, "s2d"), (up, client, "d2s")):
        threading.Thread(target=Pipe(a, b, d, state).run, daemon=True).start()


def main():
    args = sys.argv[1:]
    lifetime = 300.0
    global record_dir
    while args and args[0].startswith("--"):
        opt, _, val = args.pop(0).partition("=")
        if opt == "--lifetime":
            lifetime = float(val)
        elif opt == "--record":
            record_dir = val
            os.makedirs(val, exist_ok=True)
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    listen_port, upstream_port = int(args[0]), int(args[1])
    rules.extend(Rule(r) for r in args[2:])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Timer(lifetime, lambda: os._exit(0)).start()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(16)
    log("ready")
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c, upstream_port), daemon=True).start()


if __name__ == "__main__":
    main()
