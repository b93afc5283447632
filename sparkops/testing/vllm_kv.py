"""What vLLM itself reserves for one full-length request, by the kind of attention: a toy model
of each kind (tests/data/vllm_toys/KIND/config.json: a few layers, random weights through
vLLM's `--load-format dummy`, the smoke model's tokenizer) started with the CPU build and a
1 GiB KV cache; vLLM logs `CPU KV cache size: N tokens, Maximum concurrency for L tokens per
request: C x`, so one request takes 2^30 / C bytes. tests/test_memfit_vs_vllm.py and
benchmarks/memfit_kinds_cpu.py compare that with the memory fit's estimate.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sparkops.config.memfit import kv_bytes_one_sequence
from sparkops.models.hf_config import parse
from sparkops.testing.processes import stop_group

ROOT = Path(__file__).resolve().parents[2]
TOYS = ROOT / "tests" / "data" / "vllm_toys"
KV_SPACE_GIB = 1
MAX_MODEL_LEN = 2048
BATCHED_TOKENS = 256
CPU_BLOCK = 128  # vLLM's CPU build allocates the KV cache in blocks of 128 tokens
CAPACITY = re.compile(r"KV cache size: ([0-9,]+) tokens, Maximum concurrency for ([0-9,]+) tokens per request: "
                      r"([0-9.]+)x")
FLAGS = ["--load-format", "dummy", "--max-model-len", str(MAX_MODEL_LEN),
         "--max-num-batched-tokens", str(BATCHED_TOKENS), "--max-num-seqs", "8"]


@dataclass(frozen=True)
class Reserved:
    kind: str
    tokens: int  # the KV cache size vLLM logged
    concurrency: float  # full-length requests it holds
    line: str  # vLLM's log line

    @property
    def bytes_per_request(self) -> float:
        return KV_SPACE_GIB * 2 ** 30 / self.concurrency


def estimate(kind: str) -> tuple[dict, float]:
    """The toy's model.arch as profile-new reads it, and the memory fit's bytes for one request
    on the CPU build: blocks of 128 tokens, one batch in flight (it schedules synchronously;
    with two batches the windowed layers would hold 768 tokens, not 512)."""
    arch = parse(json.loads((TOYS / kind / "config.json").read_text())).arch
    ours = kv_bytes_one_sequence(arch, MAX_MODEL_LEN, 2, in_flight=BATCHED_TOKENS, block=CPU_BLOCK)
    if ours is None:
        raise ValueError(f"the {kind} toy's config.json lacks the numbers the estimate needs")
    return arch, ours


def kinds() -> list[str]:
    return sorted(p.name for p in TOYS.iterdir() if (p / "config.json").is_file())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tokenizer_files(venv: Path, into: Path) -> None:
    """The smoke model's tokenizer (built offline, the same recipe as every test's model)."""
    built = into.parent / "smoke"
    subprocess.run([str(venv / "bin/python"), "-m", "sparkops.node_scripts.smoke_model", "--out", str(built)],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (built / name).is_file():
            shutil.copy(built / name, into / name)


def reserved(kind: str, venv: Path, timeout_s: float = 420) -> Reserved:
    """Start the toy of this kind with the CPU build until it logs its KV capacity, then stop it."""
    with tempfile.TemporaryDirectory(prefix=f"vllm-toy-{kind}-") as tmp:
        model = Path(tmp) / kind
        model.mkdir()
        shutil.copy(TOYS / kind / "config.json", model / "config.json")
        _tokenizer_files(venv, model)
        log = Path(tmp) / "serve.log"
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(KV_SPACE_GIB), "HF_HUB_OFFLINE": "1"}
        with log.open("w") as out:
            proc = subprocess.Popen([str(venv / "bin/vllm"), "serve", str(model), "--host", "127.0.0.1",
                                     "--port", str(_free_port()), *FLAGS], stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace")
                if m := CAPACITY.search(text):
                    return Reserved(kind, int(m.group(1).replace(",", "")), float(m.group(3)),
                                    m.group(0))
                if proc.poll() is not None:
                    break
                time.sleep(1)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"vLLM never logged the KV capacity of the {kind} toy (exit {proc.poll()}):\n{tail}")
        finally:
            stop_group(proc)
