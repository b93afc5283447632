"""`inv build`: the docker runtime's serving image, built on the head (or pulled: on the head
for an image by digest, on every node with `cluster.docker.pull`), then the same image ID on
every node. Copying runs on the head: `docker save | ssh WORKER docker load` over the RoCE
cable, with the same SSH settings and host-key checks as `inv sync`, for every worker that
lacks that exact ID (in parallel, a meter each); nodes already holding it are skipped.
Docker's build and pull output is shown line by line as it comes."""
from __future__ import annotations

import posixpath
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sparkops.apply.lock import locked_facts
from sparkops.apply.run import run_step_on_nodes
from sparkops.base.errors import SparkopsError, StepError
from sparkops.base.paths import project_root
from sparkops.base.progress import Progress
from sparkops.base.units import gb
from sparkops.config import Config
from sparkops.config.image import is_digest, local_name
from sparkops.facts.roce import copy_route, lan_allowed
from sparkops.facts.session import cluster_session
from sparkops.node_scripts import python_argv
from sparkops.plan.context import NodeContext, contexts
from sparkops.plan.steps import Action, Run, Step, WriteFile
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import GroupResult, NodeGroup
from sparkops.remote.openssh import ssh_command

BUILD_TIMEOUT_S = 4 * 3600  # a from-source vLLM build on a Spark takes 30-60 min
SILENT_S = 120  # image_copy.py says how far it got every second: this long without a word is a hang


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
    argv = ["docker", "build", "-t", local_name(cfg.cluster["image"])]
    for key, value in sorted(docker.get("build_args", {}).items()):
        argv += ["--build-arg", f"{key}={value}"]
    if no_cache:
        argv.append("--no-cache")
    return [Step("upload", f"copy dockerfiles/{docker['dockerfile']} to the head", {head.name: tuple(uploads)}),
            Step("build", f"docker build {cfg.cluster['image']} on the head",
                 {head.name: (Run((*argv, remote), BUILD_TIMEOUT_S),)})]


def image_steps(cfg: Config, ctxs: list[NodeContext], no_cache: bool) -> list[Step]:
    """How the image reaches the head (or every node) before it is copied (pure): pulled on
    every node (`cluster.docker.pull`), pulled on the head (an image by digest), or built
    there. A digest image gets its local name on each node that pulled it (config/image.py)."""
    image = cfg.cluster["image"]
    local = local_name(image)
    tag = (Run(("docker", "tag", image, local), 60),) if is_digest(image) else ()
    if cfg.cluster["docker"].get("pull"):
        return [Step("pull", f"docker pull {image} on every node",
                     {c.name: (Run(("docker", "pull", image), BUILD_TIMEOUT_S), *tag) for c in ctxs})]
    if is_digest(image):
        return [Step("pull", f"docker pull {image} on the head (the workers get it from the head)",
                     {ctxs[0].name: (Run(("docker", "pull", image), BUILD_TIMEOUT_S), *tag)})]
    return build_steps(cfg, ctxs[0], no_cache)


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
        # Before an hour of building: where each worker's copy will go (never the LAN unasked).
        lan = lan_allowed(cfg.cluster, over_lan)
        routes = {c.name: copy_route(c.facts, c.node, cfg.cluster["network"], over_lan=lan).address
                  for c in ctxs[1:]}
        steps = image_steps(cfg, ctxs, no_cache)
        for number, step in enumerate(steps, 1):
            progress.step(number, len(steps) + 1, step.name, step.title)
            # Docker's own lines as they come: a from-source build takes most of an hour.
            run_step_on_nodes(session.group, step, progress, stream=step.name in ("build", "pull"))
        progress.step(len(steps) + 1, len(steps) + 1, "distribute", "same image ID on every node")
        return distribute(cfg, session.group, ctxs, local_name(cfg.cluster["image"]), progress, routes)


