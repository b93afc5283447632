"""`inv sync`: copy the model's Hugging Face cache folder from the head to every worker.

The head's folder is described once by a manifest (each file's size and sha256, each
symlink's target; hashes cached per node). Each worker, in parallel, compares its copy with
it and reports what is missing, cut short or wrong and how much free disk it has; a worker
short of space refuses the whole sync before anything is copied. Wrong files are deleted,
then rsync (run on the head, over the RoCE link, see transport.py) copies exactly what
differs, symlinks as symlinks, so `snapshots/<rev>/*` keep pointing into `blobs/`. Every
copied file is hashed again on the worker: a node is `verified` only when its whole copy
matches the manifest.
"""
from __future__ import annotations

import json
import os
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sparkops.apply.lock import cluster_lock
from sparkops.base.errors import SparkopsError, StepError
from sparkops.base.progress import Meter, Progress
from sparkops.base.units import gb
from sparkops.config import Config
from sparkops.config.memfit import nodes_needed
from sparkops.facts.roce import cable_address
from sparkops.facts.session import ClusterSession, cluster_session
from sparkops.models import transport
from sparkops.models.download import download
from sparkops.node_scripts import python_argv
from sparkops.node_scripts.hf_cache import repo_folder
from sparkops.remote.connection import LOCAL_HOSTS, NodeConn
from sparkops.remote.openssh import ssh_command

MAX_STREAMS = 4  # parallel rsync streams per worker: SSH encrypts one stream on one core
RESERVE_BYTES = 512 << 20  # left free on the worker's disk (or 2% of it, if less)


@dataclass
class NodeSync:
    node: str
    verified: bool = False
    copied_files: int = 0
    copied_bytes: int = 0  # what had to travel, from the comparison
    sent_bytes: int = 0  # what rsync reports it sent (less when it resumed)
    hashed_bytes: int = 0
    extra_files: int = 0
    seconds: float = 0.0
    copy_seconds: float = 0.0
    address: str = ""
    repaired: list[str] = field(default_factory=list)

    def line(self) -> str:
        if not self.copied_files:
            return f"verified, nothing to copy ({self.seconds:.1f}s)"
        rate = self.copied_bytes / self.copy_seconds / 1e6 if self.copy_seconds else 0
        return (f"{'verified' if self.verified else 'NOT verified'}: copied {self.copied_files} file(s), "
                f"{gb(self.copied_bytes)} in {self.copy_seconds:.1f}s ({rate:.0f} MB/s) via {self.address}")


@dataclass
class SyncReport:
    repo: str
    source_bytes: int
    source_files: int
    nodes: list[NodeSync]
    seconds: float


def node_path(cfg: Config, node: dict, value: str) -> str:
    """A configured path as a command on the node sees it, without reading facts first: '~/'
    is relative to the home directory, where an SSH command starts (this machine expands it)."""
    if not value.startswith("~/"):
        return value
    return os.path.expanduser(value) if node["host"] in LOCAL_HOSTS else value[2:]


def model_root(cfg: Config, node: dict) -> str:
    return posixpath.join(node_path(cfg, node, cfg.cluster["paths"]["hf_home"]), "hub",
                          repo_folder(cfg.model["repo"]))


def hash_cache(cfg: Config, node: dict) -> str:
    return posixpath.join(node_path(cfg, node, cfg.cluster["paths"]["cache_dir"]), "models",
                          repo_folder(cfg.model["repo"]) + ".sha256.json")


# The system's python3 when there is one: it starts in ~30 ms, where a pyenv shim takes ~300.


def script(conn: NodeConn, command: str, cfg: Config, *, full: bool = False,
           stdin: str | None = None, timeout: float = 120) -> dict:
    """Run manifest.py on the node (any python3, the file's text as `-c`) -> its JSON."""
    node = next(n for n in cfg.nodes if n["name"] == conn.name)
    argv = python_argv("manifest.py", command, model_root(cfg, node), "--cache", hash_cache(cfg, node))
    res = conn.run_piped(argv + (["--full"] if full else []), timeout=timeout, stdin=stdin or "")
    if not res.ok:
        raise StepError(f"manifest {command} failed (exit {res.rc})", host=conn.name, step="sync",
                        log_tail=res.tail(20), fix="the node needs python3 on its PATH")
    return json.loads(res.stdout)


def default_streams() -> int:
    """One rsync stream per core of the head (where sparkops runs), at most MAX_STREAMS."""
    return max(1, min(MAX_STREAMS, os.cpu_count() or 1))


