"""`vllm serve MODEL [flags]` and `vllm --version`, as vLLM's CLI takes them.

The flags are a subset of real vLLM's (0.2x) `vllm serve` options: every flag sparkops' planner
can pass (sparkops/plan/vllm_args.py and the backends), and a few common ones people put in
serving.extra_args. A flag real vLLM would not know is refused as vLLM refuses it (argparse:
usage, the error, exit 2), so sparkops' preflight, which parses `vllm serve --help=all`, sees a
real list. The flags the performance model reads are used (perf.py); the rest are accepted and
ignored (parallel sizes, dtypes, load format: one process serves everything)."""
from __future__ import annotations

import argparse
import sys

from . import __version__

BOOL = argparse.BooleanOptionalAction


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm serve", add_help=False, allow_abbrev=False,
                                description="Launch a local OpenAI-compatible API server to serve LLM "
                                            "completions via HTTP (sparkops' fake: see perf.py).")
    p.add_argument("model_tag", nargs="?", help="The model tag to serve (optional if specified in config)")
    p.add_argument("-h", "--help", nargs="?", const="default", metavar="SECTION",
                   help="Show this help; =all shows every option")
    api = p.add_argument_group("Frontend")
    api.add_argument("--host", default=None, help="Host name.")
    api.add_argument("--port", type=int, default=8000, help="Port number.")
    api.add_argument("--api-key", default=None, help="If provided, the server will require this key in the header.")
    api.add_argument("--served-model-name", nargs="+", default=None, help="The model name(s) used in the API.")
    api.add_argument("--uvicorn-log-level", default="info",
                     choices=["critical", "debug", "error", "info", "trace", "warning"], help="Log level for uvicorn.")
    api.add_argument("--disable-uvicorn-access-log", action=BOOL, default=False, help="Disable uvicorn access log.")
    api.add_argument("--enable-log-requests", action=BOOL, default=False, help="Log requests.")
    api.add_argument("--disable-log-stats", action="store_true", help="Disable logging statistics.")
    api.add_argument("--chat-template", default=None, help="The file path to the chat template.")
    api.add_argument("--headless", action="store_true", help="Run in headless mode (no API server).")
    api.add_argument("--enable-auto-tool-choice", action=BOOL, default=False,
                     help="Enable auto tool choice for supported models.")
    api.add_argument("--tool-call-parser", default=None, help="Select the tool call parser.")
    model = p.add_argument_group("ModelConfig")
    model.add_argument("--model", default=None, help="Name or path of the Hugging Face model to use.")
    model.add_argument("--tokenizer", default=None, help="Name or path of the Hugging Face tokenizer to use.")
    model.add_argument("--revision", default=None, help="The specific model version to use.")
    model.add_argument("--trust-remote-code", action=BOOL, default=False, help="Trust remote code.")
    model.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float", "float16", "float32", "half"],
                       help="Data type for model weights and activations.")
    model.add_argument("--seed", type=int, default=0, help="Random seed for reproducibility.")
    model.add_argument("--max-model-len", type=int, default=None, help="Model context length.")
    model.add_argument("--quantization", "-q", default=None, help="Method used to quantize the weights.")
    model.add_argument("--enforce-eager", action=BOOL, default=False,
                       help="Always use eager-mode PyTorch (no CUDA graphs).")
    model.add_argument("--max-logprobs", type=int, default=20, help="Maximum number of log probabilities.")
    model.add_argument("--generation-config", default="auto", help="The folder path to the generation config.")
    model.add_argument("--tokenizer-mode", default="auto", help="Tokenizer mode.")
    load = p.add_argument_group("LoadConfig")
    load.add_argument("--load-format", default="auto", help="The format of the model weights to load.")
    load.add_argument("--download-dir", default=None, help="Directory to download and load the weights.")
    par = p.add_argument_group("ParallelConfig")
    par.add_argument("--tensor-parallel-size", "-tp", type=int, default=1, help="Number of tensor parallel groups.")
    par.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1, help="Number of pipeline stages.")
    par.add_argument("--data-parallel-size", "-dp", type=int, default=1, help="Number of data parallel groups.")
    par.add_argument("--data-parallel-size-local", "-dpl", type=int, default=None,
                     help="Number of data parallel replicas to run on this node.")
    par.add_argument("--data-parallel-start-rank", "-dpr", type=int, default=None,
                     help="Starting data parallel rank for secondary nodes.")
    par.add_argument("--data-parallel-address", "-dpa", default=None, help="Address of data parallel cluster head.")
    par.add_argument("--data-parallel-rpc-port", "-dpp", type=int, default=None,
                     help="Port for data parallel RPC communication.")
    par.add_argument("--enable-expert-parallel", action=BOOL, default=False,
                     help="Use expert parallelism instead of tensor parallelism for MoE layers.")
    par.add_argument("--distributed-executor-backend", default=None, choices=["external_launcher", "mp", "ray", "uni"],
                     help="Backend to use for distributed model workers.")
    par.add_argument("--nnodes", type=int, default=1, help="Number of nodes (multi-node mp).")
    par.add_argument("--node-rank", type=int, default=0, help="Rank of this node (multi-node mp).")
    par.add_argument("--master-addr", default="127.0.0.1", help="Address of the master node (multi-node mp).")
    par.add_argument("--master-port", type=int, default=29501, help="Port of the master node (multi-node mp).")
    cache = p.add_argument_group("CacheConfig")
    cache.add_argument("--gpu-memory-utilization", type=float, default=None,
                       help="The fraction of GPU memory to be used for the model executor.")
    cache.add_argument("--kv-cache-dtype", default="auto",
                       choices=["auto", "bfloat16", "fp8", "fp8_ds_mla", "fp8_e4m3", "fp8_e5m2", "fp8_inc"],
                       help="Data type for kv cache storage.")
    cache.add_argument("--block-size", type=int, default=None, help="Size of a contiguous cache block.")
    cache.add_argument("--swap-space", type=float, default=4, help="Size of the CPU swap space per GPU (GiB).")
    cache.add_argument("--enable-prefix-caching", action=BOOL, default=None, help="Whether to enable prefix caching.")
    cache.add_argument("--cpu-offload-gb", type=float, default=0, help="The space in GiB to offload to CPU.")
    cache.add_argument("--mamba-ssm-cache-dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                       help="Data type of the Mamba SSM state cache.")
    sched = p.add_argument_group("SchedulerConfig")
    sched.add_argument("--max-num-seqs", type=int, default=None,
                       help="Maximum number of sequences to be processed in a single iteration.")
    sched.add_argument("--max-num-batched-tokens", type=int, default=None,
                       help="Maximum number of tokens to be processed in a single iteration.")
    sched.add_argument("--enable-chunked-prefill", action=BOOL, default=None, help="Chunk prefill requests.")
    sched.add_argument("--async-scheduling", action=BOOL, default=None, help="Asynchronous scheduling.")
    spec = p.add_argument_group("SpeculativeConfig")
    spec.add_argument("--speculative-config", default=None, help="The configurations for speculative decoding (JSON).")
    comp = p.add_argument_group("CompilationConfig")
    comp.add_argument("--compilation-config", "-O", default=None, help="torch.compile and cudagraph configuration.")
    comp.add_argument("--max-cudagraph-capture-size", type=int, default=None, help="Largest CUDA graph batch size.")
    attn = p.add_argument_group("AttentionConfig")
    attn.add_argument("--attention-backend", default=None, help="Attention backend.")
    kernel = p.add_argument_group("KernelConfig")
    kernel.add_argument("--moe-backend", default="auto", help="MoE kernel backend.")
    reasoning = p.add_argument_group("StructuredOutputsConfig")
    reasoning.add_argument("--reasoning-parser", default="", help="Select the reasoning parser.")
    return p


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-v"]):
        print(__version__)
        return 0
    if args[:1] != ["serve"]:
        print("usage: vllm [-h] [-v] {serve} ...\nvllm: error: this fake vLLM has only `vllm serve` "
              f"(got {' '.join(args) or 'nothing'})", file=sys.stderr)
        return 2
    p = parser()
    rest = args[1:]
    if any(a in ("-h", "--help") or a.startswith("--help=") for a in rest):
        p.print_help()
        return 0
    ns = p.parse_args(rest)  # exits 2 on a flag vLLM does not know, as vLLM's own parser does
    if ns.model_tag and ns.model:
        p.error("With `vllm serve`, you should provide the model as a positional argument or in a config "
                "file instead of via the `--model` option.")
    ns.non_default = {k: v for k, v in vars(ns).items() if v != p.get_default(k) and k != "help"}
    ns.model_tag = ns.model_tag or ns.model or "facebook/opt-125m"
    from .server import serve
    return serve(ns)


if __name__ == "__main__":
    sys.exit(main())
