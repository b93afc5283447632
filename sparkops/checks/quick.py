"""Quick checks, from node facts alone (pure): SSH, facts read, GPU, runtime, disk, clock, and
unified memory free for vLLM's start (memory.py)."""
from __future__ import annotations

from sparkops.base.errors import SparkopsError
from sparkops.checks import memory
from sparkops.checks.result import CLUSTER, FAIL, OK, WARN, Check
from sparkops.config import Config
from sparkops.plan.context import NodeContext

GIB = 1024 ** 3
MIN_FREE_GIB = 10.0  # room for caches (vLLM, FlashInfer, Triton) and logs besides the model
CLOCK_SKEW_WARN_S = 2.0


def _check(name, node, status, message, fix="", group="quick", **evidence) -> Check:
    return Check(name, group, node, status, message, evidence, fix)


def reachable(ctxs: list[NodeContext], down: dict[str, SparkopsError]) -> list[Check]:
    out = [_check("ssh", c.name, OK, f"reachable ({c.node['host']}), hostname {c.facts.hostname or 'unknown'}, "
                  f"user {c.facts.user}", host=c.node["host"], hostname=c.facts.hostname)
           for c in ctxs]
    out += [_check("ssh", name, FAIL, err.message, err.fix or "check the node is on and reachable",
                   step=err.step) for name, err in down.items()]
    return out


def facts_read(ctxs: list[NodeContext]) -> list[Check]:
    """A fact that failed to read fails; one the node has no way to tell (no tool, no fallback)
    is said, and warns only where several nodes must talk (the checks that need it fail)."""
    failed = [_check("facts", c.name, FAIL, f"could not read {name}: {why}",
                     "see the error; `inv check` shows every fact", fact=name, error=why)
              for c in ctxs for name, why in c.facts.errors.items()]
    return failed + [_check("facts", c.name, WARN if len(ctxs) > 1 else OK, f"{name} unknown: {why}",
                            "" if len(ctxs) == 1 else "see the checks that need it", fact=name, unknown=why)
                     for c in ctxs for name, why in c.facts.unknown.items()]


def gpu(cfg: Config, ctxs: list[NodeContext]) -> list[Check]:
    cluster = cfg.cluster
    want = cluster.get("gpus_per_node", 1)
    out = []
    for c in ctxs:
        f = c.facts
        gpus = [{"index": g.index, "name": g.name, "driver": g.driver,
                 "memory_total_mib": g.memory_total_mib, "compute_cap": g.compute_cap} for g in f.gpus]
        if cluster["accelerator"] != "nvidia":
            out.append(_check("gpu", c.name, OK, f"accelerator {cluster['accelerator']}: no GPU needed",
                              group="gpu", gpus=gpus))
            continue
        if len(f.gpus) < want:
            out.append(_check("gpu", c.name, FAIL, f"expected {want} GPU(s), nvidia-smi shows {len(f.gpus)}",
                              "check the driver (`nvidia-smi`) or cluster.gpus_per_node", group="gpu", gpus=gpus))
            continue
        first = f.gpus[0]
        totals = [g.memory_total_mib for g in f.gpus]
        memory = _gpu_memory(cfg, c, totals)
        status, fix, note = OK, "", ""
        if memory is None:
            status, fix = WARN, "nvidia-smi reports no memory size; set cluster.unified_memory if this is a GB10"
        elif cluster.get("unified_memory") and all(t is not None for t in totals):
            # A discrete GPU (H100, H200, ...) reports its own memory; GB10 and GH200 say [N/A].
            status, note = WARN, "; a GPU with memory of its own, but cluster.unified_memory is true"
            fix = ("set cluster.unified_memory = false (the `gpu` cluster file does): the memory fit then uses "
                   "nvidia-smi's memory.total, and the page-cache check of unified memory is not made")
        if "GB10" in first.name and not first.driver.startswith("580."):
            status = WARN
            note += "; 580.x is the line reported stable for vLLM on a Spark"
            fix = "install a 580.x driver (590.x deadlocked during CUDA-graph capture in one report)"
        cap = f", compute capability {first.compute_cap}" if first.compute_cap else ""
        out.append(_check("gpu", c.name, status,
                          f"{len(f.gpus)} x {first.name}, driver {first.driver or '?'}{cap}, "
                          f"{memory or 'memory unknown'}{note}", fix, group="gpu", gpus=gpus))
    return out


