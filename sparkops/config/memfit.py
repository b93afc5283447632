"""Will the model fit? A per-node memory estimate made before anything starts.

Weights are split evenly over tensor x pipeline ranks (each data-parallel replica holds them
all); the KV cache of one full-length sequence must fit beside them inside node memory x
gpu_memory_utilization. On unified memory (DGX Spark) that budget is carved out of the same
RAM the OS lives in.

Node memory is `cluster.node_memory_gib` (static: what config-time validation judges with, when
no node has been asked) unless the caller read it from the nodes' facts (node_memory_gib=):
/proc/meminfo on unified memory, nvidia-smi's memory.total on a discrete GPU (checks/profile.py).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

GIB = 1024 ** 3
# CUDA context, activations for the profiling run, sampler buffers and CUDA graphs: vLLM's
# non-KV, non-weight use measured on single-GPU runs is typically 1.5-4 GiB.
RUNTIME_OVERHEAD_GIB = 3.0
DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4,
               "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


@dataclass(frozen=True)
class MemFit:
    nodes: int
    node_memory_gib: float
    budget_gib: float
    weights_gib: float
    overhead_gib: float
    kv_per_token_kib: float | None
    kv_one_seq_gib: float | None
    kv_room_gib: float
    full_length_seqs: float | None
    os_left_gib: float
    verdict: str  # "fits", "tight", "does-not-fit", "unknown"
    reason: str

    def as_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def replicas_per_node(doc: dict) -> int:
    """How many data-parallel replicas one node holds: each needs tensor x pipeline GPUs of
    its own node (0: one replica needs more GPUs than a node has)."""
    serving = doc["serving"]
    ranks = serving["tensor_parallel"] * serving["pipeline_parallel"]
    return doc["cluster"].get("gpus_per_node", 1) // ranks


def nodes_needed(doc: dict) -> int:
    serving, cluster = doc["serving"], doc["cluster"]
    ranks = serving["tensor_parallel"] * serving["pipeline_parallel"]
    dp = serving.get("data_parallel", 1)
    if dp > 1 and replicas_per_node(doc):
        return math.ceil(dp / replicas_per_node(doc))
    return math.ceil(ranks * dp / cluster.get("gpus_per_node", 1))


def ranks_per_node(doc: dict) -> int:
    """GPUs one node gives the model: one replica's share, or whole replicas side by side (data
    parallel), at most the node's GPUs."""
    serving = doc["serving"]
    ranks = serving["tensor_parallel"] * serving["pipeline_parallel"] * serving.get("data_parallel", 1)
    return min(ranks, doc["cluster"].get("gpus_per_node", 1))


# vLLM's KV cache block (tokens) on GPUs: a sequence takes whole blocks of every layer group.
BLOCK_TOKENS = 16
# vLLM's --max-num-batched-tokens when none is given, for online serving on a GPU of 70 GiB
# or more (GB10's ~121 GiB and H100/H200 alike; vllm/engine/arg_utils.py).
DEFAULT_BATCHED_TOKENS = 8192


def kv_bytes_one_sequence(arch: dict, tokens: int, dtype_bytes: float, tp: int = 1, pp: int = 1,
                          in_flight: int = 0, draft_layers: int = 0, block: int = BLOCK_TOKENS) -> float | None:
    """The KV cache one sequence of `tokens` takes on one rank, by the kind of attention
    (`model.arch`; None when its numbers are missing), in whole blocks as vLLM allocates it:

    - standard (MHA/GQA): K and V per layer, num_kv_heads x head_dim each, the heads split over
      tensor-parallel ranks (replicated where tp > heads);
    - MLA (attention = "mla", DeepSeek-V2/V3, Kimi K2): one compressed latent per layer and
      token, kv_lora_rank + qk_rope_head_dim values, the same on every tensor-parallel rank;
    - sliding-window layers (sliding_layers of them, window sliding_window) hold the window
      less one token plus the tokens in flight (`in_flight`: chunked prefill frees blocks only
      once the batches that hold them are done; vLLM reserves window - 1 + in-flight tokens and
      one block more, SlidingWindowSpec in vllm/v1/kv_cache_interface.py), never more than the
      sequence; linear-attention layers (linear_layers: a fixed-size state, Qwen3-Next's
      Gated DeltaNet, Mamba) hold no per-token cache and are left out (their state is small
      beside it);
    - a speculative decoder's MTP layers (`draft_layers`) keep a full cache of their own.

    `block`: vLLM's KV block in tokens, 16 on GPUs (128 on its CPU build)."""
    if "num_layers" not in arch:
        return None
    if arch.get("attention") == "mla":
        if not {"kv_lora_rank", "qk_rope_head_dim"} <= arch.keys():
            return None
        per_layer_token = (arch["kv_lora_rank"] + arch["qk_rope_head_dim"]) * dtype_bytes
    else:
        if not {"num_kv_heads", "head_dim"} <= arch.keys():
            return None
        heads = max(1, math.ceil(arch["num_kv_heads"] / tp))  # KV heads are replicated when tp > heads
        per_layer_token = 2 * heads * arch["head_dim"] * dtype_bytes
    sliding = arch.get("sliding_layers", 0) if arch.get("sliding_window") else 0
    full = arch["num_layers"] - sliding - arch.get("linear_layers", 0)
    full_tokens = math.ceil(tokens / block) * block
    window_tokens = 0
    if sliding:
        held = min(arch["sliding_window"] - 1 + in_flight, tokens)
        window_tokens = (math.ceil(held / block) + 1) * block
    # The busiest pipeline stage holds the rounded-up share of each kind of layer; the MTP
    # layers sit on the last stage.
    return per_layer_token * ((math.ceil(full / pp) + draft_layers) * full_tokens
                              + math.ceil(sliding / pp) * window_tokens)