def sync(cfg: Config, progress: Progress, *, full: bool = False, streams: int | None = None,
         wait: float | None = None) -> SyncReport:
    """Copy the model from the head to the workers the profile uses; verify every one."""
    used = [n["name"] for n in cfg.nodes[:nodes_needed(cfg.doc)]]
    with cluster_session(cfg, used, gather=False) as session, \
            cluster_lock(session, "sync", wait=wait, progress=progress):
        return sync_nodes(session, progress, full=full, streams=streams)


def sync_nodes(session: ClusterSession, progress: Progress, *, full: bool = False,
               streams: int | None = None) -> SyncReport:
    """`sync` inside a session (up's, with facts, or sync's own, without). Node facts (for the
    workers' RoCE addresses) are read only when something must be copied, so a sync with
    nothing to do costs two round trips."""
    cfg, group = session.cfg, session.group
    start = time.monotonic()
    streams = streams or default_streams()
    nodes = cfg.nodes[:nodes_needed(cfg.doc)]
    head, workers = nodes[0], nodes[1:]
    if not workers:
        progress.say(f"{cfg.cluster_name}: one node, nothing to sync")
        return SyncReport(cfg.model["repo"], 0, 0, [], time.monotonic() - start)
    manifest = _scan_head(cfg, group[head["name"]], head, full, progress)
    body = json.dumps({"files": manifest["files"], "links": manifest["links"]})
    timeout = 120 + manifest["bytes"] / 200e6
    worker_group = group.subset(w["name"] for w in workers)
    checks = worker_group.map(lambda conn: script(conn, "check", cfg, full=full, stdin=body, timeout=timeout)
                              ).raise_failures("comparing the copies")
    _refuse_if_short(cfg, checks)
    behind = [w for w in workers if not checks[w["name"]]["verified"]]
    addresses = _addresses(session, behind) if behind else {}
    results = worker_group.map(lambda conn: _sync_one(
        cfg, group[head["name"]], head, conn, addresses.get(conn.name), manifest, body,
        checks[conn.name], streams, progress)).raise_failures("sync")
    return SyncReport(cfg.model["repo"], manifest["bytes"], len(manifest["files"]),
                      [results[w["name"]] for w in workers], time.monotonic() - start)


def _scan_head(cfg: Config, conn: NodeConn, head: dict, full: bool, progress: Progress) -> dict:
    progress.say(f"[{conn.name}] manifest of {model_root(cfg, head)}")
    t0 = time.monotonic()
    manifest = script(conn, "scan", cfg, full=full, timeout=3600)
    flag = f"--profile {cfg.profile} --cluster {cfg.cluster_name}"
    if not manifest["files"]:
        raise SparkopsError(f"model {cfg.model['repo']} is not in the head's cache {model_root(cfg, head)}",
                            host=conn.name, step="sync", fix=f"`inv download {flag}` first")
    if manifest["problems"]:
        raise SparkopsError(f"the head's copy of {cfg.model['repo']} is broken; nothing was copied",
                            host=conn.name, step="sync", details=manifest["problems"][:20],
                            fix=f"delete the broken files and run `inv download {flag}` again")
    progress.say(f"[{conn.name}] {len(manifest['files'])} files, {len(manifest['links'])} links, "
                 f"{gb(manifest['bytes'])}; hashed {gb(manifest['hashed_bytes'])} in "
                 f"{time.monotonic() - t0:.1f}s")
    return manifest


