"""Checks of one profile on the cluster (pure): the model in every node's cache, and whether
it fits a node's memory. They run when a profile is named (`inv check --profile`, `up`)."""
from __future__ import annotations

from sparkops.base.units import gb
from sparkops.checks.result import CLUSTER, FAIL, OK, WARN, Check
from sparkops.config import Config
from sparkops.config.memfit import discrete_gpu, estimate, ranks_per_node
from sparkops.facts.node import NodeFacts
from sparkops.node_scripts.smoke_model import REPO_ID as SMOKE_REPO
from sparkops.plan.context import NodeContext


def model_problem(facts, head_facts, is_head: bool, dummy_weights: bool = False) -> str | None:
    """Why a worker's copy of the model, though its config.json is there, is not whole: fewer
    bytes than on the head (a sync cut short). None when whole or when the facts cannot tell.
    `sync` verifies content; this is the cheap size check that runs before every `up`. With
    random weights a node needs only the config and tokenizer, whatever else the head holds
    (the whole model, from an earlier download): its config.json is enough here."""
    blobs = facts.model_blobs
    head = head_facts.model_blobs if head_facts is not None else None
    if is_head or dummy_weights or not facts.model_present or blobs is None or head is None:
        return None
    if blobs.bytes < head.bytes:
        return (f"it is only partly synced: {gb(blobs.bytes)} of the head's {gb(head.bytes)} "
                f"({blobs.files} of {head.files} files)")
    return None


def model(cfg: Config, ctxs: list[NodeContext], profile_flag: str) -> list[Check]:
    repo = cfg.model["repo"]
    head = next((c.facts for c in ctxs if c.is_head), None)
    # With random weights, download and sync fetch and copy only the config and tokenizer.
    flags = profile_flag + (" --dummy-weights" if cfg.dummy_weights else "")
    out = []
    for c in ctxs:
        present = c.facts.model_present
        evidence = {"repo": repo, "hf_home": c.hf_home}
        if c.facts.model_blobs is not None:
            evidence |= {"blob_files": c.facts.model_blobs.files, "blob_bytes": c.facts.model_blobs.bytes}
        problem = model_problem(c.facts, head, c.is_head, cfg.dummy_weights)
        if present is False or problem:
            if repo == SMOKE_REPO:  # generated offline on every node: nothing to download
                fix = f"`inv smoke-model --cluster {cfg.cluster_name}` builds it on every node"
            elif c.is_head:
                fix = f"`inv download {flags}`"
            else:
                fix = (f"`inv sync {flags}` copies it from the head (`inv download {flags}` "
                       "first if the head lacks it too)")
            text = f"model {repo} is not in {c.hf_home}" if present is False else f"model {repo}: {problem}"
            if cfg.dummy_weights:
                text += " (random weights: only its config and tokenizer are needed, a few MB)"
            out.append(Check("model", "deploy", c.name, FAIL, text, evidence, fix))
        elif present and c.facts.model_blobs is not None and c.facts.model_blobs.incomplete:
            # A warning only: huggingface_hub leaves these behind for files it no longer
            # wants too; an unfinished file of this revision has no snapshot link yet.
            out.append(Check("model", "deploy", c.name, WARN, f"{repo}: {c.facts.model_blobs.incomplete} "
                             "unfinished download(s) in blobs/", evidence, f"`inv download {flags}` "
                             "resumes them if this revision needs them"))
        elif present:
            out.append(Check("model", "deploy", c.name, OK, f"{repo} is in {c.hf_home}", evidence))
    return out


def node_memory(doc: dict, nodes: list[NodeFacts]) -> tuple[float | None, str]:
    """What one node offers vLLM under this configuration, read from these nodes' facts (the
    smallest decides), and where that came from. Unified memory (GB10): /proc/meminfo's MemTotal.
    A discrete GPU: nvidia-smi's memory.total of the node's smallest GPU x the GPUs one node gives
    the model. (None, why) where the facts cannot say: the static cluster.node_memory_gib then."""
    if discrete_gpu(doc["cluster"]):
        per_node = []
        for f in nodes:
            totals = [g.memory_total_mib for g in f.gpus]
            if not totals or None in totals:
                return None, f"nvidia-smi reported no GPU memory on {f.node}"
            per_node.append(min(t for t in totals if t is not None))
        if not per_node:
            return None, "no node's facts"
        ranks = ranks_per_node(doc)
        return (min(per_node) * ranks / 1024,
                f"nvidia-smi memory.total {min(per_node) / 1024:.1f} GiB" + (f" x {ranks} GPUs" if ranks > 1 else ""))
    memories = [f.memory_gib for f in nodes if f.memory_gib]
    if not memories:
        return None, "no node reported /proc/meminfo"
    return min(memories), f"/proc/meminfo MemTotal {min(memories):.1f} GiB (unified memory)"


def memory_fit(cfg: Config, ctxs: list[NodeContext]) -> list[Check]:
    """The memory-fit estimate with the nodes' own memory. On unified memory without facts the
    configuration's check already judged it; on a discrete GPU that one only warned
    (load_config(facts_follow=True)), so without facts the static figure decides here."""
    if cfg.cluster["accelerator"] != "nvidia" or not ctxs:
        return []
    memory, source = node_memory(cfg.doc, [c.facts for c in ctxs])
    if memory is None and not discrete_gpu(cfg.cluster):
        return []
    if memory is None:
        source = f"cluster.node_memory_gib {cfg.cluster['node_memory_gib']:g} GiB ({source})"
    fit = estimate(cfg.doc, memory)
    evidence = fit.as_dict() | {"memory_from": source}
    if fit.verdict == "does-not-fit":
        return [Check("memory.fit", "deploy", ctxs[0].name, FAIL, f"the model does not fit: {fit.reason} "
                      f"(node memory: {source})", evidence,
                      "raise tensor_parallel, lower max_model_len, or pick a smaller model")]
    status = WARN if fit.verdict == "tight" else OK
    return [Check("memory.fit", "deploy", CLUSTER, status, f"{cfg.profile}: {fit.verdict}, {fit.reason} "
                  f"(node memory: {source})", evidence,
                  "lower max_model_len or gpu_memory_utilization" if status == WARN else "")]


def checks(cfg: Config, ctxs: list[NodeContext], profile_flag: str) -> list[Check]:
    return [*model(cfg, ctxs, profile_flag), *memory_fit(cfg, ctxs)]
