#!/usr/bin/env python3
"""Scenario 3: handshake, then PING frames as fast as possible, never reading.
usage: s3_pong_flood.py OLD|NEW [seconds]"""
import socket, struct, sys, threading, time, atexit
from common import *

which = sys.argv[1]
FLOOD_S = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
RSS_CAP_KIB = int(1.5 * 1024 * 1024)
B = BINS[which]
tag = f"s3-{which}"
atexit.register(kill_all)

srv, addr, sout, serr = start_server(B, [], tag)
host, port = addr.rsplit(":", 1)

# HELLO, new session (PROTOCOL.md §4.1; identical in both trees): 36-byte payload.
payload = (b"STFD" + struct.pack(">HH", 1, 1)
           + struct.pack(">IIII", 65536, 16 << 20, 8192, 8 << 20)
           + struct.pack(">Q", 1)
           + b"\x00" + b"\x00\x00" + b"\x00")
assert len(payload) == 36
hello = struct.pack(">IBB", len(payload), 0x01, 0) + payload
assert hello.hex() == ("000000240100" "53544644" "00010001" "00010000" "01000000"
                       "00002000" "00800000" "0000000000000001" "00" "0000" "00")

s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(hello)


def recv_exact(n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise SystemExit(f"[{tag}] server closed during handshake")
        buf += b
    return buf


hdr = recv_exact(6)
ln, ty, fl = struct.unpack(">IBB", hdr)
body = recv_exact(ln)
if ty != 0x02:
    raise SystemExit(f"[{tag}] expected WELCOME, got type {ty:#x} len {ln}: {body!r}")
ver = struct.unpack(">H", body[:2])[0]
print(f"[{tag}] WELCOME v{ver}, session {body[2:10].hex()}, payload {ln} bytes", flush=True)
# The client's ACK after WELCOME (§4.4 rule A): ACK payload 16 bytes (two u64 positions).
# Not needed by the server; we send PINGs only, as the brief asks.

# One chunk of PING frames (6-byte header + 8-byte value), values counting up.
N = 65536
chunk = b"".join(struct.pack(">IBBQ", 8, 0x20, 0, i) for i in range(N))
mv = memoryview(chunk)
s.settimeout(0.2)
stop = threading.Event()
sent = [0]
err = [None]


def flood():
    off = 0
    while not stop.is_set():
        try:
            n = s.send(mv[off:])
        except socket.timeout:
            continue
        except OSError as e:
            err[0] = repr(e)
            return
        sent[0] += n
        off = (off + n) % len(chunk)


pid = srv.pid
base = proc_status(pid)
print(f"[{tag}] serve pid {pid} before flood: VmRSS {base.get('VmRSS')} VmHWM {base.get('VmHWM')}",
      flush=True)
t = threading.Thread(target=flood, daemon=True)
t0 = time.monotonic()
t.start()
peak_rss, samples, why = 0, [], "time"
while True:
    el = time.monotonic() - t0
    st = proc_status(pid)
    if not st:
        why = "serve exited"
        break
    r = kib(st.get("VmRSS"))
    peak_rss = max(peak_rss, r)
    if int(el * 2) > len(samples) - 1:
        samples.append((round(el, 1), r // 1024, sent[0] >> 20))
    if r > RSS_CAP_KIB:
        why = "VmRSS cap 1.5 GiB"
        break
    if el >= FLOOD_S:
        break
    if err[0]:
        why = f"send error {err[0]}"
        break
    time.sleep(0.02)
el = time.monotonic() - t0
stop.set()
t.join(2)
st = proc_status(pid)
hwm = kib(st.get("VmHWM")) if st else 0
print(f"[{tag}] samples (s, VmRSS MiB, PINGs MiB written): {samples}")
print(f"[{tag}] stopped after {el:.2f} s ({why}); PINGs written: {sent[0]/2**20:.1f} MiB "
      f"({sent[0]//14:,} frames); serve VmHWM {hwm/1024:.1f} MiB, VmRSS now "
      f"{kib(st.get('VmRSS'))/1024 if st else 0:.1f} MiB; flood error: {err[0]}", flush=True)
s.close()
secs, how = term_and_time(srv, 15)
print(f"[{tag}] SIGTERM -> serve: {how} after {secs:.2f} s")
print(f"[{tag}] RESULT sent_mib={sent[0]/2**20:.1f} vmhwm_mib={hwm/1024:.1f} stop={why!r}")
