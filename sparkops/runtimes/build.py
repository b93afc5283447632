"""`inv build`: the docker runtime's serving image, built on the head (or pulled), then the
same image ID on every node. Copying runs on the head: `docker save | ssh WORKER docker load`
over the RoCE cable, with the same SSH settings and host-key checks as `inv sync`, for every
worker that lacks that exact ID (in parallel); nodes already holding it are skipped."""
from __future__ import annotations

import posixpath
import time

from sparkops.apply.lock import locked_facts
from sparkops.apply.run import run_step_on_nodes
from sparkops.base.errors import SparkopsError, StepError
from sparkops.base.paths import project_root
from sparkops.base.progress import Progress
from sparkops.config import Config
from sparkops.facts.roce import copy_route, lan_allowed
from sparkops.facts.session import cluster_session
from sparkops.plan.context import NodeContext, contexts
from sparkops.plan.steps import Action, Run, Step, WriteFile
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import NodeGroup
from sparkops.remote.openssh import ssh_command

BUILD_TIMEOUT_S = 4 * 3600  # a from-source vLLM build on a Spark takes 30-60 min


def image_id_argv(image: str) -> tuple[str, ...]:
    return ("docker", "image", "inspect", "--format", "{{.Id}}", image)


def build_steps(cfg: Config, head: NodeContext, no_cache: bool) -> list[Step]:
    """Upload dockerfiles/<name>/ to the head and build it there (pure)."""
    docker = cfg.cluster["docker"]
    folder = project_root() / "dockerfiles" / docker["dockerfile"]
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise SparkopsError(f"no Dockerfile in {folder}", step="build",
                            fix=f"set cluster.docker.dockerfile to one of: "
                                f"{', '.join(sorted(p.name for p in folder.parent.iterdir() if p.is_dir()))}")
    remote = posixpath.join(head.work_dir, "build", docker["dockerfile"])
    folders = sorted({posixpath.join(remote, str(p.parent.relative_to(folder))) for p in files})
    uploads: list[Action] = [Run(("mkdir", "-p", *folders), 30)]
    uploads += [WriteFile(posixpath.join(remote, str(p.relative_to(folder))), p.read_text(), 0o644) for p in files]
    argv = ["docker", "build", "-t", cfg.cluster["image"]]
    for key, value in sorted(docker.get("build_args", {}).items()):
        argv += ["--build-arg", f"{key}={value}"]
    if no_cache:
        argv.append("--no-cache")
    return [Step("upload", f"copy dockerfiles/{docker['dockerfile']} to the head", {head.name: tuple(uploads)}),
            Step("build", f"docker build {cfg.cluster['image']} on the head",
                 {head.name: (Run((*argv, remote), BUILD_TIMEOUT_S),)})]


def build(cfg: Config, progress: Progress, *, no_cache: bool = False, wait: float | None = None,
          over_lan: bool | None = None) -> dict[str, str]:
    """Build (or pull) and distribute; returns {node: image id}."""
    if cfg.cluster["runtime"] != "docker":
        raise SparkopsError(f"cluster {cfg.cluster_name!r} uses the {cfg.cluster['runtime']} runtime: "
                            "there is no image to build", step="build",
                            fix="`inv install-vllm` prepares native nodes; or --set cluster.runtime=\"docker\"")
    with cluster_session(cfg, gather=False) as session, \
            locked_facts(session, "build", wait=wait, progress=progress):
        session.require()
        ctxs = contexts(cfg, session.facts, all_nodes=True)
        head = ctxs[0]
        # Before an hour of building: where each worker's copy will go (never the LAN unasked).
        lan = lan_allowed(cfg.cluster, over_lan)
        routes = {c.name: copy_route(c.facts, c.node, cfg.cluster["network"], over_lan=lan).address
                  for c in ctxs[1:]}
        image = cfg.cluster["image"]
        if cfg.cluster["docker"].get("pull"):
            steps = [Step("pull", f"docker pull {image} on every node",
                          {c.name: (Run(("docker", "pull", image), BUILD_TIMEOUT_S),) for c in ctxs})]
        else:
            steps = build_steps(cfg, head, no_cache)
        for number, step in enumerate(steps, 1):
            progress.step(number, len(steps) + 1, step.name, step.title)
            run_step_on_nodes(session.group, step, progress)
        progress.step(len(steps) + 1, len(steps) + 1, "distribute", "same image ID on every node")
        return distribute(cfg, session.group, ctxs, image, progress, routes)


def image_ids(group: NodeGroup, ctxs: list[NodeContext], image: str) -> dict[str, str | None]:
    """Each node's ID of the image (None where it is absent or the node could not say)."""
    def one(conn: NodeConn) -> str | None:
        res = conn.run(image_id_argv(image), timeout=60)
        return res.stdout.strip() if res.ok else None
    found = group.subset([c.name for c in ctxs]).map(one)
    return {name: found.succeeded.get(name) for name in found}


def save_load_argv(image: str, ssh: list[str], address: str) -> list[str]:
    """argv run on the head; image, ssh options and address arrive as positional parameters."""
    return ["sh", "-c", 'image=$1; shift; docker save "$image" | "$@"', "sparkops-distribute",
            image, *ssh, address, "docker", "load"]


def distribute(cfg: Config, group: NodeGroup, ctxs: list[NodeContext], image: str,
               progress: Progress, routes: dict[str, str]) -> dict[str, str]:
    """Every worker without the head's image ID gets it over its route (address per node)."""
    ids = image_ids(group, ctxs, image)
    head = ctxs[0]
    want = ids[head.name]
    if not want:
        raise StepError(f"image {image} is not on the head after the build", host=head.name, step="distribute")
    stale = [c for c in ctxs[1:] if ids[c.name] != want]
    for c in ctxs[1:]:
        if c not in stale:
            progress.node(c.name, True, 0.0, f"skipped: already holds {want[:19]}")
    if stale:
        ssh = cfg.cluster["ssh"]
        step = Step("distribute", f"docker save | docker load of {image}", {head.name: tuple(
            Run(tuple(save_load_argv(image, ssh_command(c.node, ssh), routes[c.name])),
                BUILD_TIMEOUT_S) for c in stale)})
        start = time.monotonic()
        try:
            run_step_on_nodes(group, step, Progress(quiet=True))
        except StepError as exc:
            exc.fix = ("check that the head can SSH to the workers (the same as `inv sync` needs) "
                       "and that they have free disk (`df -h /var/lib/docker`)")
            raise
        seconds = time.monotonic() - start
        for c in stale:
            progress.node(c.name, True, seconds, "loaded from the head")
        ids = image_ids(group, ctxs, image)
    wrong = {n: i for n, i in ids.items() if i != want}
    if wrong:
        raise StepError(f"nodes still differ from the head's image {want[:19]}: {wrong}", step="distribute")
    return {n: want for n in ids}
