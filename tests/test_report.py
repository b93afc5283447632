"""`inv report` over sweep results and llama-benchy JSON: the compare matrix (CSV numbers are
the fixtures' means and stds), the charts, the llama-benchy conversion both ways, and
index.html as a browser sees it (headless Chromium: tables, decoded images, sorting)."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
import pytest
from conftest import skip_or_fail

from sparkops.bench.report.charts import classic_charts, depth_label
from sparkops.bench.report.report import load_all, report, sweep_tables
from sparkops.bench.results.benchy_json import from_benchy, to_benchy
from sparkops.bench.results.files import empty_provenance, new_result, validate, weights_provenance, write_result

PNG = b"\x89PNG\r\n\x1a\n"


# --- fixtures: documents in the sweep result's shape ---------------------------------------------

def stat(mean: float, std: float) -> dict:
    """Three runs whose mean and population std are exactly these."""
    d = std * math.sqrt(1.5)
    return {"mean": mean, "std": std, "values": [mean - d, mean, mean + d]}


def benchy(pp: tuple[float, float] | None, tg: tuple[float, float] | None) -> dict:
    figures = dict.fromkeys(["pp_throughput", "pp_req_throughput", "tg_throughput", "tg_req_throughput",
                             "peak_throughput", "peak_req_throughput", "ttfr", "est_ppt", "e2e_ttft"])
    if pp:
        figures |= {"pp_throughput": stat(*pp), "pp_req_throughput": stat(*pp), "ttfr": stat(250.0, 3.0),
                    "est_ppt": stat(249.0, 3.0), "e2e_ttft": stat(251.0, 3.0)}
    if tg:
        figures |= {"tg_throughput": stat(*tg), "tg_req_throughput": stat(*tg), "peak_throughput": stat(tg[0] + 2, 1)}
    return figures


def depth_cell(pp: int, tg: int, depth: int, pp_ts=None, tg_ts=None, *, status="ok", reason=None,
               context=None) -> dict:
    ok = status == "ok"
    return {"id": f"pp{pp}_tg{tg}_d{depth}_c1", "pp": pp, "tg": tg, "depth": depth, "concurrency": 1,
            "requests_per_run": 1, "status": status, "reason": reason, "prompt_tokens_requested": pp + depth,
            "prompt_tokens_counted": float(pp + depth) if ok else None,
            "benchy": benchy(pp_ts, tg_ts) if ok else None, "context": context, "spread": None, "metrics": None,
            "seconds": 4.2, "finished_at": "2025-06-01T10:00:00+00:00"}


def serving_cell(c: int, out_ts: tuple[float, float], p50: tuple[float, float], p99: tuple[float, float]) -> dict:
    spread = dict.fromkeys(["output_throughput", "total_token_throughput", "request_throughput", "median_ttft_ms",
                            "p99_ttft_ms", "median_tpot_ms", "median_itl_ms", "median_e2el_ms", "p99_e2el_ms"])
    spread |= {"output_throughput": stat(*out_ts), "median_ttft_ms": stat(*p50), "p99_ttft_ms": stat(*p99)}
    return {"id": f"serving_tg256_c{c}", "pp": None, "tg": 256, "depth": None, "concurrency": c,
            "requests_per_run": 4 * c, "status": "ok", "reason": None, "prompt_tokens_requested": None,
            "prompt_tokens_counted": 120.5, "benchy": None, "context": None, "spread": spread, "metrics": None,
            "seconds": 9.0, "finished_at": "2025-06-01T10:00:00+00:00"}


def sweep_doc(profile: str, kind: str, cells: list[dict], *, created_at: str, vllm="0.11.0") -> dict:
    """A sweep result as `inv bench --suite` writes it (validated against the schema)."""
    doc = new_result(status="ok", engine="sparkops", mode="sweep",
                     settings={"dataset": "sherlock-holmes", "num_prompts": 3, "concurrency": 1, "max_tokens": 32,
                               "temperature": 0.0, "ignore_eos": True, "endpoint": "chat", "request_rate": "inf"},
                     provenance=empty_provenance() | {"profile": profile, "model": f"org/{profile}-model",
                                                      "vllm_version": vllm, "config_hash": f"hash-{profile}"})
    doc["id"] += f"-{kind}-{created_at[:10]}"
    doc["created_at"] = created_at
    doc["sweep"] = {"suite": "leaderboard" if kind == "depth" else "serving", "kind": kind, "runs": 3,
                    "latency_mode": "api", "latency_ms": 0.8, "tokenizer": "server",
                    "tokenizer_note": "counted by the server's /tokenize", "prefix_caching": False,
                    "corpus": "sherlock-holmes", "corpus_digest": "abc123", "cells_planned": len(cells),
                    "complete": True}
    doc["cells"] = cells
    validate(doc)
    return doc


def benchy_file_data() -> dict:
    """llama-benchy 0.4.0's --format json, with prefix caching (a context entry before d4096)."""
    def entry(depth: int, pp: tuple, tg: tuple | None, context: bool = False) -> dict:
        return {"concurrency": 1, "context_size": depth, "prompt_size": 2048, "response_size": 32,
                "is_context_prefill_phase": context, **benchy(pp, tg),
                "throughput_over_time": None, "requests_throughput_over_time": None}
    return {"version": "0.4.0", "timestamp": "2025-05-20 08:30:00Z", "latency_mode": "api", "latency_ms": 1.5,
            "model": "openai/gpt-oss-120b", "prefix_caching_enabled": True, "max_concurrency": 1,
            "benchmarks": [entry(0, (1900.0, 15.0), (52.0, 0.4)),
                           entry(4096, (2100.0, 30.0), (47.0, 0.8), context=True),
                           entry(4096, (1700.0, 20.0), (49.5, 0.5))]}


