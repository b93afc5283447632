"""`inv sync`: copy the model's Hugging Face cache folder from the head to every worker.

The head's folder is described once by a manifest (each file's size and sha256, each
symlink's target; hashes cached per node). Each worker, in parallel, compares its copy with
it and reports what is missing, cut short or wrong and how much free disk it has; a worker
short of space refuses the whole sync before anything is copied. Wrong files are deleted,
then the head sends exactly what differs over the RoCE link, in parallel streams (SSH, or
plain TCP when asked: transport.py), symlinks as symlinks, so `snapshots/<rev>/*` keep
pointing into `blobs/`. The worker hashes each file as it writes it; the check that follows
takes those hashes for every file nobody else touched since, and reads the rest. A node is
`verified` only when its whole copy matches the manifest.
"""
from __future__ import annotations

import json
import os
import posixpath
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sparkops.apply.lock import cluster_lock
from sparkops.base.errors import SparkopsError, StepError, every_node
from sparkops.base.progress import Meter, Progress
from sparkops.base.units import gb
from sparkops.config import Config
from sparkops.config.memfit import nodes_needed
from sparkops.config.weights import download_patterns
from sparkops.facts.gather import gather
from sparkops.facts.roce import copy_route, lan_allowed, select_roce
from sparkops.facts.session import ClusterSession, cluster_session
from sparkops.models import transport
from sparkops.models.download import download
from sparkops.node_scripts import python_argv
from sparkops.node_scripts.hf_cache import repo_folder
from sparkops.remote.connection import LOCAL_HOSTS, NodeConn
from sparkops.remote.openssh import ssh_command
from sparkops.remote.stream import Held

# The facts a copy needs (the cable's address and speed, the cores), read without the
# slower rest (nvidia-smi, Docker): a fifth of the time on the simulated cluster.
COPY_FACTS = ("ibdev2netdev", "sysfs-roce", "ip", "net-speed", "cpus")
RESERVE_BYTES = 512 << 20  # left free on the worker's disk (or 2% of it, if less)
T = TypeVar("T")


@dataclass
class NodeSync:
    node: str
    verified: bool = False
    copied_files: int = 0
    copied_bytes: int = 0  # what had to travel, from the comparison
    sent_bytes: int = 0  # what the sender sent (of a resumed file, only its tail)
    hashed_bytes: int = 0  # read from disk to hash it (the comparisons before and after the copy)
    written_hashed_bytes: int = 0  # hashed as it was written, by the receiver
    extra_files: int = 0
    seconds: float = 0.0
    copy_seconds: float = 0.0
    address: str = ""
    transport: str = ""
    streams: int = 0
    repaired: list[str] = field(default_factory=list)

    def line(self) -> str:
        if not self.copied_files:
            return f"verified, nothing to copy ({self.seconds:.1f}s)"
        rate = self.copied_bytes / self.copy_seconds / 1e6 if self.copy_seconds else 0
        return (f"{'verified' if self.verified else 'NOT verified'}: copied {self.copied_files} file(s), "
                f"{gb(self.copied_bytes)} in {self.copy_seconds:.1f}s ({rate:.0f} MB/s) via {self.address}, "
                f"{self.transport} x{self.streams}; hashed from disk: {gb(self.hashed_bytes)}")


@dataclass(frozen=True)
class Transfer:
    """How bytes go to the workers: the transport, the streams per worker (0: chosen per
    worker from the cores of both nodes and the link's speed), and whether a worker without a
    cable address may be copied to over the LAN."""
    transport: str = "ssh"
    streams: int = 0
    over_lan: bool = False


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


def transfer_of(cfg: Config, transport_name: str | None = None, streams: int | None = None,
                over_lan: bool | None = None) -> Transfer:
    """The cluster file's [cluster.sync] settings, with the command line's over them."""
    conf = cfg.cluster.get("sync", {})
    name = transport_name or conf.get("transport", "ssh")
    if name not in transport.TRANSPORTS:
        raise SparkopsError(f"unknown sync transport {name!r}", step="sync",
                            fix=f"use one of: {', '.join(transport.TRANSPORTS)}")
    count = conf.get("streams", 0) if streams is None else streams
    if not 0 <= count <= transport.MAX_STREAMS:
        raise SparkopsError(f"streams must be 1 to {transport.MAX_STREAMS} (0: chosen from cores and "
                            f"link), not {count}", step="sync", fix="pass --streams N with N in that range")
    return Transfer(name, count, lan_allowed(cfg.cluster, over_lan))


