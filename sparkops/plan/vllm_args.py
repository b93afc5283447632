"""The `vllm serve` argv of a profile (pure). Values travel as argv items, never via a shell."""
from __future__ import annotations

import json

from sparkops.config import Config
from sparkops.config.weights import load_format


def listen_address(cfg: Config) -> str:
    """Where the API listens on the head (cluster.api.listen). On every interface it needs the
    API key (VLLM_API_KEY, from the 0600 env file) unless cluster.api.open says otherwise:
    checks/api.py refuses the rest before anything starts."""
    return "127.0.0.1" if cfg.cluster.get("api", {}).get("listen") == "loopback" else "0.0.0.0"


def serve_argv(cfg: Config, *, host: str | None = None, port: int | None = None) -> list[str]:
    """`host`/`port`: where this server listens, if not the API's (a replica behind the router)."""
    s, m = cfg.serving, cfg.model
    argv = ["vllm", "serve", m["repo"],
            "--served-model-name", cfg.served_model_name,
            "--host", host or listen_address(cfg), "--port", str(port or cfg.cluster["ports"]["api"]),
            "--tensor-parallel-size", str(s["tensor_parallel"]),
            "--pipeline-parallel-size", str(s["pipeline_parallel"]),
            "--max-model-len", str(s["max_model_len"]),
            "--dtype", s["dtype"],
            "--kv-cache-dtype", s["kv_cache_dtype"],
            "--load-format", load_format(cfg.doc)]
    if cfg.cluster["accelerator"] == "nvidia":
        argv += ["--gpu-memory-utilization", str(s["gpu_memory_utilization"])]
    if m.get("revision"):
        argv += ["--revision", m["revision"]]
    if s.get("quantization"):
        argv += ["--quantization", s["quantization"]]
    if s.get("max_num_seqs"):
        argv += ["--max-num-seqs", str(s["max_num_seqs"])]
    if s.get("max_num_batched_tokens"):
        argv += ["--max-num-batched-tokens", str(s["max_num_batched_tokens"])]
    if s.get("cudagraph_capture_sizes"):
        # vLLM 0.10's --cuda-graph-sizes is gone in later releases; the compilation config is in all
        argv += ["--compilation-config",
                 json.dumps({"cudagraph_capture_sizes": sorted(s["cudagraph_capture_sizes"])}, separators=(",", ":"))]
    if s.get("speculative_config"):
        argv += ["--speculative-config", json.dumps(s["speculative_config"], sort_keys=True, separators=(",", ":"))]
    for flag, key in (("--enable-expert-parallel", "expert_parallel"),
                      ("--trust-remote-code", "trust_remote_code"),
                      ("--enforce-eager", "enforce_eager")):
        if s.get(key):
            argv.append(flag)
    return argv + list(s.get("extra_args", []))