def in_flight_tokens(serving: dict) -> int:
    """Tokens scheduled but not yet done, which sliding-window layers hold beyond their window:
    one batch per concurrent step, two with async scheduling (vLLM's default) or as many as
    pipeline stages (VllmConfig.max_in_flight_tokens)."""
    batched = serving.get("max_num_batched_tokens") or DEFAULT_BATCHED_TOKENS
    return batched * max(2, serving.get("pipeline_parallel", 1))


def draft_layers(doc: dict) -> int:
    """The MTP layers a speculative decoder adds a cache for (model.arch.mtp_layers, 1 when the
    method is an MTP one and the profile does not say; 0 for n-gram and other methods)."""
    method = str((doc["serving"].get("speculative_config") or {}).get("method", ""))
    if method != "mtp" and not method.endswith("_mtp"):  # mtp, deepseek_mtp, qwen3_5_mtp, ...
        return 0
    return doc["model"].get("arch", {}).get("mtp_layers", 1)


def discrete_gpu(cluster: dict) -> bool:
    """NVIDIA GPUs with memory of their own (H100, H200, ...), not the host's (GB10, GH200)."""
    return cluster["accelerator"] == "nvidia" and not cluster.get("unified_memory")


def estimate(doc: dict, node_memory_gib: float | None = None) -> MemFit:
    cluster, serving, model = doc["cluster"], doc["serving"], doc["model"]
    tp, pp = serving["tensor_parallel"], serving["pipeline_parallel"]
    per_node_ranks = ranks_per_node(doc)
    memory = node_memory_gib or cluster["node_memory_gib"]
    budget = memory * serving["gpu_memory_utilization"]
    os_left = memory - budget
    weights = model.get("weights_gb")
    if weights is None:
        return MemFit(nodes_needed(doc), memory, budget, 0.0, RUNTIME_OVERHEAD_GIB, None, None,
                      0.0, None, os_left, "unknown", "model.weights_gb is not set")
    # A separate draft model (EAGLE, DFlash, a small model) is loaded beside the target, split
    # the same way; MTP layers are part of the checkpoint and already in weights_gb.
    weights += model.get("draft_weights_gb", 0.0)
    weights_node = weights * 1e9 / GIB / (tp * pp) * per_node_ranks
    overhead = RUNTIME_OVERHEAD_GIB * per_node_ranks
    room = budget - weights_node - overhead
    kv_token = kv_one = seqs = None
    arch = model.get("arch", {})
    dtype = serving["kv_cache_dtype"] if serving["kv_cache_dtype"] != "auto" else serving["dtype"]
    one = kv_bytes_one_sequence(arch, serving["max_model_len"], DTYPE_BYTES.get(dtype, 2), tp, pp,
                                in_flight_tokens(serving), draft_layers(doc))
    if one is not None:
        kv_one = one * per_node_ranks / GIB
        kv_token = one * per_node_ranks / serving["max_model_len"] / 1024  # KiB, averaged over the sequence
        seqs = room / kv_one if kv_one else None
    if room <= 0 or (kv_one is not None and room < kv_one):
        need = weights_node + overhead + (kv_one or 0)
        verdict, reason = "does-not-fit", (
            f"needs about {need:.1f} GiB per node (weights {weights_node:.1f} + overhead "
            f"{overhead:.1f} + one full-length KV {kv_one or 0:.2f}) but the budget is {budget:.1f} GiB")
    elif room < 0.1 * budget:
        verdict, reason = "tight", f"only {room:.1f} GiB left for the KV cache"
    else:
        verdict, reason = "fits", f"{room:.1f} GiB left for the KV cache"
    return MemFit(nodes_needed(doc), memory, budget, weights_node, overhead, kv_token, kv_one,
                  room, seqs, os_left, verdict, reason)