def sync(cfg: Config, progress: Progress, *, full: bool = False, streams: int | None = None,
         transport_name: str | None = None, wait: float | None = None, over_lan: bool | None = None) -> SyncReport:
    """Copy the model from the head to the workers the profile uses; verify every one."""
    how = transfer_of(cfg, transport_name, streams, over_lan)
    used = [n["name"] for n in cfg.nodes[:nodes_needed(cfg.doc)]]
    with cluster_session(cfg, used, gather=False) as session, \
            cluster_lock(session, "sync", wait=wait, progress=progress):
        return sync_nodes(session, progress, full=full, how=how)


def sync_nodes(session: ClusterSession, progress: Progress, *, full: bool = False,
               how: Transfer | None = None) -> SyncReport:
    """`sync` inside a session (up's, with facts, or sync's own, without). Node facts (for the
    workers' RoCE addresses, cores and link speeds) are read only when something must be
    copied, so a sync with nothing to do costs two round trips."""
    cfg, group = session.cfg, session.group
    start = time.monotonic()
    how = how or transfer_of(cfg)
    nodes = cfg.nodes[:nodes_needed(cfg.doc)]
    head, workers = nodes[0], nodes[1:]
    if not workers:
        progress.say(f"{cfg.cluster_name}: one node, nothing to sync")
        return SyncReport(cfg.model["repo"], 0, 0, [], time.monotonic() - start)
    manifest = _scan_head(cfg, group[head["name"]], head, full, progress)
    if cfg.dummy_weights:
        manifest = weightless(manifest, *download_patterns(cfg.doc))
        progress.say(f"random weights: copying only the config and tokenizer, {len(manifest['files'])} files, "
                     f"{gb(manifest['bytes'])}")
    body = json.dumps({"files": manifest["files"], "links": manifest["links"]})
    timeout = 120 + manifest["bytes"] / 200e6
    worker_group = group.subset(w["name"] for w in workers)
    checks = worker_group.map(lambda conn: script(conn, "check", cfg, full=full, stdin=body, timeout=timeout)
                              ).raise_failures("comparing the copies")
    _refuse_if_short(cfg, checks)
    behind = [w for w in workers if not checks[w["name"]]["verified"]]
    routes = _routes(session, head, behind, checks, how) if behind else {}
    stop = threading.Event()
    results = _until_interrupted(lambda: worker_group.map(lambda conn: _sync_one(
        cfg, group[head["name"]], head, conn, routes.get(conn.name), manifest, body,
        checks[conn.name], progress, stop)), stop).raise_failures("sync")
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


def weightless(manifest: dict, allow: list[str] | None, ignore: list[str] | None) -> dict:
    """The part of a head's manifest that random weights need: the snapshot entries the
    patterns take (config, tokenizer), the blobs they point to, and the refs; not the weights,
    even when the head holds them (it downloaded the whole model once)."""
    from huggingface_hub.utils import filter_repo_objects
    snapshot = {rel: rel.split("/", 2)[2] for rel in [*manifest["files"], *manifest["links"]]
                if rel.startswith("snapshots/") and rel.count("/") >= 2}
    taken = set(filter_repo_objects(sorted(set(snapshot.values())), allow_patterns=allow, ignore_patterns=ignore))
    links = {rel: target for rel, target in manifest["links"].items() if rel not in snapshot or snapshot[rel] in taken}
    pointed = {posixpath.normpath(posixpath.join(posixpath.dirname(rel), target)) for rel, target in links.items()}
    files = {rel: entry for rel, entry in manifest["files"].items()
             if (snapshot[rel] in taken if rel in snapshot else not rel.startswith("blobs/") or rel in pointed)}
    return manifest | {"files": files, "links": links, "bytes": sum(size for size, _ in files.values())}


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


def _until_interrupted(fn: Callable[[], T], stop: threading.Event) -> T:
    """fn in a thread of its own, so that Ctrl-C (which Python hands to this, the main thread)
    reaches the copies: it sets `stop`, which each copy watches; they end their senders and
    receivers, and the interrupt goes on up once they have."""
    box: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            failed.append(exc)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        worker.join(STOP_S)
        raise
    if failed:
        raise failed[0]
    return box[0]


def _sync_one(cfg, head_conn: NodeConn, head: dict, conn: NodeConn, route: tuple[str, Transfer] | None,
              manifest: dict, body: str, check: dict, progress: Progress, stop: threading.Event) -> NodeSync:
    t0 = time.monotonic()
    node = next(n for n in cfg.nodes if n["name"] == conn.name)
    address, how = route or ("", Transfer())
    out = NodeSync(conn.name, extra_files=len(check["extra"]), hashed_bytes=check["hashed_bytes"],
                   address=address, transport=how.transport, streams=how.streams)
    for attempt in (1, 2):
        todo = _todo(check)
        if not todo:
            break
        out.repaired += [r for r in check["wrong"] if r not in out.repaired]
        progress.say(f"[{conn.name}] copying {len(todo)} of {len(manifest['files']) + len(manifest['links'])} "
                     f"entries ({gb(check['need_bytes'])}) from {head_conn.name} to {address} "
                     f"({how.transport}, {how.streams} stream(s))"
                     + (f" (attempt {attempt})" if attempt > 1 else ""))
        if check["wrong"]:
            script(conn, "prune", cfg, stdin=json.dumps(check["wrong"]))
        c0 = time.monotonic()
        result = _copy(cfg, head_conn, head, conn, node, address, manifest, check, how, progress, stop)
        out.copy_seconds += time.monotonic() - c0
        out.sent_bytes += result["sent"]
        out.written_hashed_bytes += sum(s.get("hashed", 0) for s in result["streams"])
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


