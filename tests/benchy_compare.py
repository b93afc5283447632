"""sparkops' sweep and llama-benchy (0.4.0, a test dependency) against one server, for the
agreement tests and benchmarks/sweep_accuracy.py.

llama-benchy fetches its book from the internet; it gets ours instead (the same book) through
its cache file, ~/.cache/llama-benchy/<md5 of the URL>.txt, under a HOME of its own. Against
the synthetic server, whose tokens are whitespace-separated words, it gets a word-level
tokenizer built from the corpus, so that both tools build prompts the server counts exactly."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from sparkops.bench.load.corpus import load_corpus

ROOT = Path(__file__).resolve().parent.parent
BOOK_URL = "https://www.gutenberg.org/files/1661/1661-0.txt"  # llama-benchy's default book


def benchy_home(folder: Path) -> Path:
    """A HOME whose llama-benchy cache holds the shipped corpus under the default book's URL."""
    cache = folder / ".cache" / "llama-benchy"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{hashlib.md5(BOOK_URL.encode()).hexdigest()}.txt").write_text(load_corpus().text, encoding="utf-8")
    return folder


def word_tokenizer(path: Path) -> Path:
    """tokenizer.json of a whitespace word-level tokenizer over the corpus: the synthetic
    server's notion of a token (decode joins with single spaces, as its /detokenize does)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = sorted(set(load_corpus().text.split()) | {"Warmup", "hello", "."})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


def benchy_argv(url: str, model: str, tokenizer: str, out: Path, *, pp: list[int], tg: list[int],
                depth: list[int], concurrency: list[int], runs: int, latency_mode: str = "api") -> list[str]:
    return [sys.executable, "-m", "llama_benchy", "--base-url", f"{url.rstrip('/')}/v1", "--model", model,
            "--tokenizer", tokenizer, "--pp", *map(str, pp), "--tg", *map(str, tg), "--depth", *map(str, depth),
            "--concurrency", *map(str, concurrency), "--runs", str(runs), "--latency-mode", latency_mode,
            "--exact-tg", "--skip-coherence", "--book-url", BOOK_URL, "--format", "json", "--save-result", str(out)]


def ours_argv(url: str, out: Path, *, pp: list[int], tg: list[int], depth: list[int], concurrency: list[int],
              runs: int, latency_mode: str = "api", profile: str | None = None, sets: list[str] = ()) -> list[str]:
    def csv(v):
        return ",".join(map(str, v))
    argv = [sys.executable, "-m", "invoke", "bench", "--url", url, "--pp", csv(pp), "--tg", csv(tg),
            "--depth", csv(depth), "--concurrency", csv(concurrency), "--runs", str(runs),
            "--latency-mode", latency_mode, "--output", str(out)]
    if profile:
        argv += ["--profile", profile]
    for s in sets:
        argv += ["--set", s]
    return argv


def start(argv: list[str], home: Path | None = None, key: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    if key:
        env["OPENAI_API_KEY"] = key
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    """A tool's exit status and output; killed if it outlives `timeout`."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out or ""


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    rc, out = wait(proc, timeout)
    assert rc == 0, (proc.args, out[-3000:])
    return out