def _gpu_memory(cfg: Config, ctx: NodeContext, totals: list[int | None]) -> str | None:
    known = [t for t in totals if t is not None]
    if len(known) == len(totals):
        each = f" ({known[0] / 1024:.1f} GiB each)" if len(set(known)) == 1 and len(known) > 1 else ""
        return f"{sum(known) / 1024:.1f} GiB GPU memory{each} (nvidia-smi memory.total)"
    # GB10: nvidia-smi says [N/A] for the framebuffer: memory is the host's, read /proc/meminfo.
    if cfg.cluster.get("unified_memory") and ctx.facts.memory:
        return f"unified memory {ctx.facts.memory.total_bytes / GIB:.1f} GiB (/proc/meminfo; nvidia-smi: [N/A])"
    return None


def gpu_agree(cfg: Config, ctxs: list[NodeContext]) -> list[Check]:
    if cfg.cluster["accelerator"] != "nvidia" or len(ctxs) < 2:
        return []
    seen = {c.name: (c.facts.gpus[0].name, c.facts.gpus[0].driver) for c in ctxs if c.facts.gpus}
    if len(set(seen.values())) <= 1:
        return []
    detail = ", ".join(f"{n}={g} {d}" for n, (g, d) in seen.items())
    return [_check("gpu.same", CLUSTER, WARN, f"nodes differ in GPU or driver: {detail}",
                   "run the same driver on every node", group="gpu", nodes=seen)]


def runtime(cfg: Config, ctxs: list[NodeContext]) -> list[Check]:
    cluster = cfg.cluster
    out = []
    for c in ctxs:
        f = c.facts
        if cluster["runtime"] != "docker":
            if f.vllm_version:
                out.append(_check("runtime", c.name, OK, f"vLLM {f.vllm_version} in {c.venv}",
                                  venv=c.venv, vllm=f.vllm_version))
            else:
                out.append(_check("runtime", c.name, FAIL, f"no vLLM in the virtualenv {c.venv}",
                                  f"install it there (`inv install-vllm --cluster {cfg.cluster_name}`)",
                                  venv=c.venv))
            continue
        evidence = {"docker": f.docker_version, "runtimes": list(f.docker_runtimes),
                    "image": cluster["image"], "image_id": f.image_id}
        if not f.docker_version:
            out.append(_check("runtime", c.name, FAIL, "Docker is not running or not usable by this user",
                              "start it (`sudo systemctl start docker`) and add the user to the docker group",
                              **evidence))
            continue
        problems = []
        if cluster["accelerator"] == "nvidia" and "nvidia" not in f.docker_runtimes:
            problems.append(_check("runtime", c.name, FAIL, "Docker has no NVIDIA runtime",
                                   "install the NVIDIA Container Toolkit and run "
                                   "`sudo nvidia-ctk runtime configure --runtime=docker`", **evidence))
        if not f.image_id:
            problems.append(_check("image", c.name, FAIL, f"image {cluster['image']} is not on this node",
                                   f"`inv build --cluster {cfg.cluster_name}` builds (or pulls) it and gives "
                                   "every node the same image", **evidence))
        out += problems
        if not problems:
            out.append(_check("runtime", c.name, OK, f"Docker {f.docker_version}"
                              + (", NVIDIA runtime" if "nvidia" in f.docker_runtimes else "")
                              + f", image {(f.image_id or '')[:19]}", **evidence))
    return out


def image_agree(cfg: Config, ctxs: list[NodeContext]) -> list[Check]:
    images = {c.facts.image_id for c in ctxs if c.facts.image_id}
    if cfg.cluster["runtime"] != "docker" or len(images) <= 1:
        return []
    detail = ", ".join(f"{c.name}={(c.facts.image_id or '-')[:19]}" for c in ctxs)
    return [_check("image.same", CLUSTER, FAIL, f"nodes run different images of {cfg.cluster['image']}: {detail}",
                   "`inv build` makes every node hold the head's image",
                   images={c.name: c.facts.image_id for c in ctxs})]