def _refuse_if_short(cfg: Config, checks: dict[str, dict]) -> None:
    short = []
    for node, c in checks.items():
        reserve = min(RESERVE_BYTES, c["total_bytes"] // 50)
        if c["need_bytes"] > c["free_bytes"] - reserve:
            short.append(f"[{node}] needs {gb(c['need_bytes'])}, {gb(c['free_bytes'])} free on "
                         f"{c['fs_path'] if c['fs_path'].startswith('/') else '~/' + c['fs_path']} "
                         f"(of {gb(c['total_bytes'])}; {gb(reserve)} kept in reserve)")
    if short:
        raise SparkopsError(f"not enough disk space for {cfg.model['repo']} on {len(short)} node(s); "
                            "nothing was copied", step="sync", details=short,
                            fix="free space there (other models: `hf cache scan` / `hf cache delete`), "
                                "or point cluster.paths.hf_home at a larger disk")


def _sync_one(cfg, head_conn: NodeConn, head: dict, conn: NodeConn, address: str | None,
              manifest: dict, body: str, check: dict, streams: int, progress: Progress) -> NodeSync:
    t0 = time.monotonic()
    node = next(n for n in cfg.nodes if n["name"] == conn.name)
    out = NodeSync(conn.name, extra_files=len(check["extra"]), hashed_bytes=check["hashed_bytes"],
                   address=address or "")
    for attempt in (1, 2):
        todo = _todo(check)
        if not todo:
            break
        out.repaired += [r for r in check["wrong"] if r not in out.repaired]
        progress.say(f"[{conn.name}] copying {len(todo)} of {len(manifest['files']) + len(manifest['links'])} "
                     f"entries ({gb(check['need_bytes'])}) from {head_conn.name} to {address}"
                     + (f" (attempt {attempt})" if attempt > 1 else ""))
        if check["wrong"]:
            script(conn, "prune", cfg, stdin=json.dumps(check["wrong"]))
        c0 = time.monotonic()
        out.sent_bytes += _copy(cfg, head_conn, head, node, address, manifest, check, streams, progress)
        out.copy_seconds += time.monotonic() - c0
        out.copied_files += len(todo)
        out.copied_bytes += check["need_bytes"]
        check = script(conn, "check", cfg, stdin=body, timeout=120 + manifest["bytes"] / 200e6)
        out.hashed_bytes += check["hashed_bytes"]
    out.verified = check["verified"]
    out.seconds = time.monotonic() - t0
    if not out.verified:
        raise StepError(f"copy of {cfg.model['repo']} does not match the head's after 2 attempts",
                        host=conn.name, step="sync", details=_describe(check),
                        fix=f"run `inv sync --profile {cfg.profile} --cluster {cfg.cluster_name}` again; "
                            "if it persists, check the worker's disk (`dmesg`)")
    progress.node(conn.name, True, out.seconds, out.line())
    return out


def _todo(check: dict) -> list[str]:
    return sorted({*check["missing"], *check["partial"], *check["wrong"], *check["links"]})


def _describe(check: dict) -> list[str]:
    return [f"{k}: {', '.join(sorted(check[k])[:5])}" + (" ..." if len(check[k]) > 5 else "")
            for k in ("missing", "partial", "wrong", "links") if check[k]]


def _addresses(session: ClusterSession, workers: list[dict]) -> dict[str, str]:
    """Each worker's RoCE address (the cable), else the address sparkops reaches it at."""
    names = [w["name"] for w in workers]
    if any(n not in session.facts for n in names):
        session.gather(names)
        session.require(names)
    out = {}
    for w in workers:
        if w["host"] in LOCAL_HOSTS:
            raise SparkopsError("a worker cannot be `local`: sync copies from the head over SSH",
                                host=w["name"], step="sync", fix="give the worker its SSH address")
        out[w["name"]] = cable_address(session.facts[w["name"]], w, session.cfg.cluster["network"])
    return out


def _copy(cfg: Config, head_conn: NodeConn, head: dict, node: dict, address: str | None,
          manifest: dict, check: dict, streams: int, progress: Progress) -> int:
    """rsync streams on the head, in parallel; returns the bytes rsync sent."""
    sizes = {rel: manifest["files"].get(rel, [0])[0] for rel in _todo(check) if rel not in check["partial"]}
    ssh = ssh_command(node, cfg.cluster["ssh"])
    jobs = [(part, False) for part in transport.split(sizes, streams)]
    if check["partial"]:
        jobs.append((sorted(check["partial"]), True))
    meter = progress.meter(f"      {node['name']:<12} copied", check["need_bytes"], amount=gb, rate=True,
                           every=5.0)
    total_timeout = 600 + check["need_bytes"] / 20e6
    src, dest = model_root(cfg, head), model_root(cfg, node)

    def one(index: int) -> int:
        paths, append = jobs[index]
        argv = transport.rsync_argv(ssh, src, address or node["host"], dest, append=append)
        res = head_conn.run_piped(argv, stdin="\0".join(paths) + "\0", timeout=total_timeout,
                                  on_line=_count(meter, index))
        if res.rc != 0:
            raise StepError(f"rsync from {head['name']} to {address} exited {res.rc}", host=node["name"],
                            step="sync", log_tail=res.tail(20),
                            fix=f"check that {head['name']} can `ssh` to {address} without a password "
                                "(the worker's user and key from the cluster file) and has rsync")
        return transport.literal_bytes(res.stdout)

    # Every stream runs to its end before a failure is reported: none is left copying.
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(one, i) for i in range(len(jobs))]
    return sum(f.result() for f in futures)


def _count(meter: Meter, part: int) -> Callable[[str], None]:
    """rsync's --info=progress2 lines of one stream -> that stream's bytes on the meter."""
    def on_line(line: str) -> None:
        done = transport.progress_bytes(line)
        if done is not None:
            meter.update(done, part=part)
    return on_line


def ensure_model(session: ClusterSession, progress: Progress) -> None:
    """`up --sync`: download to the head if it lacks the model, then sync the workers."""
    if session.facts[session.head_name].model_present is False:
        download(session.cfg, progress=progress)
    sync_nodes(session, progress)
