"""The fake vLLM (tests/fake_vllm/) deployed by sparkops' own `up` on the `local` cluster, as
vLLM's CPU build is in tests/test_lifecycle_local.py, then measured by sparkops' serving sweep
against its known performance model (tests/fake_vllm/vllm/perf.py): no vLLM, no root.

Expected figures are computed from perf.py, never written here. The tolerance: on the 2-vCPU
development VM, shared with another test run, the sweep's output tok/s read 1-4 % below the
model at concurrency 1 (a closed-loop client's round trip between one request's end and the
next one's start is not in the model) and within 2 % at concurrency 8 over 3 runs per cell,
with a spread (std over runs) under 2 %; TOLERANCE (10 %) leaves room for a loaded machine
without letting a wrong model through: the settings compared differ by 2x (eager) or more.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
from fake_vllm.vllm import perf

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Silent
from sparkops.bench.load.target import open_target
from sparkops.bench.measure.cells import serving_plan
from sparkops.bench.measure.sweep import run_sweep
from sparkops.checks.vllm_flags import known_flags
from sparkops.config import load_config
from sparkops.deploy.down import down
from sparkops.deploy.status import collect
from sparkops.deploy.up import up
from sparkops.plan.vllm_args import serve_argv

pytestmark = [pytest.mark.slow]

TOLERANCE = 0.10
API_KEY = "fake-vllm-test-key"
MAX_TOKENS = 64
RUNS = 3
# max_num_seqs 4 at concurrency 1 and 8: one stream alone, then a full batch and a queue.
KEY = f"secrets.api_key={API_KEY}"  # a secret's value is taken as written (no quotes)
SETTINGS = ["serving.max_num_seqs=4", "serving.enforce_eager=false", KEY]
PROMPTS = [f"Tell me one short fact about topic number {i}." for i in range(32)]


def served_settings(cfg) -> perf.Settings:
    s = cfg.serving
    return perf.Settings(max_num_seqs=s.get("max_num_seqs"), max_model_len=s["max_model_len"],
                         kv_cache_dtype=s["kv_cache_dtype"], enforce_eager=bool(s["enforce_eager"]))


def fake_processes(venv: Path) -> list[int]:
    """Processes whose command line runs the fake virtualenv's vllm."""
    mark = str(venv / "bin").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def sweep(make, cfg, tmp_path: Path) -> dict[int, dict]:
    """sparkops' serving sweep at concurrency 1 and 8 against what `cfg` deployed: cell by concurrency."""
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": p, "max_tokens": MAX_TOKENS}) + "\n" for p in PROMPTS))
    plan = serving_plan(concurrency="1,8", max_tokens=MAX_TOKENS, runs=RUNS, dataset=str(dataset), min_prompts=4)

    def load(name, overrides=()):  # as `inv bench` loads the deployment: its recorded overrides (never
        return make(name, sets_=[*overrides, KEY])  # a secret) with the key from the local configuration
    with open_target(load, cfg, profile=None, url=None, need_head=False) as target:
        assert target.api_key == API_KEY
        doc, _ = run_sweep(target, plan, target.cfg.doc["bench"], results=tmp_path / "results", progress=Silent())
    assert doc["status"] == "ok", doc.get("reason")
    assert doc["provenance"]["venv_vllm_version"].startswith("0.0.1+sparkops.fake")
    cells = {c["concurrency"]: c for c in doc["cells"]}
    assert all(c["status"] == "ok" for c in cells.values()), [c["reason"] for c in cells.values()]
    return cells


def expected(cfg, cell: dict) -> float:
    m = cell["metrics"]
    return perf.output_tok_s(cell["concurrency"], served_settings(cfg), max_tokens=MAX_TOKENS,
                             prompt_tokens=m["total_input_tokens"] / m["completed"])


def measured(cell: dict) -> float:
    return cell["spread"]["output_throughput"]["mean"]


