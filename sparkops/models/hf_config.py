"""What a model's own files say about it, for a profile: the architecture numbers the memory fit
needs, the kind of attention, experts, quantization and the weights' real size. Pure: parsed
JSON in (config.json, the safetensors index, hf_quant_config.json), facts out.

config.json keys differ between families; each number is looked for under the names the
families use, and what cannot be known exactly is said in `notes` (an estimate, never a silent
guess): hybrid or linear attention, sliding windows set by a pattern, a missing weights size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

GB = 1e9


@dataclass
class ModelFacts:
    arch: dict  # model.arch of a profile
    weights_gb: float | None  # the checkpoint's real size (safetensors), None when unknown
    quantization: str | None  # mxfp4, nvfp4, fp8, awq, gptq, bitsandbytes, ... (None: not quantized)
    dtype: str | None
    architecture: str  # architectures[0], e.g. Qwen2ForCausalLM
    model_type: str
    notes: list[str] = field(default_factory=list)
    kv_cache_fp8: bool = False  # the checkpoint ships FP8 KV-cache scales (its quantizer calibrated them)


def _first(cfg: dict, *names: str):
    for name in names:
        if cfg.get(name) is not None:
            return cfg[name]
    return None


def text_config(cfg: dict) -> dict:
    """A multimodal model's language part (text_config / llm_config) over its top level."""
    inner = cfg.get("text_config") or cfg.get("llm_config") or {}
    return {**cfg, **inner} if isinstance(inner, dict) else cfg


def quantization_of(cfg: dict, quant_file: dict | None = None) -> str | None:
    """The checkpoint's quantization as vLLM reads it from config.json (or ModelOpt's
    hf_quant_config.json): a short name."""
    qc = cfg.get("quantization_config") or (quant_file or {}).get("quantization") or {}
    if not qc:
        return None
    method = str(qc.get("quant_method") or "").lower()
    algo = str(qc.get("quant_algo") or "").lower()
    fmt = str(qc.get("format") or "").lower()
    if "nvfp4" in algo or "nvfp4" in fmt or method == "modelopt_fp4":
        return "nvfp4"
    if algo == "mixed_precision":
        # ModelOpt's per-layer mix (vLLM: modelopt_mixed): name what it mixes, e.g. fp8+nvfp4.
        layers = qc.get("quantized_layers") or {}
        kinds = {str(v.get("quant_algo", "")).lower() for v in layers.values() if isinstance(v, dict)}
        short = sorted({"nvfp4" if "nvfp4" in k else k for k in kinds if k})
        return "+".join(short) if short else algo
    if method in ("modelopt", "") and algo:
        return algo  # fp8, w4a8_awq, ...
    if method == "compressed-tensors":
        groups = qc.get("config_groups") or {}
        weights = [g.get("weights") or {} for g in groups.values() if isinstance(g, dict)]
        if any(w.get("num_bits") == 4 and w.get("type") == "float" for w in weights):
            return "nvfp4"
        if any(w.get("num_bits") == 8 and w.get("type") == "float" for w in weights):
            return "fp8"
        if any(w.get("num_bits") == 4 for w in weights):
            return "int4"
        return "compressed-tensors"
    return method or None


def kv_cache_fp8(cfg: dict, quant_file: dict | None = None) -> bool:
    """Does the checkpoint come with an FP8 KV cache's scales? ModelOpt says so as
    kv_cache_quant_algo FP8 (hf_quant_config.json), compressed-tensors and ModelOpt's config.json
    as a kv_cache_scheme of 8-bit floats."""
    algo = str(((quant_file or {}).get("quantization") or {}).get("kv_cache_quant_algo") or "")
    scheme = (cfg.get("quantization_config") or {}).get("kv_cache_scheme") or {}
    return algo.upper() == "FP8" or (isinstance(scheme, dict) and scheme.get("num_bits") == 8
                                     and scheme.get("type") == "float")