def disk(cfg: Config, ctxs: list[NodeContext], *, download_gb: float | None = None) -> list[Check]:
    """Free space where the HF cache lives. With a profile (download_gb), a node without the
    model needs room for its download too."""
    out = []
    for c in ctxs:
        d = c.facts.disk
        if d is None:
            out.append(_check("disk", c.name, WARN, f"free space at {c.hf_home} could not be read",
                              "check `df -h` on the node", path=c.hf_home))
            continue
        free_gib = d.free_bytes / GIB
        need_gib = MIN_FREE_GIB
        if download_gb and c.facts.model_present is False:
            need_gib += download_gb * 1e9 / GIB
        evidence = {"path": c.hf_home, "mount": d.path, "free_gib": round(free_gib, 1),
                    "needed_gib": round(need_gib, 1)}
        what = f"{free_gib:.1f} GiB free at {c.hf_home} (filesystem {d.path})"
        if download_gb and c.facts.model_present is False and free_gib < need_gib - MIN_FREE_GIB:
            out.append(_check("disk", c.name, FAIL, f"{what}; the model needs {need_gib - MIN_FREE_GIB:.1f} GiB",
                              "free space, or point cluster.paths.hf_home at a larger disk", **evidence))
        elif free_gib < need_gib:
            out.append(_check("disk", c.name, WARN, f"{what}; under {need_gib:.1f} GiB",
                              "free space for the model and the compile caches", **evidence))
        else:
            out.append(_check("disk", c.name, OK, what, **evidence))
    return out


def cache_owner(ctxs: list[NodeContext]) -> list[Check]:
    """Files in the node's caches that its user does not own: a container that once ran as
    root left them, and `inv sync`, the hash cache and `hf cache delete` then fail on them
    (EACCES). sparkops' own containers run as the user (cluster.docker.run_as)."""
    out = []
    for c in ctxs:
        found = c.facts.foreign_files
        if not found:
            continue
        owners = sorted({line.split(" ", 1)[0] for line in found})
        user = c.facts.user or "$USER"
        folders = " ".join(dict.fromkeys((c.hf_home, c.cache_dir)))
        out.append(_check("caches.owner", c.name, FAIL,
                          f"files in the caches belong to {', '.join(owners)}, not to {user}: "
                          + "; ".join(line.split(" ", 1)[-1] for line in found[:3])
                          + (" ..." if len(found) > 3 else ""),
                          f"on {c.name}: `sudo chown -R {user}: {folders}` (a container that ran as root "
                          "wrote them)", files=list(found)))
    return out


def clock_skew(ctxs: list[NodeContext]) -> list[Check]:
    if len(ctxs) < 2:
        return []
    clocks = {c.name: c.facts.clock for c in ctxs if c.facts.clock is not None}
    missing = [c.name for c in ctxs if c.name not in clocks]
    if missing:
        return [_check("clock", CLUSTER, WARN, f"clock not read on {', '.join(missing)}",
                       "check `date` works on the node", clocks=clocks)]
    skew = max(clocks.values()) - min(clocks.values())
    evidence = {"clocks": clocks, "skew_s": round(skew, 3),
                "note": "read by parallel SSH probes: includes their start-time spread"}
    if skew > CLOCK_SKEW_WARN_S:
        return [_check("clock", CLUSTER, WARN, f"clocks differ by {skew:.1f}s between nodes",
                       "run NTP on every node (`timedatectl set-ntp true`): logs and TLS need agreeing "
                       "clocks", **evidence)]
    return [_check("clock", CLUSTER, OK, f"clocks agree within {skew:.2f}s", **evidence)]


def checks(cfg: Config, ctxs: list[NodeContext], down: dict[str, SparkopsError], *,
           download_gb: float | None = None) -> list[Check]:
    """Everything the quick group covers (gpu included)."""
    return [*reachable(ctxs, down), *facts_read(ctxs), *gpu_checks(cfg, ctxs), *image_agree(cfg, ctxs),
            *disk(cfg, ctxs, download_gb=download_gb), *cache_owner(ctxs), *memory.checks(cfg, ctxs),
            *clock_skew(ctxs)]


def gpu_checks(cfg: Config, ctxs: list[NodeContext]) -> list[Check]:
    return [*gpu(cfg, ctxs), *gpu_agree(cfg, ctxs), *runtime(cfg, ctxs)]