def image_ids(group: NodeGroup, ctxs: list[NodeContext], image: str) -> dict[str, str | None]:
    """Each node's ID of the image (None where it is absent or the node could not say)."""
    def one(conn: NodeConn) -> str | None:
        res = conn.run(image_id_argv(image), timeout=60)
        return res.stdout.strip() if res.ok else None
    found = group.subset([c.name for c in ctxs]).map(one)
    return {name: found.succeeded.get(name) for name in found}


def copy_argv(image: str, ssh: list[str], address: str) -> list[str]:
    """argv run on the head: image_copy.py pipes `docker save IMAGE` into `ssh ADDRESS docker
    load`, counting the bytes and checking both ends' exit status."""
    return python_argv("image_copy.py", image, *ssh, address, "docker", "load")


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
        size = image_size(group[head.name], image)
        ssh = cfg.cluster["ssh"]
        jobs = {c.name: copy_argv(image, ssh_command(c.node, ssh), routes[c.name]) for c in stale}
        copies = copy_all(group[head.name], jobs, size, progress)
        copies.raise_failures("step 'distribute'")
        ids = image_ids(group, ctxs, image)
    wrong = {n: i for n, i in ids.items() if i != want}
    if wrong:
        raise StepError(f"nodes still differ from the head's image {want[:19]}: {wrong}", step="distribute")
    return {n: want for n in ids}


def image_size(head: NodeConn, image: str) -> float:
    """About what `docker save` will send (the image's size), for the meters; 0 if unknown."""
    res = head.run(("docker", "image", "inspect", "--format", "{{.Size}}", image), timeout=60)
    try:
        return float(res.stdout.strip()) if res.ok else 0.0
    except ValueError:
        return 0.0


def copy_all(head: NodeConn, jobs: dict[str, list[str]], size: float, progress: Progress, *,
             every: float = 5.0) -> GroupResult[float]:
    """Every worker's copy at once, each a process on the head (image_copy.py) whose byte
    counts drive a meter per worker (a line every `every` seconds). Ctrl-C or an error lets go
    of them all, which stops them."""
    head.connect()  # once, before the threads share it
    stop = threading.Event()
    out: GroupResult[float] = GroupResult()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {node: pool.submit(copy_one, head, node, argv, size, progress, stop, every)
                   for node, argv in jobs.items()}
        try:
            for node, future in futures.items():
                try:
                    out[node] = future.result()
                except SparkopsError as exc:
                    out[node] = exc
        except BaseException:
            stop.set()
            raise
    return out


def copy_one(head: NodeConn, node: str, argv: list[str], size: float, progress: Progress,
             stop: threading.Event, every: float) -> float:
    fix = ("check that the head can SSH to the worker over the cable (the same as `inv sync` needs) "
           "and that the worker has free disk (`df -h /var/lib/docker`)")
    meter = progress.meter(f"      {node} <- {head.name}", size, amount=gb, rate=True, every=every)
    start = time.monotonic()
    deadline = start + BUILD_TIMEOUT_S
    held = head.hold(argv)
    try:
        sent, last_word = 0, start
        while not stop.is_set():
            line = held.readline(timeout=1.0)
            now = time.monotonic()
            if line is None:
                if held.ended:
                    raise StepError("the copy ended without a word", host=node, step="distribute", fix=fix)
                if now - last_word > SILENT_S or now > deadline:
                    raise StepError(f"the copy went silent for {now - last_word:.0f}s (or ran past "
                                    f"{BUILD_TIMEOUT_S}s)", host=node, step="distribute", fix=fix)
                continue
            last_word = now
            word, _, rest = line.partition(" ")
            if word == "bytes":
                sent = int(rest)
                meter.update(sent)
            elif word == "ok":
                sent = int(rest)
                progress.node(node, True, now - start, f"{gb(sent)} loaded from the head "
                                                       f"({gb(sent / max(now - start, 1e-9))}/s)")
                return now - start
            elif word == "failed:":
                raise StepError(f"copying the image from {head.name} failed: {rest}", host=node,
                                step="distribute", fix=fix)
        raise StepError("stopped", host=node, step="distribute")
    finally:
        held.release()
