#!/usr/bin/env python3
"""Scenario 1: serve --echo with a client (send) that never reads what it is sent.
usage: s1_echo_hog.py OLD|NEW"""
import subprocess, sys, time, atexit
from common import *

which = sys.argv[1]
B = BINS[which]
tag = f"s1-{which}"
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0  # before the second send
if DELAY != 1.0:
    tag += f"-d{DELAY}"
atexit.register(kill_all)

hog_in = f"{OUT}/s1.hog.in"
other_in = f"{OUT}/s1.other.in"
with open(hog_in, "w") as f:
    f.writelines(f"hog {i}\n" for i in range(1, 50001))
with open(other_in, "w") as f:
    f.writelines(f"other {i}\n" for i in range(1, 1001))

srv, addr, sout, serr = start_server(B, ["--echo"], tag)

hog_cmd = [B, "send", addr, "--timeout", "60"]
hog_err = f"{OUT}/{tag}.hog.stderr"
t_hog = time.monotonic()
hog = start(hog_cmd, stdin=open(hog_in, "rb"), stdout=subprocess.DEVNULL,
            stderr=open(hog_err, "wb"))
print(f"[{tag}] $ {' '.join(hog_cmd)} < {hog_in} &   (50,000 lines)", flush=True)
time.sleep(DELAY)

oth_cmd = [B, "send", addr, "--timeout", "20"]
oth_err = f"{OUT}/{tag}.other.stderr"
t0 = time.monotonic()
oth = start(oth_cmd, stdin=open(other_in, "rb"), stdout=subprocess.DEVNULL,
            stderr=open(oth_err, "wb"))
print(f"[{tag}] $ {' '.join(oth_cmd)} < {other_in}   (1,000 lines)", flush=True)
try:
    oth.wait(timeout=30)
except subprocess.TimeoutExpired:
    oth.kill(); oth.wait()
    print(f"[{tag}] second send did not end within 30 s; killed")
t_oth = time.monotonic() - t0


def count(prefix):
    with open(sout, "rb") as f:
        return sum(1 for l in f if l.startswith(prefix))


others = count(b"other ")
hogs_at_other = count(b"hog ")
print(f"[{tag}] second send: rc={oth.returncode} after {t_oth:.1f} s; "
      f"stderr last line: {last_line(oth_err)!r}")
print(f"[{tag}] 'other' lines on serve stdout: {others} (distinct: "
      f"{len(set(l for l in open(sout, 'rb') if l.startswith(b'other ')))}); "
      f"'hog' lines so far: {hogs_at_other}", flush=True)

try:
    hog.wait(timeout=75)
except subprocess.TimeoutExpired:
    hog.kill(); hog.wait()
    print(f"[{tag}] hog did not end within 75 s; killed")
t_h = time.monotonic() - t_hog
print(f"[{tag}] hog: rc={hog.returncode} after {t_h:.1f} s; stderr last line: "
      f"{last_line(hog_err)!r}; 'hog' lines on serve stdout: {count(b'hog ')}", flush=True)

secs, how = term_and_time(srv, 15)
print(f"[{tag}] SIGTERM -> serve: {how} after {secs:.2f} s", flush=True)
print(f"[{tag}] serve stderr last line: {last_line(serr)!r}")
print(f"[{tag}] RESULT other_rc={oth.returncode} other_lines={others} hog_rc={hog.returncode} "
      f"term_s={secs:.2f} term={how!r}")
