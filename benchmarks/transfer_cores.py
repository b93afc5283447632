"""The copy engine of `inv sync` with cores to spare: node_scripts/transfer.py's plain-TCP
transport (listener + sender, the very script the nodes run) against raw TCP, on one machine
over loopback, with a synthetic model in the page cache.

The simulated cluster (benchmarks/sync_throughput.py) runs both hosts, both SSH ends and the
hashing on the same 2 cores, so there the receiver's sha256 competes with everything else.
This measures the engine where it does not: a machine with more cores (the device tool's 16),
as on a Spark, where each node has 20. Cases, alternated, each repeated:
  raw_tcp_null  one TCP stream, sendfile on the sending side, 1 MiB reads into nothing;
  raw_tcp_disk  the same into one file;
  tcp_<n>       transfer.py send/listen with n streams: written, hashed as written, journaled.
No SSH here (the device has no sshd), so the SSH transport is not measured by this script.
Besides the rate, each case's CPU time (user + system, this process and its children: both
ends) per GB: on a machine shared with other work that moves less than the wall clock.
Every case checks the bytes that arrived (the raw receiver's count, transfer.py's sent and
hashed totals) against the files' and the exit status of both ends: a case that moved less
stops the run with exit status 1 and its name (benchmarks/_checks.py).

    python3 benchmarks/transfer_cores.py [--gb 4] [--files 100] [--repeat 3] [--streams 1,2,4,8]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _checks import expect, expect_ok, fail

HERE = Path(__file__).resolve().parents[1]
SCRIPT = HERE / "sparkops" / "node_scripts" / "transfer.py"


def make_files(root: Path, total: int, files: int) -> list[tuple[str, int]]:
    (root / "blobs").mkdir(parents=True)
    block = os.urandom(1 << 20)
    out = []
    for i in range(files):
        size = total // files
        with open(root / "blobs" / f"shard-{i:05d}", "wb") as handle:
            for _ in range(size >> 20):
                handle.write(block[:1 << 20])
            handle.write(block[:size % (1 << 20)])
        out.append((f"blobs/shard-{i:05d}", size))
    return out


def raw_tcp(case: str, src: Path, files: list[tuple[str, int]], into: str) -> int:
    """The files over one TCP stream; the bytes the receiver got."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    # The receiver in a process of its own, as on a node (not a thread sharing our GIL).
    proc = subprocess.Popen([sys.executable, "-c", RAW_RECEIVER, str(port), into], pass_fds=(srv.fileno(),),
                            env={**os.environ, "FD": str(srv.fileno())}, stdout=subprocess.PIPE, text=True)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for rel, _ in files:
            with open(src / rel, "rb") as handle:
                sock.sendfile(handle)
    out, _ = proc.communicate()
    srv.close()
    expect_ok(case, proc.returncode, "the receiver failed")
    return int(out.strip() or 0)


RAW_RECEIVER = """
import os, socket, sys
srv = socket.socket(fileno=int(os.environ["FD"]))
conn, _ = srv.accept()
buf = bytearray(1 << 20)
got = 0
with open(sys.argv[2], "wb", buffering=0) as out:
    while n := conn.recv_into(buf):
        out.write(memoryview(buf)[:n])
        got += n
print(got)
"""