ALPHA_DEPTH = [depth_cell(2048, 32, 0, (8521.3, 12.0), (58.25, 0.5)),
               depth_cell(2048, 32, 4096, (7400.0, 40.0), (55.0, 0.75)),
               depth_cell(2048, 32, 16384, status="skipped", reason="needs 18464 tokens, max_model_len is 16384")]
BETA_DEPTH = [depth_cell(2048, 32, 0, (3000.0, 10.0), (30.0, 0.25)),
              depth_cell(2048, 32, 4096, (2800.0, 8.0), (29.0, 0.3)),
              depth_cell(2048, 32, 16384, (2500.0, 9.0), (27.5, 0.2))]
ALPHA_SERVING = [serving_cell(1, (60.0, 0.5), (40.0, 1.0), (45.0, 2.0)),
                 serving_cell(4, (95.0, 3.0), (55.0, 2.0), (80.0, 4.0)),
                 serving_cell(16, (640.0, 9.0), (120.0, 6.0), (260.0, 12.0))]
BETA_SERVING = [serving_cell(1, (31.0, 0.2), (70.0, 1.5), (75.0, 2.5)),
                serving_cell(4, (100.0, 1.0), (90.0, 3.0), (140.0, 5.0))]


@pytest.fixture
def results(tmp_path) -> Path:
    folder = tmp_path / "results"
    # An older depth sweep of alpha: the report must take the newest one.
    write_result(sweep_doc("alpha", "depth", [depth_cell(2048, 32, 0, (1.0, 1.0), (1.0, 1.0))],
                           created_at="2025-05-01T10:00:00+00:00", vllm="0.10.0"), folder)
    write_result(sweep_doc("alpha", "depth", ALPHA_DEPTH, created_at="2025-06-01T10:00:00+00:00"), folder)
    write_result(sweep_doc("alpha", "serving", ALPHA_SERVING, created_at="2025-06-01T11:00:00+00:00"), folder)
    write_result(sweep_doc("beta", "depth", BETA_DEPTH, created_at="2025-06-02T10:00:00+00:00", vllm="0.11.1"),
                 folder)
    write_result(sweep_doc("beta", "serving", BETA_SERVING, created_at="2025-06-02T11:00:00+00:00"), folder)
    (folder / "community-gpt-oss.json").write_text(json.dumps(benchy_file_data(), indent=2))
    (folder / "broken-benchy.json").write_text(json.dumps({"benchmarks": [{"concurrency": "x"}],
                                                          "model": "m", "version": "0.4.0"}))
    (folder / "notes.json").write_text('{"hello": 1}')
    # A classic-mode result stays in matrix.csv, apart from the sweeps.
    write_result(new_result(status="skipped", engine="sparkops", mode="quick", reason="gated model needs a token",
                            settings={"dataset": "-", "num_prompts": 1, "concurrency": None, "max_tokens": 1,
                                      "temperature": 0.0, "ignore_eos": True, "endpoint": "chat",
                                      "request_rate": "inf"},
                            provenance=empty_provenance() | {"profile": "gated", "model": "org/gated"}), folder)
    return folder