def _routes(session: ClusterSession, head: dict, workers: list[dict], checks: dict[str, dict],
            how: Transfer) -> dict[str, tuple[str, Transfer]]:
    """Each worker's RoCE address (the cable), else the address sparkops reaches it at, and
    the streams to it: as asked, or from both nodes' cores and the link's speed."""
    names = [head["name"], *(w["name"] for w in workers)]
    known = {n: session.facts[n] for n in names if n in session.facts}  # up's session has them all
    if len(known) < len(names):
        more, down = gather(session.cfg, session.group.subset(n for n in names if n not in known), COPY_FACTS)
        if down:
            raise every_node(down, "reaching the nodes")
        known |= more
    network = session.cfg.cluster["network"]
    out = {}
    for w in workers:
        if w["host"] in LOCAL_HOSTS:
            raise SparkopsError("a worker cannot be `local`: sync copies from the head over SSH",
                                host=w["name"], step="sync", fix="give the worker its SSH address")
        facts = known[w["name"]]
        route = copy_route(facts, w, network, over_lan=how.over_lan)
        if route.over_lan and how.transport == "tcp":
            raise SparkopsError(f"the tcp transport carries the model's bytes in the clear: not over the LAN "
                                f"({route.why})", host=w["name"], step="sync",
                                fix="bring up the cable (`inv check --network`), or copy over the LAN with "
                                    "`--transport ssh --over-lan`")
        streams = how.streams or transport.stream_count(
            how.transport, [known[head["name"]].cpus, facts.cpus], _link_mbps(facts, w, network),
            len(_todo(checks[w["name"]])))
        out[w["name"]] = (route.address, Transfer(how.transport, streams, how.over_lan))
    return out


def _link_mbps(facts, node: dict, network: dict) -> int | None:
    """The speed of the worker's RoCE port, when the node can say (a veth cannot)."""
    try:
        return facts.link_speed_mbps.get(select_roce(facts, node, network).interface) or None
    except SparkopsError:
        return None


def _copy(cfg: Config, head_conn: NodeConn, head: dict, conn: NodeConn, node: dict, address: str,
          manifest: dict, check: dict, how: Transfer, progress: Progress, stop: threading.Event) -> dict:
    """One worker's missing pieces, in `how.streams` parallel streams -> the sender's result."""
    files, links = transport.entries(manifest, check)
    plan = transport.plan_streams(files, links, how.streams)
    meter = progress.meter(f"      {node['name']:<12} copied", check["need_bytes"], amount=gb, rate=True,
                           every=5.0)
    src, dest, cache = model_root(cfg, head), model_root(cfg, node), hash_cache(cfg, node)
    listener = None
    try:
        if how.transport == "tcp":
            secret = one_time_secret()
            listener = conn.hold(transport.listen_argv(dest, cache, address, len(plan)))
            listener.send(secret + "\n")  # stdin: never argv, never a file
            port = _reply(listener, conn.name, "starting the receiver", START_S)["port"]
            carrier = {"kind": "tcp", "address": address, "port": port, "secret": secret}
        else:
            argv = transport.receive_over_ssh(ssh_command(node, cfg.cluster["ssh"]), address, dest, cache)
            carrier = {"kind": "ssh", "argv": argv}
        sender = head_conn.hold(transport.send_argv())
        try:
            sender.send(json.dumps({"root": src, "streams": plan, "carrier": carrier, "every": 1.0}) + "\n")
            result = _follow(sender, head_conn.name, meter, stop)
        finally:
            sender.release()
        broken = any("error" in r for r in result["streams"])
        if listener is not None and not broken:
            _reply(listener, conn.name, "the receiver's summary", START_S)
        elif listener is not None:  # its side of the story, if it has one already (disk full...)
            try:
                said = json.loads(listener.readline(2.0) or "{}").get("result", {})
            except ValueError:
                said = {}
            errors = [s["error"] for s in said.get("streams", []) if "error" in s]
            for r in result["streams"]:
                if "error" in r:
                    r["log"] = r.get("log", []) + [f"receiver on {node['name']}: {e}" for e in errors]
    finally:
        if listener is not None:
            listener.release()  # its stdin closes: it stops, whatever it was doing
    failed = [r for r in result["streams"] if "error" in r]
    if failed:
        first = failed[0]
        why, fix = copy_failure(how.transport, failed, head["name"], node["name"], address, carrier.get("port"),
                                f"--profile {cfg.profile} --cluster {cfg.cluster_name}")
        raise StepError(f"copy from {head['name']} to {address} ({how.transport}) failed in "
                        f"{len(failed)} of {len(plan)} stream(s): {why}", host=node["name"],
                        step="sync", log_tail=first.get("log") or [], fix=fix)
    for stream in result["streams"]:
        for problem in stream.get("problems", []):
            progress.say(f"      {node['name']:<12} {problem}: checked again below")
    return result


