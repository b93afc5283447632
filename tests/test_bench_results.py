"""`inv bench` end to end against the synthetic server (no cluster), result files, the
`vllm bench serve` converter, and `inv report`: all without vLLM."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.bench.bench import bench
from sparkops.bench.load.datasets import as_sharegpt, load_dataset
from sparkops.bench.report.report import COLUMNS, report
from sparkops.bench.results.files import ResultError, load_results, new_result, validate, write_result
from sparkops.bench.vllm_engine import convert
from sparkops.testing.synthetic_server import ServerConfig, SyntheticServer

DATA = Path(__file__).parent / "data" / "bench"


@pytest.fixture(scope="module")
def server():
    with SyntheticServer(ServerConfig(ttft_s=0.04, itl_s=0.005)) as srv:
        yield srv


def run_bench(url, tmp_path, **kw):
    args = dict(profile=None, url=url, cluster=None, single=False, quick=False, num_prompts=None,
                concurrency=None, dataset=None, max_tokens=None, output=None, engine="sparkops",
                ignore_eos=True, sets=[], results=str(tmp_path / "results"))
    args.update(kw)
    return bench(**args, out=open("/dev/null", "w"))


@pytest.mark.timing
def test_bench_by_url_writes_a_valid_result(server, tmp_path):
    doc, path = run_bench(server.base_url, tmp_path, num_prompts=12, concurrency=4, max_tokens=10)
    assert path.parent == tmp_path / "results" and path.name == doc["id"] + ".json"
    saved = json.loads(path.read_text())
    validate(saved)
    assert saved["status"] == "ok" and saved["mode"] == "custom" and saved["engine"] == "sparkops"
    m = saved["metrics"]
    assert (m["completed"], m["failed"], m["total_output_tokens"]) == (12, 0, 120)
    assert 40 <= m["median_ttft_content_ms"] <= 48
    assert m["median_itl_content_ms"] == pytest.approx(5, abs=1.0)
    s = saved["settings"]
    assert (s["num_prompts"], s["concurrency"], s["max_tokens"], s["ignore_eos"]) == (12, 4, 10, True)
    assert s["dataset"] == "sparkops-prompts-v1" and len(s["dataset_digest"]) == 16
    p = saved["provenance"]
    assert p["api_url"] == server.base_url and p["served_model_name"] == "synthetic"
    assert p["sparkops_version"] and p["nccl_note"].startswith("not looked at")
    assert not list(path.parent.glob(".*tmp*"))  # atomic write leaves no temp file


@pytest.mark.timing
def test_single_mode_reports_decode_rate(server, tmp_path):
    doc, _ = run_bench(server.base_url, tmp_path, single=True, max_tokens=21)
    assert doc["mode"] == "single" and doc["settings"]["num_prompts"] == 5  # bench.single_runs
    s = doc["single"]
    assert s["runs"] == 5 and len(s["decode_tok_s_values"]) == 5
    assert s["decode_tok_s"] == pytest.approx(200, rel=0.1)  # 1 / 5 ms, the mean of five
    assert s["decode_tok_s_std"] < 5 and s["decode_tok_s_median"] == pytest.approx(200, rel=0.1)
    assert 40 <= s["ttft_ms"] <= 48


def test_faults_are_counted_with_their_messages(server, tmp_path):
    lines = [{"prompt": f"ok {i}", "max_tokens": 5} for i in range(4)]
    lines += [{"prompt": "[[sparkops: fault=http500]]", "max_tokens": 5},
              {"prompt": "[[sparkops: fault=error_event at=2]]", "max_tokens": 5},
              {"prompt": "[[sparkops: fault=drop at=1]]", "max_tokens": 5}]
    file = tmp_path / "faults.jsonl"
    file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    doc, path = run_bench(server.base_url, tmp_path, dataset=str(file), num_prompts=7, concurrency=7,
                          max_tokens=5, output=str(tmp_path / "faults.json"))
    assert path == tmp_path / "faults.json"
    m = doc["metrics"]
    assert doc["status"] == "ok" and (m["completed"], m["failed"]) == (4, 3)
    assert m["error_counts"] == {"HTTP 500": 1, "error event": 1, "connection dropped": 1}
    text = " ".join(m["errors"])
    assert "synthetic server failure" in text and "synthetic mid-stream failure" in text
    assert any("3 of 7 requests failed" in w for w in doc["warnings"])


def test_a_run_where_nothing_succeeds_is_failed(tmp_path, server):
    file = tmp_path / "all500.jsonl"
    file.write_text(json.dumps({"prompt": "[[sparkops: fault=http500]]", "max_tokens": 3}) + "\n")
    doc, _ = run_bench(server.base_url, tmp_path, dataset=str(file), num_prompts=1, concurrency=1)
    assert doc["status"] == "failed" and "synthetic server failure" in doc["reason"]


def test_modes_are_exclusive(server, tmp_path):
    with pytest.raises(SparkopsError, match="choose one mode"):
        run_bench(server.base_url, tmp_path, quick=True, num_prompts=3)


def test_datasets_categories_and_too_few_prompts(tmp_path):
    ds = load_dataset("sparkops-prompts-v1:code", 20, 7)
    assert len(ds.prompts) == 20 and {p.max_tokens for p in ds.prompts} == {7}
    assert ds.digest == load_dataset("sparkops-prompts-v1:code", 20, 7).digest
    with pytest.raises(SparkopsError, match="only 20 usable prompts"):
        load_dataset("sparkops-prompts-v1:code", 21, 7)
    with pytest.raises(SparkopsError, match="unknown categories"):
        load_dataset("sparkops-prompts-v1:poetry", 1, 7)
    with pytest.raises(SparkopsError, match="unknown dataset"):
        load_dataset("no-such-set", 1, 7)
    sg = json.loads(as_sharegpt(ds.prompts[:2]))
    assert sg[0]["conversations"][0]["value"] == ds.prompts[0].text and len(sg[0]["conversations"]) == 2


def test_vllm_result_converts_to_the_same_keys():
    raw = json.loads((DATA / "vllm_bench_serve_0.32.json").read_text())
    metrics, single = convert(raw, sent=32)
    assert metrics["completed"] == 31 and metrics["failed"] == 1
    assert metrics["mean_ttft_ms"] == raw["mean_ttft_ms"] and metrics["p99_itl_ms"] == raw["p99_itl_ms"]
    assert metrics["output_throughput"] == raw["output_throughput"]
    assert metrics["error_counts"] == {"aiohttp.client_exceptions.ServerDisconnectedError": 1}
    assert "Server disconnected" in metrics["errors"][0]
    assert any("TTFT is vLLM's" in w for w in metrics["warnings"])
    # The decode rate from vLLM's own per-request lists: tokens after the first over the time
    # from the first to the last, averaged over the requests that finished.
    rates = [(n - 1) / (e - t) for t, e, n, err in zip(raw["ttfts"], raw["latencies"], raw["output_lens"],
                                                        raw["errors"]) if e and not err]
    assert single["output_tokens"] == 64 and single["runs"] == len(rates) == 31
    assert single["decode_tok_s"] == pytest.approx(sum(rates) / len(rates), rel=1e-9)
    _, _ = convert(raw, sent=40)
    assert any("sent 32 of 40" in w for w in convert(raw, sent=40)[0]["warnings"])


def _failed_doc(profile: str, status: str, reason: str) -> dict:
    from sparkops.bench.results.files import empty_provenance
    return new_result(status=status, engine="sparkops", mode="quick", reason=reason,
                      settings={"dataset": "-", "num_prompts": 1, "concurrency": None, "max_tokens": 1,
                                "temperature": 0.0, "ignore_eos": True, "endpoint": "chat",
                                "request_rate": "inf"},
                      provenance=empty_provenance() | {"profile": profile, "model": f"org/{profile}"},
                      log_excerpt=["ValueError: boom"] if status == "failed" else [])


def test_result_schema_rejects_bad_documents():
    doc = _failed_doc("x", "skipped", "why")
    validate(doc)
    with pytest.raises(ResultError, match="not a sparkops"):
        validate({"kind": "other"})
    bad = dict(doc, status="maybe")
    with pytest.raises(ResultError, match="status"):
        validate(bad)


def test_report_from_results(server, tmp_path):
    results = tmp_path / "results"
    quick, _ = run_bench(server.base_url, tmp_path, quick=True, profile=None, max_tokens=8)
    run_bench(server.base_url, tmp_path, single=True, max_tokens=8)
    stalled = json.loads(json.dumps(quick))
    stalled["id"] += "-stalled"
    stalled["provenance"]["profile"] = "stalled"
    stalled["metrics"]["client_max_stall_ms"] = 120.0
    write_result(stalled, results)
    write_result(_failed_doc("broken", "failed", "up failed: vLLM exited"), results)
    write_result(_failed_doc("gated-one", "skipped", "gated model needs a Hugging Face token"), results)
    (results / "corrupt.json").write_text('{"kind": "sparkops-bench-result", ')
    (results / "other.json").write_text('{"hello": 1}')
    found, warnings = load_results(results)
    assert len(found) == 5
    df, files, warnings = report(results, tmp_path / "report")
    assert any("corrupt.json" in w for w in warnings) and any("other.json" in w for w in warnings)
    names = {f.name for f in files}
    assert {"matrix.csv", "matrix.md", "throughput.png", "latency.png"} <= names

    import pandas as pd
    csv = pd.read_csv(tmp_path / "report" / "matrix.csv")
    assert list(csv.columns) == COLUMNS
    for col in ("model", "profile", "nodes", "tp", "status", "output_tok_s", "total_tok_s", "req_s",
                "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_itl_ms",
                "p99_e2el_ms", "single_decode_tok_s", "date"):
        assert col in csv.columns
    assert len(csv) == 5
    rows = {(r.profile, r.mode): r for r in csv.itertuples()}
    assert rows[("stalled", "quick")].status == "ok"
    assert "benchmark client held up 120 ms" in rows[("stalled", "quick")].reason
    assert rows[("stalled", "quick")].client_max_stall_ms == 120.0
    assert rows[("broken", "quick")].status == "failed" and "vLLM exited" in rows[("broken", "quick")].reason
    assert rows[("gated-one", "quick")].status == "skipped"
    # the report carries the result's own figure, not a recomputed or rounded one
    assert rows[(server.base_url, "quick")].output_tok_s == pytest.approx(quick["metrics"]["output_throughput"],
                                                                          rel=1e-6)
    # The server writes token k at recv + ttft + k x 5 ms: one request decodes at 200 tok/s, less
    # only by how late the last token's write is seen (a few ms of 315 on a busy 2-vCPU VM).
    assert rows[(server.base_url, "single")].single_decode_tok_s == pytest.approx(200, rel=0.05)
    md = (tmp_path / "report" / "matrix.md").read_text()
    assert "| FAILED |" in md and "up failed: vLLM exited" in md and "| SKIPPED |" in md
    assert "N/A" not in md

    from matplotlib.image import imread
    for name in ("throughput.png", "latency.png", "e2el.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(tmp_path / "report" / name).shape[0] > 100


def test_the_vllm_engine_hands_the_key_over_stdin_to_the_venvs_vllm(tmp_path, isolated_override):
    """`--engine vllm` on the native runtime: the venv's `vllm` runs with OPENAI_API_KEY read
    from stdin by the node's own shell (a `sh` from the venv does not exist), the key never in
    argv. Run for real here with a stand-in `vllm` that reports what it got."""
    import stat
    import subprocess

    from sparkops.bench.load.target import Target
    from sparkops.bench.vllm_engine import runtime_argv
    from sparkops.config import load_config
    from sparkops.facts.node import NodeFacts
    from sparkops.plan.context import NodeContext

    (tmp_path / "bin").mkdir()
    vllm = tmp_path / "bin" / "vllm"
    vllm.write_text('#!/bin/sh\necho "key=$OPENAI_API_KEY args=$*"\n')
    vllm.chmod(vllm.stat().st_mode | stat.S_IEXEC)
    cfg = load_config("smoke", "local", sets=[f'cluster.venv="{tmp_path}"'], environ={})
    head = NodeContext(cfg, cfg.nodes[0], NodeFacts(node="local", source="test"), 0)
    target = Target("http://127.0.0.1:8000", "smoke", "s3cret", {"runtime": "native"}, cfg, None, head)
    argv = runtime_argv(target, ["vllm", "bench", "serve"], env={"HF_HUB_OFFLINE": "1"}, key_on_stdin=True)
    assert "s3cret" not in " ".join(argv)
    done = subprocess.run(argv, input="s3cret\n", capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "key=s3cret args=bench serve"
