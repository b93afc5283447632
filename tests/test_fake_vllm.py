"""The fake vLLM (tests/fake_vllm/) deployed by sparkops' own `up` on the `local` cluster, as
vLLM's CPU build is in tests/test_lifecycle_local.py, then measured by sparkops' serving sweep
against its known performance model (tests/fake_vllm/vllm/perf.py): no vLLM, no root.

Expected figures are computed from perf.py, never written here. The tolerance: on the 2-vCPU
development VM, shared with other test runs (load average 1.2), four runs of both
sweeps read output tok/s 0.4-1.1 % below the model at concurrency 1 (a closed-loop client's
round trip between one request's end and the next one's start is not in the model) and
0.2-0.4 % below at concurrency 8, with a spread over each cell's 3 runs of at most 0.9 % (std);
median TPOT and ITL were the model's step time to 0.01 ms. TOLERANCE (5 %) is over four times
the largest deviation seen, and a quarter of the smallest effect a setting has in the model
(an fp8 KV cache: 20 %), so a wrong model still fails.
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

TOLERANCE = 0.05
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


def check_against_model(cfg, cells: dict[int, dict]) -> None:
    """Each cell's output tok/s and median TPOT (the steady inter-token gap of a request) within
    TOLERANCE of perf.py's figures for the settings `cfg` deployed."""
    settings = served_settings(cfg)
    for c, cell in cells.items():
        want, itl_ms = expected(cfg, cell), 1000 * perf.itl_s(c, settings)
        tpot_ms = cell["spread"]["median_tpot_ms"]["mean"]
        print(f"{settings} c={c}: {measured(cell):.1f} tok/s (std {cell['spread']['output_throughput']['std']:.1f}), "
              f"model {want:.1f}; TPOT p50 {tpot_ms:.2f} ms, ITL p50 {cell['spread']['median_itl_ms']['mean']:.2f} "
              f"ms, model {itl_ms:.2f} ms")
        assert measured(cell) == pytest.approx(want, rel=TOLERANCE), (c, measured(cell), want)
        assert tpot_ms == pytest.approx(itl_ms, rel=TOLERANCE), (c, tpot_ms, itl_ms)


def test_the_fake_knows_every_flag_the_planner_passes_and_refuses_others(fake_vllm_venv, tmp_path,
                                                                          isolated_override):
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
    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "profiles").glob("*.toml")):  # every preset's flags, as shipped
        used = {a for a in serve_argv(load_config(path.stem, "spark-pair", root=root, environ={}))
                if a.startswith("--")}
        assert used <= known, (path.stem, used - known)
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
    assert "not enough KV cache" in perf.Settings(max_num_seqs=64, max_model_len=2048).error()  # 131,072 > 65,536
    assert not perf.Settings(max_num_seqs=4, max_model_len=2048, gpu_memory_utilization=0.96).feasible
    assert perf.Settings(max_model_len=2048).seqs == 32  # no --max-num-seqs: what the cache holds
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
    check_against_model(cfg, cells)
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
    check_against_model(cfg, cells)
    graphs = fake_local(sets_=SETTINGS)
    for c, cell in cells.items():
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


def test_the_api_answers_as_vllm_s_does(fake_local):
    """What sparkops' clients rely on: /v1/models, usage, finish reasons, vLLM's 400 and 404,
    /tokenize and /detokenize, the stream's role chunk, usage chunk and [DONE], /metrics."""
    cfg = fake_local()
    url = up(cfg, replace=True, progress=Silent()).url
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    assert requests.get(f"{url}/version", timeout=5).json()["version"].startswith("0.0.1+sparkops.fake")
    listed = requests.get(f"{url}/v1/models", timeout=5).json()["data"]
    assert [(m["id"], m["max_model_len"]) for m in listed] == [("smoke", 512)]

    def complete(**body):
        return requests.post(f"{url}/v1/completions", timeout=30, json={"model": "smoke", **body})
    one = complete(prompt="one two three", max_tokens=8).json()
    assert one["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert one["choices"][0]["finish_reason"] == "length" and len(one["choices"][0]["text"].split()) == 8
    assert complete(prompt="one two three", max_tokens=8).json()["choices"] == one["choices"]  # seeded
    full = complete(prompt="x", max_tokens=100, ignore_eos=True).json()
    assert (full["usage"]["completion_tokens"], full["choices"][0]["finish_reason"]) == (100, "length")
    free = complete(prompt="x", max_tokens=100).json()  # may meet its EOS, never before 64 tokens
    n, why = free["usage"]["completion_tokens"], free["choices"][0]["finish_reason"]
    assert (n, why) == (100, "length") or (64 <= n < 100 and why == "stop")
    too_long = complete(prompt="word " * 500, max_tokens=20)
    assert too_long.status_code == 400 and "maximum context length is 512 tokens" in too_long.text
    assert complete(model="other", prompt="x", max_tokens=1).status_code == 404

    ids = requests.post(f"{url}/tokenize", json={"prompt": "the quick brown fox"}, timeout=5).json()
    assert ids["count"] == 4 and ids["max_model_len"] == 512
    back = requests.post(f"{url}/detokenize", json={"tokens": ids["tokens"]}, timeout=5).json()
    assert back["prompt"] == "the quick brown fox"

    with requests.post(f"{url}/v1/chat/completions", stream=True, timeout=30, json={
            "model": "smoke", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 5,
            "stream": True, "stream_options": {"include_usage": True}}) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [e["choices"][0]["finish_reason"] for e in events[1:-1]] == [None] * 4 + ["length"]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'vllm:num_requests_running{engine="0",model_name="smoke"} 0.0' in metrics


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