def test_the_fake_knows_every_flag_the_planner_passes_and_refuses_others(fake_vllm_venv, tmp_path):
    """The flag list sparkops' preflight reads from `vllm serve --help=all`, and argparse's refusal."""
    vllm = str(fake_vllm_venv / "bin" / "vllm")
    helped = subprocess.run([vllm, "serve", "--help=all"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0
    known = known_flags(helped.stdout)
    for profile, cluster, sets in (("smoke", "local", ["serving.max_num_seqs=8", "serving.enforce_eager=true",
                                                       'serving.kv_cache_dtype="fp8"', 'model.revision="main"']),
                                   ("gpt-oss-120b", "spark-pair", ['serving.quantization="mxfp4"',
                                                                   "serving.trust_remote_code=true",
                                                                   "serving.gpu_memory_utilization=0.8"])):
        cfg = load_config(profile, cluster, sets=sets, environ={})
        used = {a for a in serve_argv(cfg) if a.startswith("--")}
        assert used <= known, used - known
    assert {"--nnodes", "--node-rank", "--master-addr", "--headless", "--data-parallel-size",
            "--distributed-executor-backend", "--api-key", "--seed"} <= known
    wrong = subprocess.run([vllm, "serve", "m", "--max-num-seq", "4"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and "unrecognized arguments: --max-num-seq 4" in wrong.stderr
    version = subprocess.run([str(fake_vllm_venv / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('vllm'))"],
                             capture_output=True, text=True, timeout=30)
    assert version.stdout.startswith("0.0.1+sparkops.fake")


def test_the_model_s_best_settings_under_an_itl_slo():
    """What `inv tune` will be checked against, computed from perf.py alone."""
    grid = [perf.Settings(max_num_seqs=m, max_model_len=2048, kv_cache_dtype=kv, enforce_eager=eager)
            for m in (4, 8, 16, 32, 64) for kv in ("auto", "fp8") for eager in (False, True)]
    assert not perf.Settings(max_num_seqs=64, max_model_len=2048).feasible  # 131,072 > 65,536 tokens
    assert perf.Settings(max_num_seqs=64, max_model_len=2048, kv_cache_dtype="fp8").feasible
    assert perf.Settings(max_num_seqs=64, max_model_len=2048, kv_cache_dtype="fp8").seqs == 64
    # Unconstrained, the largest feasible batch wins: fp8 (faster steps, twice the cache), not eager.
    top = perf.best(grid, 64)
    assert top == perf.Settings(max_num_seqs=64, max_model_len=2048, kv_cache_dtype="fp8")
    # An ITL SLO caps the batch: step_s(b) = 2 ms (1 + b/4) 0.8 <= 8 ms gives b <= 16.
    slo = perf.best(grid, 64, itl_slo_s=0.008)
    assert slo == perf.Settings(max_num_seqs=16, max_model_len=2048, kv_cache_dtype="fp8")
    assert perf.itl_s(64, slo) == pytest.approx(0.008)
    assert perf.output_tok_s(64, slo) == pytest.approx(16 / 0.008)
    assert perf.best(grid, 64, itl_slo_s=0.001) is None


@pytest.mark.timing
def test_serving_sweep_reads_the_model_s_throughput(fake_local, tmp_path):
    """max_num_seqs 4 at concurrency 1 (batch 1: 400 tok/s) and 8 (batch 4 and a queue:
    1000 tok/s), as sparkops' serving sweep measures them through the deployed API."""
    cfg = fake_local(sets_=SETTINGS)
    result = up(cfg, replace=True, progress=Silent())
    assert requests.get(f"{result.url}/v1/models", timeout=5).status_code == 401  # the key is needed
    before = requests.get(f"{result.url}/metrics", timeout=5).text
    cells = sweep(fake_local, cfg, tmp_path)
    for c, cell in cells.items():
        want = expected(cfg, cell)
        print(f"c={c}: measured {measured(cell):.1f} tok/s (std {cell['spread']['output_throughput']['std']:.1f}), "
              f"model {want:.1f}, ITL p50 {cell['spread']['median_itl_ms']['mean']:.2f} ms "
              f"(model {1000 * perf.itl_s(c, served_settings(cfg)):.2f})")
        assert measured(cell) == pytest.approx(want, rel=TOLERANCE), (c, measured(cell), want)
    assert measured(cells[8]) > 2 * measured(cells[1])
    after = requests.get(f"{result.url}/metrics", timeout=5).text

    def generated(text: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("vllm:generation_tokens_total{"))
    # the server counted every token the client did, and each cell's warm-up (a request per stream)
    counted = sum(c["metrics"]["total_output_tokens"] for c in cells.values())
    warm_ups = sum(c * MAX_TOKENS for c in cells)
    assert generated(after) - generated(before) == counted + warm_ups


@pytest.mark.timing
def test_enforce_eager_halves_the_throughput(fake_local, tmp_path):
    cfg = fake_local(sets_=[*SETTINGS, "serving.enforce_eager=true"])
    up(cfg, replace=True, progress=Silent())
    cells = sweep(fake_local, cfg, tmp_path)
    eager_model = {c: expected(cfg, cell) for c, cell in cells.items()}
    graphs = fake_local(sets_=SETTINGS)
    for c, cell in cells.items():
        print(f"eager c={c}: measured {measured(cell):.1f} tok/s, model {eager_model[c]:.1f}")
        assert measured(cell) == pytest.approx(eager_model[c], rel=TOLERANCE), (c, measured(cell), eager_model[c])
        half = perf.output_tok_s(c, served_settings(graphs)) / 2
        assert measured(cell) == pytest.approx(half, rel=TOLERANCE), (c, measured(cell), half)


def test_max_num_seqs_too_large_for_the_kv_cache_fails_up_with_the_fake_s_error(fake_local, fake_vllm_venv):
    """256 x 512 tokens do not fit 65,536: `up` fails with the engine's error from its log and
    leaves nothing serving; the same max_num_seqs with an fp8 KV cache (twice the tokens) serves."""
    cfg = fake_local(sets_=["serving.max_num_seqs=256", "serving.ready_timeout_s=60"])
    assert not served_settings(cfg).feasible
    with pytest.raises(SparkopsError) as err:
        up(cfg, replace=True, progress=Silent())
    text = err.value.render()
    assert err.value.step == "ready" and "stopped while waiting for the API" in text, text  # as vLLM fails
    assert "not enough KV cache" in text and "max_num_seqs (256)" in text, text  # the tail of its log
    assert not collect(cfg)["nodes"][0]["services"]["vllm"]["running"]
    assert fake_processes(fake_vllm_venv) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{cfg.cluster['ports']['api']}/health", timeout=2)

    fits = fake_local(sets_=["serving.max_num_seqs=256", 'serving.kv_cache_dtype="fp8"'])
    assert served_settings(fits).feasible
    served = up(fits, replace=True, progress=Silent())
    assert requests.get(f"{served.url}/health", timeout=5).status_code == 200


def test_down_leaves_nothing(fake_local, fake_vllm_venv):
    cfg = fake_local()
    served = up(cfg, replace=True, progress=Silent())
    assert fake_processes(fake_vllm_venv)
    log = Path(cfg.cluster["paths"]["work_dir"]) / "logs" / "vllm.log"
    assert down(cfg, progress=Silent()) == []
    assert fake_processes(fake_vllm_venv) == []
    assert not collect(cfg)["nodes"][0]["services"]["vllm"]["running"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{served.url}/health", timeout=2)
    assert "Application shutdown complete" in log.read_text()  # it stopped on SIGTERM, not SIGKILL
