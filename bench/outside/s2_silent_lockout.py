#!/usr/bin/env python3
"""Scenario 2: 1,100 silent TCP connections from 127.0.0.2, then a normal send from 127.0.0.1.
usage: s2_silent_lockout.py OLD|NEW"""
import errno, resource, socket, subprocess, sys, time, atexit
from common import *

which = sys.argv[1]
B = BINS[which]
tag = f"s2-{which}"
atexit.register(kill_all)

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < 4096:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))

srv, addr, sout, serr = start_server(B, [], tag)
host, port = addr.rsplit(":", 1)
port = int(port)

socks, failed = [], 0
t0 = time.monotonic()
deadline = t0 + 30
for i in range(1100):
    if time.monotonic() > deadline:
        print(f"[{tag}] connect loop hit its 30 s bound at {i}")
        break
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.bind(("127.0.0.2", 0))
        s.connect((host, port))
        s.setblocking(False)  # so the census below never waits
        socks.append(s)
    except OSError as e:
        failed += 1
        s.close()
t_conn = time.monotonic() - t0
print(f"[{tag}] opened {len(socks)} silent connections from 127.0.0.2 in {t_conn:.2f} s "
      f"({failed} failed)", flush=True)
time.sleep(0.5)


def census():
    """How the silent sockets look from the client side (non-blocking peek)."""
    open_, data, closed, reset = 0, 0, 0, 0
    for s in socks:
        try:
            b = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if b:
                data += 1
            else:
                closed += 1
        except BlockingIOError:
            open_ += 1
        except ConnectionResetError:
            reset += 1
        except OSError:
            reset += 1
    return f"silent-open={open_} got-bytes(REJECT?)={data} closed(FIN)={closed} reset={reset}"


print(f"[{tag}] before send: {census()}", flush=True)

inp = f"{OUT}/s2.in"
with open(inp, "w") as f:
    f.writelines(f"line {i}\n" for i in range(1, 11))
cmd = [B, "send", addr, "--timeout", "10"]
err = f"{OUT}/{tag}.send.stderr"
t1 = time.monotonic()
p = start(cmd, stdin=open(inp, "rb"), stdout=subprocess.DEVNULL, stderr=open(err, "wb"))
print(f"[{tag}] $ {' '.join(cmd)} < {inp}   (10 lines; {time.monotonic()-t0:.2f} s after the "
      f"first silent connect)", flush=True)
try:
    p.wait(timeout=20)
except subprocess.TimeoutExpired:
    p.kill(); p.wait()
    print(f"[{tag}] send did not end within 20 s; killed")
dt = time.monotonic() - t1
print(f"[{tag}] send: rc={p.returncode} after {dt:.2f} s; stderr:")
print(open(err, errors="replace").read().rstrip())
print(f"[{tag}] after send: {census()}")
with open(sout, "rb") as f:
    got = sum(1 for l in f if l.startswith(b"line "))
print(f"[{tag}] lines on serve stdout: {got}")
for s in socks:
    s.close()
secs, how = term_and_time(srv, 15)
print(f"[{tag}] SIGTERM -> serve: {how} after {secs:.2f} s")
print(f"[{tag}] RESULT send_rc={p.returncode} send_s={dt:.2f} lines={got}")