# --- the compare matrix -------------------------------------------------------------------------

def test_compare_matrix_has_the_fixtures_numbers(results, tmp_path):
    df, files, warnings = report(results, tmp_path / "report")
    assert list(df["profile"]) == ["gated"]  # the classic matrix: no sweep rows in it
    assert any("notes.json" in w for w in warnings)
    assert any("broken-benchy.json" in w and "llama-benchy" in w for w in warnings)
    assert not any("community-gpt-oss.json" in w for w in warnings)

    csv = pd.read_csv(tmp_path / "report" / "compare.csv")
    assert list(csv.columns[:6]) == ["profile", "layout", "model", "source", "status", "weights"]
    assert list(csv.columns[-5:]) == ["reason", "vllm_version", "config_hash", "date", "file"]
    metric_columns = [c for c in csv.columns[6:-5] if not c.endswith(" ±")]
    assert metric_columns == ["pp2048 t/s @ d0", "tg32 t/s @ d0", "pp2048 t/s @ d4k", "tg32 t/s @ d4k",
                              "pp2048 t/s @ d16k", "tg32 t/s @ d16k",
                              "out tok/s @ c1", "TTFT p99 ms @ c1", "out tok/s @ c4", "TTFT p99 ms @ c4",
                              "out tok/s @ c16", "TTFT p99 ms @ c16"]
    assert all(f"{c} ±" in csv.columns for c in metric_columns)
    assert len(csv) == 3
    rows = {r["profile"]: r for _, r in csv.iterrows()}

    def figure(profile, column):
        return rows[profile][column], rows[profile][column + " ±"]

    for profile, cells in (("alpha", ALPHA_DEPTH), ("beta", BETA_DEPTH)):
        for cell in cells:
            if cell["status"] != "ok":
                continue
            d = depth_label(cell["depth"])
            assert figure(profile, f"pp2048 t/s @ {d}") == pytest.approx(
                (cell["benchy"]["pp_throughput"]["mean"], cell["benchy"]["pp_throughput"]["std"]))
            assert figure(profile, f"tg32 t/s @ {d}") == pytest.approx(
                (cell["benchy"]["tg_throughput"]["mean"], cell["benchy"]["tg_throughput"]["std"]))
    for profile, cells in (("alpha", ALPHA_SERVING), ("beta", BETA_SERVING)):
        for cell in cells:
            c, spread = cell["concurrency"], cell["spread"]
            assert figure(profile, f"out tok/s @ c{c}") == pytest.approx(
                (spread["output_throughput"]["mean"], spread["output_throughput"]["std"]))
            assert figure(profile, f"TTFT p99 ms @ c{c}") == pytest.approx(
                (spread["p99_ttft_ms"]["mean"], spread["p99_ttft_ms"]["std"]))

    alpha, beta = rows["alpha"], rows["beta"]
    assert alpha["status"] == "partial" and beta["status"] == "ok"
    assert pd.isna(alpha["pp2048 t/s @ d16k"]) and pd.isna(alpha["tg32 t/s @ d16k ±"])
    assert "pp2048_tg32_d16384_c1 skipped: needs 18464 tokens" in alpha["reason"]
    assert pd.isna(beta["out tok/s @ c16"])  # beta has no c16 cell
    assert alpha["vllm_version"] == "0.11.0"  # the newest depth sweep's, not the older 0.10.0 one
    assert alpha["file"].count(".json") == 2 and alpha["config_hash"] == "hash-alpha"

    community = rows["openai/gpt-oss-120b"]
    assert community["source"] == "llama-benchy" and community["file"] == "community-gpt-oss.json"
    assert figure("openai/gpt-oss-120b", "pp2048 t/s @ d4k") == pytest.approx((1700.0, 20.0))
    assert figure("openai/gpt-oss-120b", "tg32 t/s @ d0") == pytest.approx((52.0, 0.4))
    assert pd.isna(community["out tok/s @ c1"])

    md = (tmp_path / "report" / "compare.md").read_text()
    assert "| pp2048 t/s @ d0 |" in md and "8521.3 ± 12.0" in md and "| 60.0 ± 0.5 |" in md
    assert "| PARTIAL |" in md and "N/A" not in md
    names = {f.name for f in files}
    assert {"matrix.csv", "matrix.md", "compare.csv", "compare.md", "index.html"} <= names


