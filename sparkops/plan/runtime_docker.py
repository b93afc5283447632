"""Docker runtime: one named container per service on each node (`sparkops-<service>`)."""
from __future__ import annotations

import posixpath

from sparkops.config.image import local_name
from sparkops.config.memfit import nodes_needed
from sparkops.plan.context import CONTAINER_DIR, CONTAINER_HF_HOME, CONTAINER_HOME, NodeContext
from sparkops.plan.steps import Run

name = "docker"
PREFIX = "sparkops-"


def container(service: str) -> str:
    return PREFIX + service


# The node's compile caches (under cluster.paths.cache_dir), where the container sees them and
# the variable that points the program there: a restart does not recompile.
CACHES = {"vllm": "VLLM_CACHE_ROOT", "flashinfer": "FLASHINFER_WORKSPACE_BASE", "triton": "TRITON_CACHE_DIR"}


def service_env(ctx: NodeContext) -> dict[str, str]:
    env = {"HF_HOME": CONTAINER_HF_HOME, "HOME": CONTAINER_HOME,
           **{var: f"{CONTAINER_DIR}/cache/{name}" for name, var in CACHES.items()}}
    if user_flags(ctx):  # a uid the image may not know: Python's getpass (torch's caches) asks $USER
        env |= {"USER": ctx.facts.user or "sparkops", "LOGNAME": ctx.facts.user or "sparkops"}
    return env


def user_flags(ctx: NodeContext) -> list[str]:
    """`--user UID:GID` of the node's user (unless cluster.docker.run_as = "root"), so that what
    a container writes into the mounted caches belongs to that user: files root left there make
    `inv sync`, the hash cache and `hf cache delete` fail. Nothing when the user is root, or
    not known (facts from a cluster file)."""
    facts = ctx.facts
    if ctx.cfg.cluster["docker"].get("run_as", "user") == "root" or not facts.uid or facts.gid is None:
        return []
    return ["--user", f"{facts.uid}:{facts.gid}"]


def cache_mounts(ctx: NodeContext) -> list[str]:
    """`-v` for the HF cache, the home and the compile caches: all folders of the node's user,
    made by `prepare` (a missing one would be created by Docker, as root)."""
    out = ["-v", f"{ctx.hf_home}:{CONTAINER_HF_HOME}", "-v", f"{ctx.container_home}:{CONTAINER_HOME}"]
    for name in CACHES:
        out += ["-v", f"{posixpath.join(ctx.cache_dir, name)}:{CONTAINER_DIR}/cache/{name}"]
    return out


def prepare(ctx: NodeContext) -> list:
    return [Run(("mkdir", "-p", ctx.run_dir, ctx.log_dir, ctx.hf_home, ctx.container_home,
                 *(posixpath.join(ctx.cache_dir, d) for d in CACHES)), 30)]


def run_argv(ctx: NodeContext, service: str, argv: list[str]) -> tuple[str, ...]:
    cluster = ctx.cfg.cluster
    out = ["docker", "run", "-d", "--name", container(service),
           "--label", "sparkops.managed=1",
           "--label", f"sparkops.profile={ctx.cfg.profile}",
           "--label", f"sparkops.hash={ctx.cfg.config_hash()}",
           # Every variable, secret or not, comes from the 0600 file: nothing in `docker inspect` argv.
           *host_flags(ctx, ctx.env_file(service), multi=nodes_needed(ctx.cfg.doc) > 1)]
    return tuple(out + ["--entrypoint", argv[0], local_name(cluster["image"]), *argv[1:]])


def host_flags(ctx: NodeContext, env_file: str, *, multi: bool) -> list[str]:
    """What every sparkops container gets, serving or not: the node's user, host network and
    IPC, ulimits, the 0600 env file, the caches, the GPUs and (multi-node) the RDMA devices."""
    docker = ctx.cfg.cluster["docker"]
    out = [*user_flags(ctx), "--network", "host", "--ipc", "host", "--shm-size", docker["shm_size"],
           *(a for limit in docker["ulimits"] for a in ("--ulimit", limit)),
           "--env-file", env_file, *cache_mounts(ctx), *device_flags(ctx, multi=multi)]
    for mount in docker["mounts"]:
        out += ["-v", mount]
    return out + list(docker["extra_args"])


def device_flags(ctx: NodeContext, *, multi: bool) -> list[str]:
    """What reaches the hardware: the GPUs and (multi-node) the RDMA devices, with the rights
    to pin memory. None on a CPU cluster (`--gpus` fails where there is no GPU)."""
    cluster, docker = ctx.cfg.cluster, ctx.cfg.cluster["docker"]
    if cluster["accelerator"] != "nvidia":
        return []
    out = ["--gpus", "all"]
    if multi:
        out += ["--device", "/dev/infiniband"]
    return out + (["--privileged"] if docker["privileged"] else ["--cap-add", "IPC_LOCK"])


def oneshot_argv(ctx: NodeContext, name: str, argv: list[str], env_file: str, *, multi: bool,
                 mounts: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A foreground `docker run --rm` of the cluster's image with serving's flags (a test that
    must see what vLLM would see: `inv check --nccl`)."""
    out = ["docker", "run", "--rm", "--name", name, "--label", "sparkops.managed=1",
           *host_flags(ctx, env_file, multi=multi)]
    for mount in mounts:
        out += ["-v", mount]
    return tuple(out + ["--entrypoint", argv[0], local_name(ctx.cfg.cluster["image"]), *argv[1:]])


def litellm(ctx: NodeContext) -> str:
    """LiteLLM's proxy (a stack's router), from its virtualenv in the image."""
    return posixpath.join(ctx.cfg.cluster["docker"]["litellm_venv"], "bin", "litellm")


def start(ctx: NodeContext, service: str, argv: list[str]) -> list:
    return [Run(run_argv(ctx, service, argv), 120)]


def stop(ctx: NodeContext, service: str) -> Run:
    # Exit 1 is "no such container": stopping is idempotent.
    return Run(("docker", "rm", "-f", container(service)), 60, ok_exit=(0, 1))


def status_argv(ctx: NodeContext, service: str) -> tuple[str, ...]:
    return ("docker", "inspect", "--format",
            "{{.State.Status}} started={{.State.StartedAt}} image={{.Image}} "
            "hash={{index .Config.Labels \"sparkops.hash\"}}", container(service))


def exec_argv(ctx: NodeContext, service: str, argv: list[str]) -> tuple[str, ...]:
    return ("docker", "exec", container(service), *argv)


def log_argv(ctx: NodeContext, service: str, lines: int, follow: bool = False) -> tuple[str, ...]:
    return ("docker", "logs", "--tail", str(lines), *(("-f",) if follow else ()), container(service))


def tool_argv(ctx: NodeContext, argv: list[str]) -> tuple[str, ...]:
    """A throwaway container of the cluster's image, as the service would see the hardware (a
    CUDA image's vLLM may fail even to print its help without a GPU) and with the cluster's own
    mounts and extra arguments (an image may take its vLLM from a mount); no env file."""
    docker = ctx.cfg.cluster["docker"]
    mounts = [a for mount in docker["mounts"] for a in ("-v", mount)]
    return ("docker", "run", "--rm", "--label", "sparkops.managed=1",
            *device_flags(ctx, multi=nodes_needed(ctx.cfg.doc) > 1), *mounts, *docker["extra_args"],
            "--entrypoint", argv[0], local_name(ctx.cfg.cluster["image"]), *argv[1:])
