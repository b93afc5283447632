"""How fast does `inv sync` move a model, against what the link itself carries?

On the simulated cluster (spark-a -> spark-b over the 169.254 "cable", real sshd), with a
synthetic model shaped like a Hugging Face cache (>= 2 GB, >= 100 files), all in one run,
each case repeated and the cases alternated, head files in the page cache:
  raw_ssh_null:  the model's bytes as one stream over the same SSH (same ssh options) into
                 /dev/null on the worker: one SSH stream's ceiling (one core's cipher);
  raw_ssh_disk:  the same stream into one file on the worker's disk: the link plus the write;
  raw_tcp_null:  the bytes over plain TCP on the cable (sendfile on the head, 1 MiB reads on
                 the worker) into nothing: the cable without a cipher;
  raw_tcp_disk:  the same into one file;
  rsync_a:       plain `rsync -a` of the folder over SSH (same ssh options), for comparison;
  sync_<t>_<n>:  sparkops sync into an empty worker cache with transport t (ssh, tcp) and n
                 streams per worker (auto: chosen from the nodes' cores and the link), end to
                 end (manifest check, copy, hash as written, the check that verifies it), and
                 its copy phase alone;
  noop:          a re-sync with nothing to do (100+ files): sync() wall time, and the whole
                 `inv sync` command (Python start-up and config loading included).
Targets (issue 14): sync over ssh >= 95% of raw_ssh_disk; over tcp >= 80% of raw_tcp_null;
the no-change `inv sync` command <= 1 s.
Every case checks that the worker received every byte of the model (counted on the worker, or
the copy's files summed after the case, outside its timing) and that every step exited 0
(pipelines under `set -o pipefail`); a case that moved less stops the run with exit status 1
and its name (benchmarks/_checks.py), before any rate is printed for it.

    sudo python3 benchmarks/sync_throughput.py [--gb 2.2] [--files 100] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _checks import STRICT_SH, expect, expect_ok, fail  # noqa: E402

from sparkops.base.progress import Silent  # noqa: E402
from sparkops.config import load_config  # noqa: E402
from sparkops.models.sync import sync  # noqa: E402
from sparkops.node_scripts.hf_cache import repo_folder  # noqa: E402
from sparkops.remote import openssh  # noqa: E402
from sparkops.sim.cluster import build  # noqa: E402
from sparkops.sim.synthetic_model import REPO, make_synthetic_model  # noqa: E402
from sparkops.sim.tasks import write_override  # noqa: E402

HUB = Path(".cache/huggingface/hub")
TCP_RECEIVER = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
conn, _ = srv.accept()
buf = bytearray(1 << 20)
got = 0
with open(sys.argv[3], "wb", buffering=0) as out:
    while n := conn.recv_into(buf):
        out.write(memoryview(buf)[:n])
        got += n
print(got)
"""
TCP_SENDER = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2]))) as sock:
    for path in sys.argv[3:]:
        with open(path, "rb") as handle:
            sock.sendfile(handle)
