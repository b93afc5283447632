"""Checks that a schema cannot express: cross-field rules and the memory-fit estimate."""
from __future__ import annotations

from dataclasses import dataclass

from sparkops.config.memfit import discrete_gpu, estimate, nodes_needed, replicas_per_node


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warn"
    path: str
    message: str
    fix: str = ""
    # An error only for verbs that serve the model (up, switch, bench-all): downloading or
    # copying a model that would not fit this cluster is still worth doing, so they only warn.
    serving_only: bool = False
    # The memory fit judged from the static cluster.node_memory_gib on a discrete GPU: a verb
    # that reads the nodes' facts judges it again from nvidia-smi's memory.total (up's
    # preflight, plan, check --profile), so there it only warns (load_config(facts_follow=True)).
    facts_decide: bool = False

    def render(self) -> str:
        text = f"{self.level}: {self.path}: {self.message}"
        return text + (f"\n  fix: {self.fix}" if self.fix else "")


def _replica_findings(doc: dict) -> list[Finding]:
    """Layout replicas: every replica a whole server inside one node, and two of them at least
    (the default policy, power_of_two, picks between two)."""
    serving, found = doc["serving"], []
    ranks, gpn = serving["tensor_parallel"] * serving["pipeline_parallel"], doc["cluster"].get("gpus_per_node", 1)
    if not replicas_per_node(doc):
        found.append(Finding(
            "error", "serving.tensor_parallel",
            f"layout replicas runs each replica inside one node, and tensor_parallel {serving['tensor_parallel']} x "
            f"pipeline_parallel {serving['pipeline_parallel']} = {ranks} GPUs is more than a node's {gpn}",
            f"set serving.tensor_parallel={gpn}, or the tp layout (--set distributed.backend=\"mp\")"))
    if serving.get("data_parallel", 1) < 2:
        found.append(Finding(
            "error", "serving.data_parallel",
            "layout replicas puts a router in front of two replicas or more, and data_parallel is 1 "
            "(one server alone is the solo or tp layout, without a router)",
            "set serving.data_parallel=2 or more (one per node: the number of nodes), or "
            "--set distributed.backend=mp"))
    return found


def _arch_findings(arch: dict) -> list[Finding]:
    """The architecture numbers the KV-cache estimate reads must add up."""
    found = []
    special = arch.get("sliding_layers", 0) + arch.get("linear_layers", 0)
    if "num_layers" in arch and special > arch["num_layers"]:
        found.append(Finding("error", "model.arch", f"sliding_layers + linear_layers ({special}) exceed num_layers "
                             f"({arch['num_layers']})", "count each layer once: num_layers is all of them"))
    if arch.get("attention") == "mla" and not {"kv_lora_rank", "qk_rope_head_dim"} <= arch.keys():
        found.append(Finding("error", "model.arch", 'attention = "mla" needs kv_lora_rank and qk_rope_head_dim',
                             "copy them from the model's config.json (`inv profile-new` does)"))
    if arch.get("sliding_layers") and not arch.get("sliding_window"):
        found.append(Finding("error", "model.arch", "sliding_layers without sliding_window",
                             "set sliding_window (tokens a sliding layer keeps), from the model's config.json"))
    return found


