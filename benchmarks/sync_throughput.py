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
with open(sys.argv[3], "wb", buffering=0) as out:
    while n := conn.recv_into(buf):
        out.write(memoryview(buf)[:n])
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

        def on_head(cmd: str) -> None:
            res = head.run(["sh", "-c", cmd], timeout=1800)
            if res.returncode:
                raise RuntimeError(f"{cmd[:200]}: {res.stderr[-500:]}")

        def clear_worker() -> None:
            shutil.rmtree(dst_dir, ignore_errors=True)
            (worker.home / "raw.bin").unlink(missing_ok=True)

        def raw_tcp(into: str) -> None:
            """One plain TCP stream head -> worker's cable address: the worker reads 1 MiB at a
            time into `into`, the head sends each blob with sendfile (what transfer.py does)."""
            port = 29777
            recv = threading.Thread(target=lambda: worker.run(
                ["python3", "-c", TCP_RECEIVER, worker.roce_ip, str(port), into], timeout=600))
            recv.start()
            deadline = time.monotonic() + 10
            while str(port) not in worker.run(["ss", "-Htln"]).stdout and time.monotonic() < deadline:
                time.sleep(0.05)
            on_head(f"python3 -c {shlex.quote(TCP_SENDER)} {worker.roce_ip} {port} {src}/blobs/*")
            recv.join()

        cases = {
            "raw_ssh_null": lambda: on_head(f"cat {src}/blobs/* | {remote} 'cat > /dev/null'"),
            "raw_ssh_disk": lambda: on_head(f"cat {src}/blobs/* | {remote} 'cat > /root/raw.bin'"),
            "raw_tcp_null": lambda: raw_tcp("/dev/null"),
            "raw_tcp_disk": lambda: raw_tcp("/root/raw.bin"),
            "rsync_a": lambda: on_head(f"rsync -a --mkpath -e {shlex.quote(ssh)} {src}/ {worker.roce_ip}:{src}/"),
        }
        copy_phase: dict[str, list[float]] = {}
        chosen: dict[str, int] = {}
        for how in args.transports.split(","):
            for n in args.streams.split(","):
                def run_sync(how=how, n=n):
                    report = sync(cfg, Silent(), streams=None if n == "auto" else int(n), transport_name=how)
                    node = report.nodes[0]
                    assert node.verified and node.copied_bytes == report.source_bytes and node.hashed_bytes == 0
                    copy_phase.setdefault(f"sync_{how}_{n}", []).append(node.copy_seconds)
                    chosen[f"sync_{how}_{n}"] = node.streams
                cases[f"sync_{how}_{n}"] = run_sync
        runs: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.repeat):
            for case, fn in cases.items():
                clear_worker()
                runs[case].append(timed(fn))
                print(f"  run {r + 1} {case:<13} {runs[case][-1]:6.2f}s  "
                      f"{total / runs[case][-1] / 1e6:6.0f} MB/s", flush=True)
        clear_worker()
        sync(cfg, Silent())
        noop = [timed(lambda: sync(cfg, Silent())) for _ in range(5)]
        env = {**os.environ, "SPARKOPS_LOCAL": str(override)}
        inv = [timed(lambda: subprocess.run([sys.executable, "-m", "invoke", "sync", "--profile", "smoke",
                                             "--cluster", "sim", "--set", f'model.repo="{REPO}"'],
                                            cwd=ROOT, env=env, check=True, capture_output=True))
               for _ in range(3)]
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
