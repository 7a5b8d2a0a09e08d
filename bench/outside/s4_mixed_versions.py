#!/usr/bin/env python3
"""Scenario 4: two binaries that speak different protocol versions, both ways, through the fault
proxy: `serve` of binary A and `send` of binary B (and then B's serve with A's send), 20,000
lines through a link cut every 16-256 KB; the lines out must equal the lines in, and send must
exit 0. With A a version-1-only build and B a version-2 build this checks that a version-2 peer
still speaks version 1 with a real version-1 implementation, in both roles.
usage: s4_mixed_versions.py A B   (labels: NEW, or any X with STEADFAST_X=/path/to/steadfast)"""
import re, subprocess, sys, time, atexit
from common import *

atexit.register(kill_all)
N = 20_000


def run(serve_label, send_label):
    tag = f"s4-serve{serve_label}-send{send_label}"
    srv, addr, sout, serr = start_server(BINS[serve_label], [], tag)
    chaos_err = f"{OUT}/{tag}.chaos.stderr"
    chaos_out = f"{OUT}/{tag}.chaos.stdout"
    chaos = start([BINS["NEW"], "chaos", "--listen", "127.0.0.1:0", "--upstream", addr,
                   "--seed", "4", "--min-bytes", "16384", "--max-bytes", "262144"],
                  stdout=open(chaos_out, "wb"), stderr=open(chaos_err, "wb"))
    proxy = None
    for _ in range(500):
        m = re.search(r"chaos proxy on (\S+)", open(chaos_err).read())
        if m:
            proxy = m.group(1)
            break
        time.sleep(0.02)
    assert proxy, "the proxy did not start"
    lines = "".join(f"line {i} of {N}, {'x' * (i % 3000)}\n" for i in range(N))
    inp = f"{OUT}/{tag}.in"
    open(inp, "w").write(lines)
    send_err = f"{OUT}/{tag}.send.stderr"
    cmd = [BINS[send_label], "send", proxy, "--timeout", "120"]
    rc = subprocess.run(cmd, stdin=open(inp, "rb"), stdout=subprocess.DEVNULL,
                        stderr=open(send_err, "wb")).returncode
    took, how = term_and_time(srv)
    chaos.kill()
    chaos.wait()
    out = open(sout).read()
    cuts = sum(1 for l in open(chaos_out) if l.startswith("fault:"))
    same = out == lines
    print(f"[{tag}] send rc={rc} ({last_line(send_err)!r}); serve {how}; {cuts} cuts; "
          f"lines out {'==' if same else '!='} lines in ({out.count(chr(10))} of {N})", flush=True)
    return rc == 0 and same and cuts > 10


a, b = sys.argv[1], sys.argv[2]
ok = run(a, b) & run(b, a)
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