def check(doc: dict, *, node_memory_gib: float | None = None) -> list[Finding]:
    found: list[Finding] = []
    cluster, serving, model = doc["cluster"], doc["serving"], doc["model"]
    nodes = cluster["nodes"]

    found += _arch_findings(model.get("arch", {}))
    dp = serving.get("data_parallel", 1)
    gpn = cluster.get("gpus_per_node", 1)
    if dp > 1 and not replicas_per_node(doc):
        found.append(Finding(
            "error", "serving.data_parallel",
            f"each of the {dp} replicas needs tensor_parallel {serving['tensor_parallel']} x "
            f"pipeline_parallel {serving['pipeline_parallel']} GPUs inside one node, and a node has {gpn}",
            "set serving.tensor_parallel=1 (one replica per node), or serving.data_parallel=1 "
            "(one model across the nodes)"))
    elif doc["distributed"]["backend"] == "replicas":
        found += _replica_findings(doc)
    elif dp > 1 and doc["distributed"]["backend"] != "mp":
        found.append(Finding(
            "error", "distributed.backend",
            f"data_parallel {dp} starts vLLM's own replicas (its mp launcher); backend "
            f"{doc['distributed']['backend']!r} is for one model across nodes",
            'set distributed.backend = "mp" (--set distributed.backend=mp)'))
    needed = nodes_needed(doc)
    if needed > len(nodes) and dp > 1:
        per = replicas_per_node(doc) or 1
        found.append(Finding(
            "error", "serving.data_parallel",
            f"data_parallel {dp} ({per} replica(s) per node of {gpn} GPU(s)) needs {needed} nodes; "
            f"cluster {cluster['name']!r} has {len(nodes)}",
            f"lower serving.data_parallel (e.g. --set serving.data_parallel={len(nodes) * per}) "
            f"or add nodes to the cluster", serving_only=True))
    elif needed > len(nodes):
        found.append(Finding(
            "error", "serving.tensor_parallel",
            f"tensor_parallel {serving['tensor_parallel']} x pipeline_parallel "
            f"{serving['pipeline_parallel']} needs {needed} nodes of {cluster.get('gpus_per_node', 1)} "
            f"GPU(s); cluster {cluster['name']!r} has {len(nodes)}",
            "lower serving.tensor_parallel (e.g. --set "
            f"serving.tensor_parallel={len(nodes) * cluster.get('gpus_per_node', 1)}) "
            f"or add nodes to the cluster", serving_only=True))
    names = [n["name"] for n in nodes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        found.append(Finding("error", "cluster.nodes", f"node names repeat: {', '.join(dupes)}",
                             "give every node its own name"))
    max_pos = model.get("arch", {}).get("max_position_embeddings")
    if max_pos and serving["max_model_len"] > max_pos:
        found.append(Finding(
            "error", "serving.max_model_len",
            f"{serving['max_model_len']} is above the model's max_position_embeddings ({max_pos}); "
            f"vLLM starts, then fails on the first long request",
            f"set serving.max_model_len <= {max_pos}"))

    if model.get("weights") == "dummy" and serving.get("load_format", "auto") not in ("auto", "dummy"):
        found.append(Finding(
            "error", "serving.load_format",
            f"{serving['load_format']!r} loads weights from files, and model.weights = \"dummy\" asks for "
            "random ones (vLLM's --load-format dummy)",
            'leave serving.load_format at "auto" with --dummy-weights, or drop --dummy-weights'))

    if model.get("gated") and not doc.get("secrets", {}).get("hf_token"):
        found.append(Finding(
            "warn", "model.gated",
            f"{model['repo']} is gated: downloading it needs a Hugging Face token whose account "
            f"accepted the license at https://huggingface.co/{model['repo']}",
            "accept the license there, then `inv setup --hf-token-stdin` (or export HF_TOKEN)"))

    gmu = serving["gpu_memory_utilization"]
    if cluster.get("unified_memory") and cluster["accelerator"] == "nvidia" and gmu > 0.90:
        found.append(Finding(
            "warn", "serving.gpu_memory_utilization",
            f"{gmu} on unified memory leaves the OS too little; above 0.90 has wedged Sparks "
            f"during profiling (vLLM issues 46307, 56824)",
            "use 0.85-0.87"))

    fit = estimate(doc, node_memory_gib)
    if cluster.get("unified_memory") and fit.os_left_gib < cluster.get("os_reserve_gib", 0):
        found.append(Finding(
            "warn", "serving.gpu_memory_utilization",
            f"leaves {fit.os_left_gib:.1f} GiB of {fit.node_memory_gib:.1f} GiB for the OS "
            f"(want {cluster['os_reserve_gib']} GiB)", "lower serving.gpu_memory_utilization"))
    if fit.verdict == "does-not-fit":
        found.append(Finding("error", "serving", f"the model does not fit: {fit.reason}",
                             "raise tensor_parallel (more nodes), lower max_model_len, use a "
                             "quantized model or fp8 kv_cache_dtype", serving_only=True,
                             facts_decide=node_memory_gib is None and discrete_gpu(cluster)))
    elif fit.verdict == "tight":
        found.append(Finding("warn", "serving", f"memory is tight: {fit.reason}",
                             "lower max_model_len or raise gpu_memory_utilization a little"))
    return found