def test_columns_name_what_tells_cells_apart(tmp_path):
    """Two pp values at one depth: the tg columns say which pp they were measured with."""
    folder = tmp_path / "results"
    cells = [depth_cell(512, 32, 0, (5000.0, 5.0), (60.0, 0.1)), depth_cell(2048, 32, 0, (8000.0, 8.0), (59.0, 0.2))]
    write_result(sweep_doc("gamma", "depth", cells, created_at="2025-06-03T10:00:00+00:00"), folder)
    report(folder, tmp_path / "report")
    csv = pd.read_csv(tmp_path / "report" / "compare.csv")
    assert {"pp512 t/s @ d0", "pp2048 t/s @ d0", "tg32 t/s @ d0 (pp512)", "tg32 t/s @ d0 (pp2048)"} <= set(csv.columns)
    assert csv.loc[0, "tg32 t/s @ d0 (pp2048)"] == 59.0


def test_depth_labels():
    assert [depth_label(d) for d in (0, 4096, 16384, 32768, 3000, 1500)] == ["d0", "d4k", "d16k", "d32k", "d3k",
                                                                            "d1500"]


# --- charts -------------------------------------------------------------------------------------

SWEEP_CHARTS = ["depth-pp.png", "depth-tg.png", "serving-throughput.png", "serving-ttft.png"]


def test_sweep_charts_are_written(results, tmp_path):
    from matplotlib.image import imread
    _, files, _ = report(results, tmp_path / "report")
    names = [f.name for f in files]
    for name in SWEEP_CHARTS:
        path = tmp_path / "report" / name
        assert name in names and path.read_bytes()[:8] == PNG
        image = imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05  # lines and text, not a blank canvas
    # No classic-mode results: no classic charts.
    assert not any(n in names for n in ("throughput.png", "requests.png", "latency.png", "e2el.png"))


def test_only_charts_with_data_are_written(tmp_path):
    folder = tmp_path / "results"
    write_result(sweep_doc("delta", "serving", BETA_SERVING, created_at="2025-06-03T10:00:00+00:00"), folder)
    _, files, _ = report(folder, tmp_path / "report")
    pngs = sorted(f.name for f in files if f.suffix == ".png")
    assert pngs == ["serving-throughput.png", "serving-ttft.png"]