def figures(ours: dict, theirs: dict) -> list[dict]:
    """Per (pp, tg, depth, concurrency): both tools' tg and pp t/s (total) and e2e_ttft, as
    {"cell", "ours": {...}, "theirs": {...}}."""
    rows = []
    for b in theirs["benchmarks"]:
        if b["is_context_prefill_phase"]:
            continue
        cid = f"pp{b['prompt_size']}_tg{b['response_size']}_d{b['context_size']}_c{b['concurrency']}"
        cell = next(c for c in ours["cells"] if c["id"] == cid)
        assert cell["status"] == "ok", cell
        keys = ("pp_throughput", "tg_throughput", "pp_req_throughput", "tg_req_throughput", "e2e_ttft", "est_ppt")
        rows.append({"cell": cid,
                     "ours": {k: cell["benchy"][k]["mean"] for k in keys if cell["benchy"][k]},
                     "theirs": {k: b[k]["mean"] for k in keys if b.get(k)}})
    return rows


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def compare_rounds(api: str, model: str, tokenizer: str, work: Path, cells: dict, *, rounds: int = 3,
                   client: tuple[str, ...] = (), api_key: str | None = None) -> list[dict]:
    """Both tools in turn (alternating who goes first), `rounds` times, each run wrapped in
    `client` (e.g. taskset); per round: both tools' figures per cell and vLLM's own decode rate
    (Prometheus counters read around each tool's run) as {"rows", "server", "ours_tg", "theirs_tg"}."""
    from bench_compare import decode_counters, server_tg
    home = benchy_home(work / "home")
    out = []
    for i in range(rounds):
        ours, theirs = work / f"ours-{i}.json", work / f"benchy-{i}.json"
        server = {}
        for tool in (("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")):
            before = decode_counters(api)
            if tool == "ours":
                finish(start([*client, *ours_argv(api, ours, **cells)], key=api_key))
            else:
                # llama-benchy takes its key only as a flag: a throwaway test key, never a user's.
                finish(start([*client, *benchy_argv(api, model, tokenizer, theirs, **cells),
                              *(["--api-key", api_key] if api_key else [])], home))
            server[tool] = server_tg(before, decode_counters(api))
        doc = load(ours)
        assert doc["sweep"]["tokenizer"] == "server", doc["sweep"]
        for c in doc["cells"]:
            assert abs(c["prompt_tokens_counted"] - c["prompt_tokens_requested"]) <= 1, c
        rows = figures(doc, load(theirs))
        # vLLM's counters take in every request (warm-ups too): set against the mean over cells
        ours_tg = sum(r["ours"]["tg_throughput"] for r in rows) / len(rows)
        theirs_tg = sum(r["theirs"]["tg_throughput"] for r in rows) / len(rows)
        print(f"round {i}: vLLM's own decode rate {server['ours']:.1f} tok/s while ours ran (ours "
              f"{ours_tg:.1f}), {server['theirs']:.1f} while llama-benchy ran (llama-benchy {theirs_tg:.1f})")
        out.append({"rows": rows, "server": server, "ours_tg": ours_tg, "theirs_tg": theirs_tg})
    return out


def round_means(rounds: list[dict]) -> dict[str, dict]:
    """Per cell: the mean over rounds of each tool's pp and tg t/s."""
    cells = {}
    for k, cell in enumerate(rounds[0]["rows"]):
        cells[cell["cell"]] = {side: {key: sum(r["rows"][k][side][key] for r in rounds) / len(rounds)
                                      for key in ("pp_throughput", "tg_throughput")}
                               for side in ("ours", "theirs")}
    print("sparkops vs llama-benchy, means over rounds:", json.dumps(cells, indent=1))
    return cells


OURS_VS_SERVER = 0.15  # vLLM's counters include each cell's warm-up request, which runs cold
# llama-benchy against the same counters: measured 4-12 % below them on the local CPU vLLM and
# 10-13 % below across the two simulated hosts (its chunks are stamped when its aiohttp task
# resumes), over the CI runs of 2026-12; 20 % leaves room for that spread and no more. A larger
# gap means it did other work than the server counted, not that it measured it differently.
BENCHY_VS_SERVER = 0.20


def check_rounds(rounds: list[dict]) -> None:
    """Each tool's decode rate against vLLM's own accounting of the same requests, which moves
    with the server from one run to the next as neither tool does: ours within 15 % in every
    round, llama-benchy within 20 %, and ours the closer on average.

    pp is not compared here: vLLM's CPU build gives no truth for it, and the two tools' pp on a
    prefill of tens of ms differs by their latency estimates, not by the server. pp is held to a
    known truth instead (the synthetic server's fixed prefill rate: tests/test_bench_sweep.py,
    within 2 %, and benchmarks/sweep_accuracy.py for both tools)."""
    from bench_compare import gap
    for i, r in enumerate(rounds):
        assert gap(r["ours_tg"], r["server"]["ours"]) <= OURS_VS_SERVER, (i, r)
        assert gap(r["theirs_tg"], r["server"]["theirs"]) <= BENCHY_VS_SERVER, (i, r)
    ours_err = sum(gap(r["ours_tg"], r["server"]["ours"]) for r in rounds) / len(rounds)
    theirs_err = sum(gap(r["theirs_tg"], r["server"]["theirs"]) for r in rounds) / len(rounds)
    print(f"mean gap to vLLM's own decode rate: sparkops {ours_err:.1%}, llama-benchy {theirs_err:.1%}")
    assert ours_err <= theirs_err + 0.01, (ours_err, theirs_err)
    round_means(rounds)  # printed: both tools' pp and tg per cell, for the record