def copy_failure(transport_name: str, failed: list[dict], head: str, node: str, address: str, port: int | None,
                 flags: str) -> tuple[str, str]:
    """(what went wrong, the fix) for a copy's failed streams. A refusal by the receiver (an
    entry it will not write, a frame whose MAC fails) says more than the sender's broken pipe
    that follows it, and needs another fix than a connection that could not be made."""
    said = [text for r in failed for text in (r["error"], *r.get("log", []))]
    refusal = next((t[t.index("Refused: ") + 9:] for t in said if "Refused: " in t), None)
    if refusal and "bad MAC" in refusal:
        return refusal, (f"something on the cable between {head} and {node} changed or injected bytes (nothing "
                         "that failed its MAC was written): find it, or sync with `--transport ssh`")
    if refusal and "cannot prove" in refusal:
        return refusal, (f"something other than sparkops' receiver answered on {address}, and was sent nothing: "
                         "find what intercepts the connections, or sync with `--transport ssh`")
    if refusal:
        return refusal, (f"{node} will not write that entry of {head}'s copy (a path or link that leaves the "
                         f"model folder): delete it on {head} and run `inv download {flags}` again")
    if transport_name == "ssh":
        return failed[0]["error"], (f"check that {head} can `ssh` to {address} without a password (the worker's "
                                    "user and key from the cluster file)")
    return failed[0]["error"], (f"check that {node} accepts TCP connections from {head} on {address} (port {port} "
                                "this time; a firewall on the cable?), or sync with `--transport ssh`")


START_S = 60.0  # for a node-side script to start and answer
STOP_S = 30.0  # for the copies to wind down after Ctrl-C
IDLE_S = 120.0  # no byte moved for this long: the copy has stalled


def one_time_secret() -> str:
    """The tcp transport's secret: new for every sync, known only to sparkops and the two
    scripts' stdin."""
    return secrets.token_hex(32)


def _reply(held: Held, node: str, what: str, timeout: float) -> dict:
    line = held.readline(timeout) or ""
    try:
        doc = json.loads(line) if line else {}
    except ValueError:
        doc = {"error": f"unexpected output: {line[:200]}"}
    if "error" in doc or not doc:
        raise StepError(f"{what} failed: {doc.get('error') or ('it ended' if held.ended else 'no answer')}",
                        host=node, step="sync", fix="the node needs python3 on its PATH; run again")
    return doc.get("result", doc)


def _follow(sender: Held, head: str, meter: Meter, stop: threading.Event) -> dict:
    """The sender's progress lines onto the meter, until its result; stalls, deaths and Ctrl-C
    are errors (the caller then closes the sender's stdin, which stops it and its streams)."""
    done = 0
    moved = time.monotonic()
    again = "run the same `inv sync` again: it resumes where this one stopped"
    while not stop.is_set():
        line = sender.readline(0.2)
        if line is None:
            if sender.ended:
                raise StepError(f"the copy stopped: the sender on {head} ended without a result (killed?)",
                                host=head, step="sync", fix=again)
        else:
            doc = json.loads(line)
            if "error" in doc:
                raise StepError(f"the sender failed: {doc['error']}", host=head, step="sync", fix=again)
            if "result" in doc:
                return doc["result"]
            if doc["progress"] > done:
                done, moved = doc["progress"], time.monotonic()
                meter.update(done)
        if time.monotonic() - moved > IDLE_S:
            raise StepError(f"the copy stalled: nothing moved for {IDLE_S:.0f}s", host=head, step="sync",
                            fix="check the cable between the nodes (`inv check`), then " + again)
    raise StepError("interrupted: the copy was stopped", host=head, step="sync", fix=again)


def ensure_model(session: ClusterSession, progress: Progress) -> None:
    """`up --sync`: download to the head if it lacks the model, then sync the workers."""
    if session.facts[session.head_name].model_present is False:
        download(session.cfg, progress=progress)
    sync_nodes(session, progress)
