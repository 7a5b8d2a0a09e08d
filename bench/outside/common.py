"""Shared helpers for the steadfast OLD/NEW checks (stdlib only)."""
import os, re, signal, subprocess, sys, time

# A label names a binary: STEADFAST_<LABEL> (e.g. STEADFAST_OLD=/path/to/steadfast), or
# NEW = this checkout's release build.
_HERE = os.path.dirname(os.path.abspath(__file__))


class _Bins(dict):
    def __missing__(self, label):
        path = os.environ.get(f"STEADFAST_{label}")
        if path:
            return path
        if label == "NEW":
            return os.path.join(_HERE, "..", "..", "target", "release", "steadfast")
        sys.exit(f"set STEADFAST_{label} to the binary to check")


BINS = _Bins()
OUT = os.environ.get("STEADFAST_CHECKS_OUT", "/tmp/steadfast-checks")
os.makedirs(OUT, exist_ok=True)

_procs = []  # every process we start, killed at exit


def start(args, stdout=None, stderr=None, stdin=None):
    p = subprocess.Popen(args, stdout=stdout, stderr=stderr, stdin=stdin)
    _procs.append(p)
    return p


def start_server(bin_path, extra, tag):
    """Starts `serve --listen 127.0.0.1:0 EXTRA`, stdout and stderr each into a file; waits
    (10 s at most) for 'listening on ADDR' and returns (proc, addr, out_path, err_path)."""
    out_path = f"{OUT}/{tag}.serve.stdout"
    err_path = f"{OUT}/{tag}.serve.stderr"
    fo = open(out_path, "wb")
    fe = open(err_path, "wb")
    args = [bin_path, "serve", "--listen", "127.0.0.1:0"] + extra
    p = start(args, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    addr = None
    while time.monotonic() < deadline:
        with open(err_path, "rb") as f:
            m = re.search(rb"listening on (\S+)", f.read())
        if m:
            addr = m.group(1).decode()
            break
        if p.poll() is not None:
            break
        time.sleep(0.02)
    if addr is None:
        kill_all()
        sys.exit(f"server did not print its address; see {err_path}")
    print(f"[{tag}] $ {' '.join(args)}  -> {addr} (pid {p.pid})", flush=True)
    return p, addr, out_path, err_path


def last_line(path):
    try:
        with open(path, "rb") as f:
            lines = [l for l in f.read().decode(errors="replace").splitlines() if l.strip()]
        return lines[-1] if lines else ""
    except FileNotFoundError:
        return ""


def term_and_time(p, cap=15.0):
    """SIGTERM, then wait up to `cap` seconds; SIGKILL after. Returns (seconds, how)."""
    if p.poll() is not None:
        return 0.0, f"already exited rc={p.returncode}"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=cap)
        return time.monotonic() - t0, f"exited rc={p.returncode}"
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)
        return time.monotonic() - t0, f"did NOT exit within {cap:.0f} s; SIGKILLed"


def kill_all():
    for p in _procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass


def proc_status(pid):
    d = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k] = v.strip()
    except FileNotFoundError:
        pass
    return d


def kib(v):
    return int(v.split()[0]) if v else 0