def test_classic_charts_have_a_panel_per_mode(tmp_path):
    """Modes never share an axis: two modes, two panels, twice the height of one."""
    from matplotlib.image import imread
    base = {"profile": "p", "engine": "sparkops", "status": "ok", "output_tok_s": 10.0, "total_tok_s": 20.0,
            "req_s": 1.0, "median_ttft_ms": 5.0, "median_tpot_ms": 1.0, "median_itl_ms": 1.0,
            "median_e2el_ms": 50.0, "p99_e2el_ms": 60.0}
    one = classic_charts(pd.DataFrame([base | {"mode": "quick"}]), _mkdir(tmp_path / "one"))
    two = classic_charts(pd.DataFrame([base | {"mode": "quick"}, base | {"mode": "full"}]), _mkdir(tmp_path / "two"))
    assert [p.name for p in one] == ["throughput.png", "requests.png", "latency.png", "e2el.png"]
    assert imread(two[0]).shape[0] == 2 * imread(one[0]).shape[0]


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


# --- llama-benchy's JSON ------------------------------------------------------------------------

def test_llama_benchy_json_round_trip():
    data = benchy_file_data()
    doc = from_benchy(data, "community-gpt-oss.json")
    validate(doc)
    assert doc["engine"] == "llama-benchy" and doc["mode"] == "sweep" and doc["sweep"]["kind"] == "depth"
    assert doc["sweep"]["prefix_caching"] is True and doc["sweep"]["runs"] == 3
    assert [(c["pp"], c["tg"], c["depth"]) for c in doc["cells"]] == [(2048, 32, 0), (2048, 32, 4096)]
    assert doc["cells"][1]["context"]["pp_throughput"]["mean"] == 2100.0
    assert doc["cells"][1]["benchy"]["pp_throughput"]["mean"] == 1700.0
    assert to_benchy(doc) == data

    ours = sweep_doc("alpha", "depth", [*ALPHA_DEPTH[:2], depth_cell(2048, 32, 8192, (7000.0, 5.0), (54.0, 0.5),
                                                                      context=benchy((6000.0, 9.0), (53.0, 1.0)))],
                     created_at="2025-06-01T10:00:00+00:00")
    exported = to_benchy(ours)
    assert exported["model"] == "org/alpha-model" and exported["timestamp"] == "2025-06-01 10:00:00Z"
    assert [(b["context_size"], b["is_context_prefill_phase"]) for b in exported["benchmarks"]] == [
        (0, False), (4096, False), (8192, True), (8192, False)]
    back = from_benchy(json.loads(json.dumps(exported)), "exported.json")
    validate(back)
    for mine, theirs in zip(ours["cells"], back["cells"]):
        assert (mine["pp"], mine["tg"], mine["depth"], mine["concurrency"]) == \
            (theirs["pp"], theirs["tg"], theirs["depth"], theirs["concurrency"])
        assert mine["benchy"] == theirs["benchy"] and mine["context"] == theirs["context"]


def llama_benchy_output(path: Path) -> dict:
    """What llama-benchy 0.4.0 itself writes with --format json (its own code, a test
    dependency), for pp2048 tg32 at d0 and, with prefix caching, d4096 (a context phase first)."""
    from llama_benchy.client import RequestResult
    from llama_benchy.results import BenchmarkMetadata, BenchmarkResults

    def run(i: int, ttfr: float, tokens: int = 32) -> list:
        first = 10.0 * i + ttfr
        stamps = [first + k * (0.02 + 0.001 * i) for k in range(tokens)]
        return [RequestResult(start_ts=10.0 * i, end_ts=stamps[-1] + 0.001, first_token_ts=first,
                              first_response_ts=first, prompt_tokens=2048, total_tokens=tokens,
                              token_timestamps=stamps)]

    model, results = "Qwen/Qwen3-8B", BenchmarkResults()
    results.add(model, 2048, 32, 0, 1, [run(i, 0.25 + 0.01 * i) for i in range(3)], 0.001, 2048)
    results.add(model, 2048, 32, 4096, 1, [run(i, 0.7 + 0.02 * i) for i in range(3)], 0.001, 4096,
                is_context_phase=True)
    results.add(model, 2048, 32, 4096, 1, [run(i, 0.3 + 0.01 * i) for i in range(3)], 0.001, 2048)
    results.metadata = BenchmarkMetadata(version="0.4.0", timestamp="2025-05-21 09:00:00Z", latency_mode="api",
                                         latency_ms=1.0, model=model, prefix_caching_enabled=True, max_concurrency=1)
    results.save_report(str(path), "json")
    return json.loads(path.read_text())