"""


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.2, help="model size in GB (default 2.2)")
    ap.add_argument("--files", type=int, default=100, help="weight shards (default 100)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    ap.add_argument("--streams", default="auto,1,2,4", help="sync stream counts to try (auto: chosen)")
    ap.add_argument("--transports", default="ssh,tcp", help="sync transports to try")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/sync_throughput.json"))
    args = ap.parse_args()

    cluster = build(hosts=2, wait=300)
    workdir = Path(tempfile.mkdtemp(prefix="sparkops-syncbench-"))
    try:
        override = workdir / "sparkops.local.toml"
        os.environ["SPARKOPS_LOCAL"] = str(override)
        write_override(cluster, override)
        cfg = load_config("smoke", "sim", environ={}, sets=[f'model.repo="{REPO}"'])
        head, worker = cluster.host("spark-a"), cluster.host("spark-b")
        name = repo_folder(REPO)
        src_dir, dst_dir = head.home / HUB / name, worker.home / HUB / name
        t = timed(lambda: make_synthetic_model(src_dir, int(args.gb * 1e9), args.files))
        total = sum(p.stat().st_size for p in (src_dir / "blobs").iterdir())
        files = sum(1 for p in src_dir.rglob("*") if p.is_file() or p.is_symlink())
        print(f"model: {total / 1e9:.2f} GB, {files} entries, made in {t:.1f}s", flush=True)

        wnode = next(n for n in cfg.nodes if n["name"] == "spark-b")
        ssh = shlex.join(openssh.ssh_command(wnode, cfg.cluster["ssh"]))
        remote = f"{ssh} {worker.roce_ip}"
        src = f"/root/{HUB}/{name}"

        blobs = sorted(p for p in (src_dir / "blobs").iterdir())
        if not blobs or total == 0:
            fail("model", f"no blobs in {src_dir / 'blobs'}")

        def on_head(case: str, cmd: str) -> str:
            """`cmd` on the head under bash's pipefail/failglob; its stdout. Any failure: exit."""
            res = head.run(["bash", "-c", STRICT_SH + cmd], timeout=1800)
            expect_ok(case, res.returncode, f"{cmd[:200]}: {res.stderr[-500:]}")
            return res.stdout

        def copied_bytes() -> int:
            """The bytes of the model's blobs that are now in the worker's cache."""
            folder = dst_dir / "blobs"
            return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0

        def received(case: str, got: int) -> None:
            expect(case, "bytes received by the worker", got, total)

        def clear_worker() -> None:
            shutil.rmtree(dst_dir, ignore_errors=True)
            (worker.home / "raw.bin").unlink(missing_ok=True)

        def raw_tcp(case: str, into: str) -> int:
            """One plain TCP stream head -> worker's cable address: the worker reads 1 MiB at a
            time into `into`, the head sends each blob with sendfile (what transfer.py does).
            The bytes the worker received."""
            port = 29777
            done: list[subprocess.CompletedProcess] = []
            recv = threading.Thread(target=lambda: done.append(worker.run(
                ["python3", "-c", TCP_RECEIVER, worker.roce_ip, str(port), into], timeout=600)))
            recv.start()
            deadline = time.monotonic() + 10
            while str(port) not in worker.run(["ss", "-Htln"]).stdout:
                if time.monotonic() > deadline or not recv.is_alive():
                    recv.join(1)
                    fail(case, f"the worker's receiver never listened on {worker.roce_ip}:{port}: "
                               f"{done[0].stderr[-500:] if done else 'no answer in 10 s'}")
                time.sleep(0.05)
            on_head(case, f"python3 -c {shlex.quote(TCP_SENDER)} {worker.roce_ip} {port} {src}/blobs/*")
            recv.join()
            if not done:
                fail(case, "the worker's receiver did not finish")
            expect_ok(case, done[0].returncode, done[0].stderr)
            return int(done[0].stdout.strip() or 0)

        def raw_ssh(case: str, into: str) -> int:
            """The blobs as one stream over SSH, counted on the worker as they arrive."""
            sink = "wc -c" if into == "/dev/null" else f"cat > {into} && stat -c %s {into}"
            return int(on_head(case, f"cat {src}/blobs/* | {remote} {shlex.quote(sink)}").split()[-1])

        def rsync_a():
            on_head("rsync_a", f"rsync -a --mkpath -e {shlex.quote(ssh)} {src}/ {worker.roce_ip}:{src}/")
            return copied_bytes

        # Each case returns the bytes the worker received (or a callable that counts them after
        # the case's timing: the copy's files on the worker's disk).
        cases = {
            "raw_ssh_null": lambda: raw_ssh("raw_ssh_null", "/dev/null"),
            "raw_ssh_disk": lambda: raw_ssh("raw_ssh_disk", "/root/raw.bin"),
            "raw_tcp_null": lambda: raw_tcp("raw_tcp_null", "/dev/null"),
            "raw_tcp_disk": lambda: raw_tcp("raw_tcp_disk", "/root/raw.bin"),
            "rsync_a": rsync_a,
        }
        copy_phase: dict[str, list[float]] = {}
        chosen: dict[str, int] = {}
        for how in args.transports.split(","):
            for n in args.streams.split(","):
                def run_sync(how=how, n=n):
                    case = f"sync_{how}_{n}"
                    report = sync(cfg, Silent(), streams=None if n == "auto" else int(n), transport_name=how)
                    node = report.nodes[0]
                    if not node.verified:
                        fail(case, "the worker's copy did not verify")
                    expect(case, "bytes the sync copied", node.copied_bytes, report.source_bytes)
                    expect(case, "bytes hashed again after the copy", node.hashed_bytes, 0)
                    copy_phase.setdefault(case, []).append(node.copy_seconds)
                    chosen[case] = node.streams
                    return copied_bytes
                cases[f"sync_{how}_{n}"] = run_sync
        runs: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.repeat):
            for case, fn in cases.items():
                clear_worker()
                start = time.monotonic()
                got = fn()
                runs[case].append(time.monotonic() - start)
                received(case, got() if callable(got) else got)
                print(f"  run {r + 1} {case:<13} {runs[case][-1]:6.2f}s  "
                      f"{total / runs[case][-1] / 1e6:6.0f} MB/s", flush=True)
        clear_worker()
        first = sync(cfg, Silent())
        received("noop (the sync before it)", copied_bytes())
        if not first.nodes[0].verified:
            fail("noop (the sync before it)", "the worker's copy did not verify")

        def noop_sync() -> None:
            report = sync(cfg, Silent())
            expect("noop", "bytes copied by a sync with nothing to do", report.nodes[0].copied_bytes, 0)
        noop = [timed(noop_sync) for _ in range(5)]
        env = {**os.environ, "SPARKOPS_LOCAL": str(override)}

        def inv_sync() -> None:
            res = subprocess.run([sys.executable, "-m", "invoke", "sync", "--profile", "smoke", "--cluster", "sim",
                                  "--set", f'model.repo="{REPO}"'], cwd=ROOT, env=env, capture_output=True,
                                 text=True)
            expect_ok("noop (inv sync)", res.returncode, res.stderr + res.stdout)
        inv = [timed(inv_sync) for _ in range(3)]
        clear_worker()

        def summary(values: list[float]) -> dict:
            best = statistics.median(values)
            return {"seconds": values, "median_s": best, "mb_per_s": total / best / 1e6}
        results = {k: summary(v) for k, v in runs.items()}
        for k, v in copy_phase.items():
            results[k]["copy_phase"] = summary(v)
            results[k]["streams"] = chosen[k]
        mb = {k: v["mb_per_s"] for k, v in results.items()}
        doc = {
            "what": "inv sync throughput on the simulated cluster (spark-a -> spark-b over the veth "
                    "'cable', MTU 9000), vs a raw SSH stream of the same bytes in the same run",
            "host": {"python": platform.python_version(), "machine": platform.machine(),
                     "cpus": os.cpu_count(), "rsync": subprocess.run(["rsync", "--version"], capture_output=True,
                                                                     text=True).stdout.splitlines()[0],
                     "ssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
                     "cipher": openssh.CIPHERS.split(",")[0]},
            "model": {"bytes": total, "entries": files, "shards": args.files},
            "repeat": args.repeat,
            "results": results,
            "noop_resync": {"sync_call_s": noop, "median_s": statistics.median(noop),
                            "inv_sync_command_s": inv, "inv_median_s": statistics.median(inv)},
            "ratios": {
                **{f"{k}_vs_raw_ssh_disk": mb[k] / mb["raw_ssh_disk"] for k in mb if k.startswith("sync_ssh")},
                **{f"{k}_vs_raw_tcp_null": mb[k] / mb["raw_tcp_null"] for k in mb if k.startswith("sync_tcp")},
                **{f"{k}_vs_raw_tcp_disk": mb[k] / mb["raw_tcp_disk"] for k in mb if k.startswith("sync_tcp")},
                "rsync_a_vs_raw_ssh_disk": mb["rsync_a"] / mb["raw_ssh_disk"]},
            "targets": {"sync_ssh_auto_vs_raw_ssh_disk": 0.95, "sync_tcp_auto_vs_raw_tcp_null": 0.80,
                        "noop_inv_sync_command_s": 1.0},
            "script_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                            capture_output=True, text=True).stdout.strip(),
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps({"ratios": doc["ratios"], "noop_resync": doc["noop_resync"],
                          **{k: round(v["mb_per_s"]) for k, v in results.items()}}, indent=1))
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        cluster.teardown()


if __name__ == "__main__":
    sys.exit(main())