def engine(case: str, src: Path, dest: Path, cache: Path, files: list[tuple[str, int]], streams: int,
           script: str = str(SCRIPT)) -> int:
    """transfer.py send -> listen with `streams` streams; the bytes the listener hashed as written."""
    secret = os.urandom(32).hex()
    listener = subprocess.Popen([sys.executable, script, "listen", str(dest), "--cache", str(cache),
                                 "--address", "127.0.0.1", "--streams", str(streams)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    listener.stdin.write(secret + "\n")
    listener.stdin.flush()
    port = json.loads(listener.stdout.readline())["port"]
    plan: list[list[dict]] = [[] for _ in range(streams)]
    loads = [0] * streams
    for rel, size in sorted(files, key=lambda f: -f[1]):
        i = loads.index(min(loads))
        plan[i].append({"rel": rel, "offset": 0, "size": size})
        loads[i] += size
    sender = subprocess.Popen([sys.executable, script, "send"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    sender.stdin.write(json.dumps({"root": str(src), "streams": plan, "every": 5.0, "carrier": {
        "kind": "tcp", "address": "127.0.0.1", "port": port, "secret": secret}}) + "\n")
    sender.stdin.flush()
    result = None
    for line in sender.stdout:
        if line.startswith('{"result"'):
            result = json.loads(line)["result"]
            break
    done = listener.stdout.readline()
    summary = json.loads(done)["result"] if done.startswith('{"result"') else None
    # Each end exits 0 by itself after its result line; closing its stdin first would race that
    # (the end of stdin means "stop": exit status 3), so stdin closes only after the exit.
    # (An end still running after 60 s is stopped that way, and its status 3 fails the case.)
    for proc in (sender, listener):
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        proc.stdin.close()
        proc.wait()
    for name, proc in (("sender", sender), ("listener", listener)):
        expect_ok(case, proc.returncode, f"transfer.py {name}")
    if result is None or summary is None:
        fail(case, f"transfer.py's {'sender' if result is None else 'listener'} printed no result")
    planned = sum(s for _, s in files)
    expect(case, "bytes sent", result["sent"], planned)
    hashed = sum(s["hashed"] for s in summary["streams"])
    expect(case, "bytes hashed as written by the listener", hashed, planned)
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    expect(case, "bytes in the destination's files", written, planned)
    return hashed


def cpu_seconds() -> float:
    """User + system time of this process and its waited-for children so far."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=4.0)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--out", default=str(HERE / "benchmarks/results/transfer_cores.json"))
    ap.add_argument("--script", default=str(SCRIPT), help="transfer.py to measure (A/B of two versions)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkops-transfer-"))
    try:
        src, dest = work / "src", work / "dest"
        files = make_files(src, int(args.gb * 1e9), args.files)
        total = sum(s for _, s in files)
        cases = {"raw_tcp_null": lambda: raw_tcp("raw_tcp_null", src, files, "/dev/null"),
                 "raw_tcp_disk": lambda: raw_tcp("raw_tcp_disk", src, files, str(work / "raw.bin"))}
        for n in (int(s) for s in args.streams.split(",")):
            cases[f"tcp_{n}"] = lambda n=n: engine(f"tcp_{n}", src, dest, work / "cache.json", files, n,
                                                   args.script)
        runs: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.repeat):
            for case, fn in cases.items():
                shutil.rmtree(dest, ignore_errors=True)
                (work / "raw.bin").unlink(missing_ok=True)
                for leftover in work.glob("cache.json*"):
                    leftover.unlink()
                start, cpu0 = time.monotonic(), cpu_seconds()
                got = fn()
                runs[case].append(time.monotonic() - start)
                cpu[case].append(cpu_seconds() - cpu0)
                expect(case, "bytes received", got, total)
                print(f"run {r + 1} {case:<13} {runs[case][-1]:6.2f}s {total / runs[case][-1] / 1e6:7.0f} MB/s "
                      f"{cpu[case][-1] / (total / 1e9):5.2f} cpu-s/GB", flush=True)
        results = {k: {"seconds": v, "median_s": statistics.median(v),
                       "mb_per_s": total / statistics.median(v) / 1e6, "cpu_s": cpu[k],
                       "cpu_s_per_gb": statistics.median(cpu[k]) / (total / 1e9)} for k, v in runs.items()}
        best = max((k for k in results if k.startswith("tcp_")), key=lambda k: results[k]["mb_per_s"])
        doc = {"what": __doc__.splitlines()[0], "script": os.path.relpath(args.script, HERE),
               "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
               "model": {"bytes": total, "files": len(files)}, "repeat": args.repeat, "results": results,
               "ratios": {f"{k}_vs_raw_tcp_null": results[k]["mb_per_s"] / results["raw_tcp_null"]["mb_per_s"]
                          for k in results if k.startswith("tcp_")}
               | {f"{k}_vs_raw_tcp_disk": results[k]["mb_per_s"] / results["raw_tcp_disk"]["mb_per_s"]
                  for k in results if k.startswith("tcp_")},
               "best": best}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps({k: round(v["mb_per_s"]) for k, v in results.items()}))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