def test_llama_benchy_s_own_output_is_read(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    data = llama_benchy_output(folder / "qwen3-benchy.json")
    doc = from_benchy(data, "qwen3-benchy.json")
    validate(doc)
    assert to_benchy(doc) == data
    _, _, warnings = report(folder, tmp_path / "report")
    assert warnings == []
    row = pd.read_csv(tmp_path / "report" / "compare.csv").iloc[0]
    assert (row["profile"], row["source"], row["status"]) == ("Qwen/Qwen3-8B", "llama-benchy", "ok")
    measured = [b for b in data["benchmarks"] if not b["is_context_prefill_phase"]]
    for bench, d in zip(measured, ("d0", "d4k")):
        for figure in ("pp", "tg"):
            column = f"{figure}{bench['prompt_size'] if figure == 'pp' else bench['response_size']} t/s @ {d}"
            stat_ = bench[f"{figure}_throughput"]
            assert (row[column], row[column + " ±"]) == pytest.approx((stat_["mean"], stat_["std"]))


def test_skipped_cells_are_not_exported_to_llama_benchy():
    ours = sweep_doc("alpha", "depth", ALPHA_DEPTH, created_at="2025-06-01T10:00:00+00:00")
    assert [b["context_size"] for b in to_benchy(ours)["benchmarks"]] == [0, 4096]


# --- index.html in a browser ----------------------------------------------------------------------

def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        skip_or_fail("chromium is not installed (apt-get install chromium; scripts/sim-apt-packages.txt)")
    assert found
    return found


def dump_dom(browser: str, page: Path, query: str = "") -> str:
    # --virtual-time-budget lets the load handlers run before the DOM is dumped.
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--virtual-time-budget=5000", "--dump-dom", page.as_uri() + query]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env=os.environ | {"HOME": str(page.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_index_html_in_headless_chromium(results, tmp_path):
    browser = chromium()
    _, files, _ = report(results, tmp_path / "report")
    index = tmp_path / "report" / "index.html"
    text = index.read_text()
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert text.count('src="data:image/png;base64,') == len(SWEEP_CHARTS)

    from html.parser import HTMLParser

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.body: dict[str, str] = {}
            self.table: str | None = None
            self.rows: dict[str, list[list[str]]] = {}
            self.cell: list[str] | None = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "body":
                self.body = {k: v or "" for k, v in a.items()}
            elif tag == "table":
                self.table = a.get("id")
                self.rows[self.table or ""] = []
            elif tag == "tr" and self.table:
                self.rows[self.table].append([])
            elif tag == "td":
                self.cell = []

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

        def handle_endtag(self, tag):
            if tag == "td" and self.cell is not None and self.table:
                self.rows[self.table][-1].append("".join(self.cell))
                self.cell = None

    def parse(query=""):
        p = Rows()
        p.feed(dump_dom(browser, index, query))
        return p

    page = parse()
    assert page.body.get("data-images") == str(len(SWEEP_CHARTS))
    assert page.body.get("data-images-loaded") == str(len(SWEEP_CHARTS))
    rows = [r for r in page.rows["compare"] if r]
    assert len(rows) == 3
    assert {r[0] for r in rows} == {"alpha", "beta", "openai/gpt-oss-120b"}
    assert any("8521.3 ± 12.0" in r for r in rows)
    classic = [r for r in page.rows["matrix"] if r]
    assert len(classic) == 1 and "gated" in classic[0] and "SKIPPED" in classic[0]

    # ?sort=COLUMN sorts on load, as a click on the header does; empty cells go last.
    def order(column, desc=False):
        query = "?" + urlencode({"sort": column} | ({"desc": "1"} if desc else {}))
        return [r[0] for r in parse(query).rows["compare"] if r]

    assert order("pp2048 t/s @ d0") == ["openai/gpt-oss-120b", "beta", "alpha"]
    assert order("pp2048 t/s @ d0", desc=True) == ["alpha", "beta", "openai/gpt-oss-120b"]
    # Numbers as numbers: 100 above 95 (as text, "95" would come first); the empty cell stays last.
    assert order("out tok/s @ c4", desc=True) == ["beta", "alpha", "openai/gpt-oss-120b"]


# --- layouts: a row per layout, the crossover sentence, the chart ------------------------------

def layout_doc(profile: str, layout: str, tp: int, dp: int, points: list[tuple[int, float]], created_at: str) -> dict:
    doc = sweep_doc(profile, "serving", [serving_cell(c, (v, v * 0.01), (100.0, 2.0), (150.0, 4.0)) for c, v in points],
                    created_at=created_at)
    doc["id"] += f"-{layout}"
    doc["provenance"] |= {"layout": layout, "tensor_parallel": tp, "pipeline_parallel": 1, "data_parallel": dp}
    validate(doc)
    return doc


def test_layouts_get_rows_a_sentence_that_matches_them_and_a_chart(tmp_path):
    folder = tmp_path / "results"
    write_result(layout_doc("delta", "tp", 2, 1, [(1, 70.0), (4, 200.0), (16, 400.0)], "2025-06-05T10:00:00+00:00"),
                 folder)
    write_result(layout_doc("delta", "dp", 1, 2, [(1, 50.0), (4, 190.0), (16, 520.0)], "2025-06-05T11:00:00+00:00"),
                 folder)
    write_result(layout_doc("delta", "solo", 1, 1, [(1, 60.0), (4, 120.0), (16, 260.0)], "2025-06-05T12:00:00+00:00"),
                 folder)
    _, files, _ = report(folder, tmp_path / "report")
    csv = pd.read_csv(tmp_path / "report" / "compare.csv")
    rows = {r["layout"]: r for _, r in csv.iterrows()}
    assert set(rows) == {"TP=2", "DP=2", "TP=1, one node"} and set(csv["profile"]) == {"delta"}
    md = (tmp_path / "report" / "layouts.md").read_text()
    assert ("- delta: TP=2 fastest up to concurrency 4 (by 5% over DP=2 at 4); "
            "above that DP=2, by 30% over TP=2 at 16.") in md
    # the sentence's numbers are the matrix's
    assert rows["TP=2"]["out tok/s @ c4"] / rows["DP=2"]["out tok/s @ c4"] == pytest.approx(200 / 190)
    assert rows["DP=2"]["out tok/s @ c16"] / rows["TP=2"]["out tok/s @ c16"] == pytest.approx(1.30)
    assert md.splitlines()[2] in (tmp_path / "report" / "compare.md").read_text()
    chart = tmp_path / "report" / "layouts-delta.png"
    assert chart in files and chart.read_bytes().startswith(PNG)
    assert "delta: TP=2 fastest" in (tmp_path / "report" / "index.html").read_text()


def test_random_weight_results_are_rows_apart_and_say_speed_only(tmp_path):
    """The same profile benched with its real weights and with random ones: two rows in each
    matrix, the random one's weights column, chart labels and the page saying so."""
    folder = tmp_path / "results"
    for weights, hour, tg in (("real", 10, 58.0), ("dummy", 11, 61.0)):
        doc = sweep_doc("alpha", "depth", [depth_cell(2048, 32, 0, (8000.0, 5.0), (tg, 0.5))],
                        created_at=f"2025-06-01T{hour}:00:00+00:00")
        doc["provenance"] |= weights_provenance(weights)
        write_result(doc, folder)
        quick = new_result(status="ok", engine="sparkops", mode="quick", settings=doc["settings"],
                           provenance=doc["provenance"], metrics=None)
        quick["id"] += f"-{weights}"
        write_result(quick, folder)
    df, _, _ = report(folder, tmp_path / "report")
    assert sorted(df["weights"]) == ["real", "speed only: random weights"]
    csv = pd.read_csv(tmp_path / "report" / "compare.csv").set_index("weights")
    assert csv.loc["speed only: random weights", "tg32 t/s @ d0"] == 61.0 and csv.loc["real", "tg32 t/s @ d0"] == 58.0
    assert "| speed only: random weights |" in (tmp_path / "report" / "compare.md").read_text()
    assert "| speed only: random weights |" in (tmp_path / "report" / "matrix.md").read_text()
    page = (tmp_path / "report" / "index.html").read_text()
    assert "2 of them speed only: random weights (model.weights = &quot;dummy&quot;" in page
    _, cells = sweep_tables([(p, d) for p, d in load_all(folder)[0] if d["mode"] == "sweep"])
    assert sorted(set(cells["label"])) == ["alpha", "alpha (random weights)"]


def _compare(rows):
    """A compare table as sweep_tables makes it: a figure column, then its std column."""
    columns = ["profile", "layout", "weights", "tg32 t/s @ d0", "tg32 t/s @ d0 ±", "out tok/s @ c4",
               "out tok/s @ c4 ±", "out tok/s @ c64", "out tok/s @ c64 ±", "TTFT p99 ms @ c1", "TTFT p99 ms @ c1 ±"]
    return pd.DataFrame(rows, columns=columns)


def test_which_is_fastest_names_the_best_row_and_calls_a_lead_inside_the_spread_a_tie():
    from sparkops.bench.report.report import fastest
    df = _compare([
        ["a", "TP=1, one node", None, 210.2, 0.5, 800.0, 1.0, 7552.0, 6.5, 71.2, 1.2],
        ["b", "TP=1, one node", None, 209.3, 0.6, 900.0, 1.0, 6600.0, 1.5, 70.3, 1.4],
        ["c", "TP=1, one node", None, 113.5, 0.2, 435.0, 0.3, float("nan"), float("nan"), 128.0, 4.4],
    ])
    lines = fastest(df)
    assert lines[0] == ("Fastest decode for one user (tg32 t/s @ d0): a, 210.2 ± 0.5; "
                        "then b, 209.3 ± 0.6 (a tie within the spread)")
    # Under load: the highest concurrency measured (c64, not c4); a row without it is left out.
    assert lines[1] == ("Most output under load (out tok/s @ c64): a, 7552.0 ± 6.5; "
                        "then b, 6600.0 ± 1.5 (ahead by 14 %)")
    # Lower is better for the first token: b's 0.9 ms lead is inside 1.2 + 1.4.
    assert lines[2].startswith("Quickest first token for one user (TTFT p99 ms @ c1): b, 70.3 ± 1.4; then a")
    assert lines[2].endswith("(a tie within the spread)")
    assert len(lines) == 3  # no pp column: no prompt-processing line


def test_which_is_fastest_tells_layouts_and_random_weights_apart():
    from sparkops.bench.report.report import fastest
    df = _compare([
        ["a", "TP=2, two nodes", None, 50.0, 0.1, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        ["a", "TP=1, one node", None, 40.0, 0.1, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        ["b", "TP=1, one node", "speed only: random weights", 30.0, 0.1, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        ["b", "TP=1, one node", None, 20.0, 0.1, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
    ])
    first = fastest(df)[0]
    assert first.startswith("Fastest decode for one user (tg32 t/s @ d0): a (TP=2, two nodes), 50.0 ± 0.1; "
                            "then a (TP=1, one node), 40.0 ± 0.1 (ahead by 25 %)"), first
    assert fastest(df.iloc[2:])[0].startswith("Fastest decode for one user (tg32 t/s @ d0): b (random weights)")
    assert fastest(df.iloc[0:0]) == []