def _layers(text: dict, layers: int, notes: list[str]) -> dict:
    """How many layers keep a sliding window, and how many a fixed-size (linear/recurrent)
    state instead of a per-token cache."""
    out: dict = {}
    window = text.get("sliding_window")
    kinds = text.get("layer_types")
    pattern = text.get("hybrid_override_pattern")
    if isinstance(kinds, list) and kinds:
        sliding = sum(1 for k in kinds if "sliding" in str(k))
        linear = sum(1 for k in kinds if "linear" in str(k) or "mamba" in str(k))
        if sliding and window:
            out |= {"sliding_window": int(window), "sliding_layers": sliding}
        if linear:
            out["linear_layers"] = linear
            notes.append(f"{linear} of {layers} layers keep a fixed-size state (linear attention), not a per-token "
                         "cache: the KV estimate counts the other layers only")
    elif isinstance(pattern, str) and pattern:
        # Nemotron-H: one letter per layer, `*` attention, `M` Mamba, `-` MLP (no cache).
        attention = pattern.count("*")
        out["linear_layers"] = layers - attention
        notes.append(f"hybrid model: {attention} of {layers} layers are attention (hybrid_override_pattern); "
                     "the Mamba layers' fixed state is left out of the KV estimate")
    elif window and text.get("sliding_window_pattern"):
        every = int(text["sliding_window_pattern"])  # Gemma 3: every N-th layer is global
        out |= {"sliding_window": int(window), "sliding_layers": layers - layers // every}
    elif window and text.get("model_type") == "gemma2":
        out |= {"sliding_window": int(window), "sliding_layers": layers // 2}  # alternating local/global
    elif window and text.get("use_sliding_window", True) and text.get("model_type") in ("mistral",):
        out |= {"sliding_window": int(window), "sliding_layers": layers}
        notes.append("sliding_window applies to every layer (Mistral): the KV estimate keeps at most the window")
    elif window and text.get("use_sliding_window") and text.get("max_window_layers") is not None:
        # Qwen2: layers from max_window_layers on use the window.
        sliding = max(0, layers - int(text["max_window_layers"]))
        if sliding:
            out |= {"sliding_window": int(window), "sliding_layers": sliding}
    return out


def parse(cfg: dict, index: dict | None = None, quant_file: dict | None = None,
          files_bytes: int | None = None) -> ModelFacts:
    """config.json (+ model.safetensors.index.json, hf_quant_config.json, or the size of the
    safetensors files where there is no index) -> ModelFacts."""
    text = text_config(cfg)
    notes: list[str] = []
    layers = _first(text, "num_hidden_layers", "n_layer", "num_layers")
    if layers is None:
        raise ValueError("config.json names no layer count (num_hidden_layers, n_layer, num_layers)")
    layers = int(layers)
    heads = _first(text, "num_attention_heads", "n_head")
    arch: dict = {"num_layers": layers}
    if text.get("kv_lora_rank"):
        arch |= {"attention": "mla", "kv_lora_rank": int(text["kv_lora_rank"]),
                 "qk_rope_head_dim": int(text.get("qk_rope_head_dim") or 0)}
    else:
        kv = _first(text, "num_key_value_heads", "num_kv_heads", "multi_query_group_num") or heads
        head_dim = text.get("head_dim") or (text["hidden_size"] // heads if heads and text.get("hidden_size")
                                            else None)
        if kv is None or head_dim is None:
            raise ValueError("config.json names neither the KV heads nor what gives them (num_attention_heads, "
                             "hidden_size)")
        arch |= {"num_kv_heads": int(kv), "head_dim": int(head_dim)}
    positions = _first(text, "max_position_embeddings", "max_seq_len", "seq_length", "n_positions")
    if positions:
        arch["max_position_embeddings"] = int(positions)
    experts = _first(text, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    arch["moe"] = bool(experts and int(experts) > 1)
    if arch["moe"]:
        arch["num_experts"] = int(experts)
        per = _first(text, "num_experts_per_tok", "moe_topk", "num_experts_per_token")
        if per:
            arch["experts_per_token"] = int(per)
    arch |= _layers(text, layers, notes)
    mtp = _first(text, "num_nextn_predict_layers", "mtp_num_hidden_layers")
    if mtp:
        arch["mtp_layers"] = int(mtp)  # an MTP speculative_config gives each a cache of its own
    if isinstance(text.get("compress_ratios"), list):
        # DeepSeek-V4: most layers keep a compressed cache (1/4 or 1/128 of the tokens, plus a
        # sliding window and an indexer's keys); the estimate counts every layer uncompressed.
        notes.append("compressed attention (compress_ratios): the KV estimate counts every layer uncompressed, "
                     "an upper bound several times vLLM's own figure")
    total = ((index or {}).get("metadata") or {}).get("total_size")
    weights = round(int(total) / GB, 1) if total else (round(files_bytes / GB, 1) if files_bytes else None)
    if weights is None:
        notes.append("the weights' size is unknown (no safetensors index, no weight files): set model.weights_gb "
                     "for the memory fit")
    architecture = (cfg.get("architectures") or ["?"])[0]
    return ModelFacts(arch, weights, quantization_of(cfg, quant_file), _first(text, "torch_dtype", "dtype"),
                      architecture, str(text.get("model_type") or cfg.get("model_type") or "?"), notes,
                      kv_cache_fp8(cfg, quant_file))
