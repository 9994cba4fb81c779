#!/usr/bin/env python3
"""faultproxy - a fault-injecting TCP proxy for umig's failure tests.

It sits between a source and a destination on loopback, forwards every
connection, recognises each one's channel from its greeting (control,
bulk, urgent), parses the control channel's frames, and when a rule
matches it cuts, resets, black-holes or stalls the link:

    faultproxy.py LISTEN_PORT UPSTREAM_PORT [RULE ...]

    RULE = CHANNEL:DIRECTION:TRIGGER:ACTION
      CHANNEL    control | bulk | urgent | any
      DIRECTION  s2d (source to destination) | d2s
      TRIGGER    type=N    a frame of that type, before it (on bulk and
                           urgent, the channel is parsed into frames only
                           when a type rule names it)
                 bytes=N   once N bytes went that way on the channel
      ACTION     cut           close both ends of every connection
                 reset         the same with a TCP reset
                 drop=SECS     a partition: a control frame is lost, and
                               every connection's bytes are held for
                               SECS (new connections are accepted and
                               reach the destination only after it),
                               then forwarding resumes
                 stall=SECS    hold this connection's bytes for SECS
                 flip          flip one bit in the middle of the frame's
                               payload (type triggers), or of the byte
                               at offset N (bytes triggers); the
                               corruption TCP's checksum can miss

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


def log(msg):
    print("faultproxy: " + msg, flush=True)


class Rule:
    def __init__(self, text):
        self.text = text
        ch, direction, trigger, action = text.split(":")
        self.channel, self.direction = ch, direction
        kind, _, value = trigger.partition("=")
        self.kind, self.value = kind, int(value)
        self.action, _, secs = action.partition("=")
        self.secs = float(secs) if secs else 0.0
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


def flip(data, at):
    data = bytearray(data)
    data[at] ^= 0x10
    return bytes(data)


def framed(channel):
    """Parse this channel into frames: control always, others when a type rule names them."""
    return channel == "control" or any(
        r.kind == "type" and r.channel in ("any", channel) for r in rules)


class Pipe:
    """One direction of one connection."""

    def __init__(self, src, dst, direction, state):
        self.src, self.dst, self.direction, self.state = src, dst, direction, state
        self.buf = b""
        self.nbytes = 0

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
                    self.send(self.buf)
                    self.buf = b""
                return
            self.state["channel"] = CHANNELS.get(struct.unpack_from("<H", self.buf, 6)[0], "?")
            self.send(self.buf[:16])
            self.nbytes += 16
            self.buf = self.buf[16:]
        channel = self.state["channel"]
        if not framed(channel):
            start = self.nbytes
            self.nbytes += len(self.buf)
            for r in rules:
                if r.matches(channel, self.direction, None, self.nbytes):
                    if fire(r, channel):
                        self.buf = b""
                        return
                    if r.action == "flip":
                        self.buf = flip(self.buf, max(0, r.value - start))
            self.send(self.buf)
            self.buf = b""
            return
        while len(self.buf) >= 8:
            length, ftype = struct.unpack_from("<IH", self.buf, 0)
            if len(self.buf) < 8 + length:
                return
            frame, self.buf = self.buf[:8 + length], self.buf[8 + length:]
            self.nbytes += len(frame)
            swallow = False
            for r in rules:
                if r.matches(channel, self.direction, ftype, self.nbytes):
                    if fire(r, channel):
                        swallow = True
                    elif r.action == "flip" and length:
                        frame = flip(frame, 8 + length // 2)
            if not swallow:
                self.send(frame)

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
    state = {"channel": None}
    for a, b, d in ((client, up, "s2d"), (up, client, "d2s")):
        threading.Thread(target=Pipe(a, b, d, state).run, daemon=True).start()


def main():
    args = sys.argv[1:]
    lifetime = 300.0
    if args and args[0].startswith("--lifetime="):
        lifetime = float(args.pop(0).split("=", 1)[1])
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
