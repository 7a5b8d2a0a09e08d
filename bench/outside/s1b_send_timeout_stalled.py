#!/usr/bin/env python3
"""Side check: does `send --timeout 5` give up when the server stops taking messages?
serve's stdout is a pipe nobody reads, so serve stalls on its first large write; send has
50,000 lines (more than the default 8,192-message window).  usage: s1b_... OLD|NEW"""
import os, subprocess, sys, time, atexit, re
from common import *

which = sys.argv[1]
B = BINS[which]
tag = f"s1b-{which}"
atexit.register(kill_all)
r, w = os.pipe()  # never read: serve blocks once 64 KiB are buffered
err_path = f"{OUT}/{tag}.serve.stderr"
args = [B, "serve", "--listen", "127.0.0.1:0"]
srv = start(args, stdout=w, stderr=open(err_path, "wb"), stdin=subprocess.DEVNULL)
os.close(w)
addr = None
for _ in range(500):
    m = re.search(rb"listening on (\S+)", open(err_path, "rb").read())
    if m:
        addr = m.group(1).decode(); break
    time.sleep(0.02)
print(f"[{tag}] $ {' '.join(args)} > (pipe never read)  -> {addr}")
cmd = [B, "send", addr, "--timeout", "5"]
serr = f"{OUT}/{tag}.send.stderr"
t0 = time.monotonic()
p = start(cmd, stdin=open(f"{OUT}/s1.hog.in", "rb"), stdout=subprocess.DEVNULL, stderr=open(serr, "wb"))
print(f"[{tag}] $ {' '.join(cmd)} < out/s1.hog.in   (50,000 lines)")
try:
    p.wait(timeout=20)
    print(f"[{tag}] send rc={p.returncode} after {time.monotonic()-t0:.1f} s: {last_line(serr)!r}")
except subprocess.TimeoutExpired:
    print(f"[{tag}] send still running {time.monotonic()-t0:.1f} s after start with --timeout 5; killing")
    p.kill(); p.wait()
os.close(r)
secs, how = term_and_time(srv, 15)
print(f"[{tag}] SIGTERM -> serve: {how} after {secs:.2f} s")
