"""Checks before `up` touches anything, from node facts (pure). Each problem names the
node, what is wrong, the evidence and the fix."""
from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .config.memfit import estimate
from .errors import SparkopsError
from .facts.node import NodeFacts
from .facts.roce import select_roce
from .plan import contexts


@dataclass(frozen=True)
class Problem:
    node: str
    message: str
    fix: str

    def render(self) -> str:
        return f"[{self.node}] {self.message}\n    fix: {self.fix}"


def preflight(cfg: Config, facts: dict[str, NodeFacts], *, profile_flag: str) -> list[Problem]:
    ctxs = contexts(cfg, facts)
    problems: list[Problem] = []
    cluster = cfg.cluster
    ports = [cluster["ports"]["api"]]
    if len(ctxs) > 1:
        ports.append(cluster["ports"]["rendezvous"] if cfg.doc["distributed"]["backend"] == "mp"
                     else cluster["ports"]["ray"])
    for ctx in ctxs:
        f = ctx.facts
        for name, why in f.errors.items():
            problems.append(Problem(ctx.name, f"could not read {name}: {why}",
                                    "see the error; `inv check` shows every fact"))
        if len(ctxs) > 1:
            try:
                select_roce(f, ctx.node, cluster["network"])
            except SparkopsError as exc:
                problems.append(Problem(ctx.name, exc.message + ("; " + "; ".join(exc.details) if exc.details else ""),
                                        exc.fix or ""))
        if cluster["accelerator"] == "nvidia" and len(f.gpus) < cluster.get("gpus_per_node", 1):
            problems.append(Problem(ctx.name, f"expected {cluster.get('gpus_per_node', 1)} GPU(s), "
                                    f"nvidia-smi shows {len(f.gpus)}",
                                    "check the driver (`nvidia-smi`) or cluster.gpus_per_node"))
        if cluster["runtime"] == "docker":
            if not f.docker_version:
                problems.append(Problem(ctx.name, "Docker is not running or not usable by this user",
                                        "start it (`sudo systemctl start docker`) and add the user "
                                        "to the docker group"))
            elif cluster["accelerator"] == "nvidia" and "nvidia" not in f.docker_runtimes:
                problems.append(Problem(ctx.name, "Docker has no NVIDIA runtime",
                                        "install the NVIDIA Container Toolkit and run "
                                        "`sudo nvidia-ctk runtime configure --runtime=docker`"))
            if f.docker_version and not f.image_id:
                problems.append(Problem(ctx.name, f"image {cluster['image']} is not on this node",
                                        "`inv build` (or `inv build --pull`) distributes it to every node"))
        elif not f.vllm_version:
            problems.append(Problem(ctx.name, f"no vLLM in the virtualenv {ctx.venv}",
                                    f"install it there (`inv install-vllm --cluster {cfg.cluster_name}`)"))
        if f.model_present is False:
            problems.append(Problem(ctx.name, f"model {cfg.model['repo']} is not in {ctx.hf_home}",
                                    f"`inv sync {profile_flag}` copies it from the head "
                                    f"(`inv download {profile_flag}` first if the head lacks it too)"
                                    if not ctx.is_head else f"`inv download {profile_flag}`"))
        taken = [p for p in ports if p in f.ports_in_use and (ctx.is_head or p != cluster["ports"]["api"])]
        for port in taken:
            problems.append(Problem(ctx.name, f"port {port} is already in use",
                                    "stop what listens there (`ss -ltnp`), `inv down` if it is an "
                                    "earlier sparkops run, or change cluster.ports"))
    images = {c.facts.image_id for c in ctxs if c.facts.image_id}
    if cluster["runtime"] == "docker" and len(images) > 1:
        detail = ", ".join(f"{c.name}={(c.facts.image_id or '-')[:19]}" for c in ctxs)
        problems.append(Problem(ctxs[0].name, f"nodes run different images of {cluster['image']}: {detail}",
                                "`inv build` makes every node hold the head's image"))
    memories = [c.facts.memory_gib for c in ctxs if c.facts.memory_gib]
    if memories and cluster["accelerator"] == "nvidia":
        fit = estimate(cfg.doc, min(memories))
        if fit.verdict == "does-not-fit":
            problems.append(Problem(ctxs[0].name, f"the model does not fit: {fit.reason}",
                                    "raise tensor_parallel, lower max_model_len, or pick a smaller model"))
    return problems
