"""The collective test: node_scripts/allreduce.py on every node at once, one rank per node (or
per GPU), inside the cluster's runtime, with the environment `up` gives vLLM (the planner's
own `serving_env`, less the API key). Its result is the bus bandwidth per message size, the
transport NCCL chose, and every rank's proof that it saw that environment."""
from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass, field

from sparkops.apply.run import run_step_on_nodes
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress
from sparkops.checks.result import CLUSTER, FAIL, OK, WARN, Check
from sparkops.config import Config
from sparkops.facts.nccl_log import parse_nccl_log
from sparkops.facts.node import NodeFacts
from sparkops.facts.roce import RoceChoice, select_roce
from sparkops.facts.service_log import hint
from sparkops.node_scripts import source
from sparkops.plan import RUNTIMES, runtime_docker, runtime_native
from sparkops.plan.context import NodeContext, contexts
from sparkops.plan.env import env_file_text, serving_env
from sparkops.plan.steps import Action, Run, Step, WriteFile
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import NodeGroup
from sparkops.remote.result import CommandTimeout, Result

SCRIPT = "allreduce.py"
CONTAINER = "sparkops-nccl-test"
MARK = '{"sparkops_allreduce"'
ENV_MARK = '{"sparkops_allreduce_env"'
# Message sizes and repetitions: nccl-tests' habits on GPUs; fewer repetitions for gloo on CPUs.
SETTINGS = {"nccl": {"min": "1M", "max": "256M", "factor": "4", "iters": "20", "warmup": "5"},
            "gloo": {"min": "1M", "max": "256M", "factor": "4", "iters": "5", "warmup": "2"}}
RENDEZVOUS_TIMEOUT_S = 120
DEADLINE_S = 600
# Exports each KEY=VALUE line of the 0600 env file ($0), then runs the program (as service.sh).
LOAD_ENV = ('while IFS= read -r line || [ -n "$line" ]; do case "$line" in ""|"#"*) ;; '
            '*) export "$line" ;; esac; done < "$0"; exec "$@"')


@dataclass
class RankRun:
    node: str
    rc: int | None  # None: it did not finish (timed out, connection lost)
    output: str
    error: str = ""


@dataclass
class AllreduceRun:
    backend: str
    world_size: int
    local_ranks: int
    master: str
    env: dict[str, dict[str, str]]
    argv: dict[str, list[str]]
    ranks: list[RankRun] = field(default_factory=list)
    seconds: float = 0.0
    multi_node: bool = False
    accelerator: str = "nvidia"


def parse_result(text: str) -> dict | None:
    """allreduce.py's JSON line, wherever it is among NCCL's own output."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(MARK):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def parse_env_lines(text: str) -> list[dict]:
    """Every rank's report of the environment it saw, from one node's output."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(ENV_MARK):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def rank_env(cfg: Config, ctx: NodeContext, choice: RoceChoice | None, *, multi_node: bool,
             backend: str) -> dict[str, str]:
    """The environment of a rank on this node: what `up` gives vLLM there (serving_env), less
    the API key, with NCCL's INFO lines on (the transport is read from them)."""
    env = serving_env(cfg, ctx, choice, RUNTIMES[cfg.cluster["runtime"]], multi_node=multi_node, secrets=False)
    if backend == "nccl":
        env["NCCL_DEBUG"] = "INFO"
    return env | {"PYTHONUNBUFFERED": "1"}


def run(cfg: Config, group: NodeGroup, facts: dict[str, NodeFacts], progress: Progress) -> AllreduceRun | Check:
    """Start every rank and wait for all; a Check when the test cannot start at all."""
    cluster = cfg.cluster
    ctxs = contexts(cfg, facts, all_nodes=True)
    nvidia = cluster["accelerator"] == "nvidia"
    backend = "nccl" if nvidia else "gloo"
    local = cluster.get("gpus_per_node", 1) if nvidia else 1
    if len(ctxs) * local < 2:
        return Check("nccl.allreduce", "nccl", CLUSTER, OK,
                     "one node with one GPU: no collective to test", {"nodes": [c.name for c in ctxs]})
    multi = len(ctxs) > 1
    picked: dict[str, RoceChoice] = {}
    if multi:
        for c in ctxs:
            try:
                picked[c.name] = select_roce(c.facts, c.node, cluster["network"])
            except SparkopsError as exc:
                return Check("nccl.allreduce", "nccl", c.name, FAIL, f"not run: {exc.message}",
                             {"observed": exc.details}, exc.fix or "")
    master = picked[ctxs[0].name].ip if multi else "127.0.0.1"
    port = cluster["ports"]["rendezvous"]
    s = SETTINGS[backend]
    text = source(SCRIPT)
    envs, argvs, prepare = {}, {}, {}
    for c in ctxs:
        script, env_file = posixpath.join(c.run_dir, SCRIPT), posixpath.join(c.run_dir, "nccl-test.env")
        envs[c.name] = rank_env(cfg, c, picked.get(c.name), multi_node=multi, backend=backend)
        args = ["--backend", backend, "--echo-env", ",".join(sorted(envs[c.name])),
                "--master-addr", master, "--master-port", str(port),
                "--min-bytes", s["min"], "--max-bytes", s["max"], "--factor", s["factor"],
                "--iters", s["iters"], "--warmup", s["warmup"],
                "--timeout", str(RENDEZVOUS_TIMEOUT_S), "--deadline", str(DEADLINE_S)]
        args += (["--local-ranks", str(local), "--node-rank", str(c.rank), "--nnodes", str(len(ctxs))]
                 if local > 1 else ["--rank", str(c.rank), "--world-size", str(len(ctxs)), "--local-rank", "0"])
        if cluster["runtime"] == "docker":
            argvs[c.name] = list(runtime_docker.oneshot_argv(
                c, CONTAINER, ["python3", script, *args], env_file, multi=multi,
                mounts=(f"{c.run_dir}:{c.run_dir}:ro",)))
        else:
            python = runtime_native.program(c, ["python"])[0]
            argvs[c.name] = ["sh", "-c", LOAD_ENV, env_file, python, script, *args]
        actions: list[Action] = [Run(("mkdir", "-p", c.run_dir), 30), WriteFile(script, text, 0o644),
                   WriteFile(env_file, env_file_text(envs[c.name]), 0o600)]
        if cluster["runtime"] == "docker":
            actions.append(Run(("docker", "rm", "-f", CONTAINER), 60, ok_exit=(0, 1)))
        prepare[c.name] = tuple(actions)
    names = [c.name for c in ctxs]
    nodes = group.subset(names)
    run_step_on_nodes(nodes, Step("nccl-prepare", "copy the all-reduce test to every node", prepare), progress)
    progress.say(f"      all-reduce: {len(ctxs) * local} ranks ({backend}) on {', '.join(names)}, "
                 f"rendezvous {master}:{port}")
    start = time.monotonic()

    def rank(conn: NodeConn) -> Result:
        return conn.run(argvs[conn.name], timeout=DEADLINE_S + 60)

    results = nodes.map(rank)
    seconds = time.monotonic() - start
    if cluster["runtime"] == "docker":  # a rank that outlived its SSH session
        nodes.map(lambda conn: conn.run(("docker", "rm", "-f", CONTAINER), timeout=60))
    errors = results.errors()
    ranks = []
    for c in ctxs:
        res = results.succeeded.get(c.name)
        if res is not None:
            ranks.append(RankRun(c.name, res.rc, res.stdout + ("\n" if res.stderr else "") + res.stderr))
            continue
        error = errors[c.name]
        if isinstance(error, CommandTimeout):
            ranks.append(RankRun(c.name, None, error.partial, f"timed out after {error.timeout:.0f}s"))
        else:
            ranks.append(RankRun(c.name, None, "", error.message))
    return AllreduceRun(backend, len(ctxs) * local, local, f"{master}:{port}", envs, argvs, ranks,
                        seconds, multi, cluster["accelerator"])


def checks(cfg: Config, run: AllreduceRun) -> list[Check]:
    """Bandwidth and transport of a finished run (pure)."""
    text = "\n".join(r.output for r in run.ranks)
    result = next((parse_result(r.output) for r in run.ranks if parse_result(r.output)), None)
    report = parse_nccl_log(text)
    transport = {"transports": sorted(report.transports), "ib_devices": report.ib_devices,
                 "socket_ifaces": report.socket_ifaces, "gdr": report.gdr,
                 "nccl_version": report.nccl_version, "fell_back_to_socket": report.fell_back_to_socket}
    evidence = {"backend": run.backend, "world_size": run.world_size, "master": run.master,
                "seconds": round(run.seconds, 1), "env": run.env, "transport": transport}
    failed = [r for r in run.ranks if r.rc != 0]
    if failed or result is None:
        first = failed[0] if failed else run.ranks[0]
        tail = first.output.rstrip().splitlines()[-20:]
        why = first.error or (f"exit {first.rc}" if first.rc else "no result line")
        evidence |= {"node": first.node, "log_tail": tail, "errors": report.errors[:10]}
        return [Check("nccl.allreduce", "nccl", CLUSTER, FAIL,
                      f"all-reduce failed on {first.node} ({why})"
                      + (f": {report.errors[0][:160]}" if report.errors else ""), evidence,
                      hint("\n".join(tail)) or "see the log tail in the evidence (`--json`); "
                      "`inv check --network` first")]
    evidence["results"] = result["results"]
    evidence |= {k: result.get(k) for k in ("device", "torch", "nccl_version", "rendezvous_s")}
    out = [_bandwidth(cfg, result, evidence)]
    out += _transport(run, report, transport)
    out += env_reached(run)
    return out


def env_reached(run: AllreduceRun) -> list[Check]:
    """Did every rank see the environment it was given (the one vLLM gets)? Each rank echoes
    the values of the env file's variables as its process sees them."""
    out = []
    for r in run.ranks:
        want = run.env.get(r.node, {})
        seen = parse_env_lines(r.output)
        if not seen:
            out.append(Check("nccl.env", "nccl", r.node, WARN, "the ranks did not report their environment",
                             {"expected": sorted(want)}, "see the rank's output (`--json`)"))
            continue
        wrong = {f"rank {s.get('rank')}: {k}": {"expected": v, "seen": s.get("env", {}).get(k)}
                 for s in seen for k, v in want.items() if s.get("env", {}).get(k) != v}
        evidence = {"variables": len(want), "differs": wrong,
                    "seen": {str(s.get("rank")): s.get("env", {}) for s in seen}}
        if wrong:
            out.append(Check("nccl.env", "nccl", r.node, FAIL,
                             f"{len(wrong)} variable(s) did not reach the ranks as planned: "
                             + ", ".join(sorted(wrong)[:5]), evidence,
                             "the runtime changed the environment: compare `inv plan` with the "
                             "node's env file and the image's own ENV"))
        else:
            out.append(Check("nccl.env", "nccl", r.node, OK,
                             f"{len(seen)} rank(s) saw all {len(want)} planned variables", evidence))
    return out


def _bandwidth(cfg: Config, result: dict, evidence: dict) -> Check:
    rows = result["results"]
    peak = max(r["busbw_gbps"] for r in rows)
    floor = float(cfg.cluster["network"].get("min_busbw_gbps", 0) or 0)
    per_size = ", ".join(f"{_size(r['bytes'])} {r['busbw_gbps']:.2f}" for r in rows)
    text = f"busbw GB/s per size: {per_size} (peak {peak:.2f}, {result['world_size']} ranks, {result['backend']})"
    evidence |= {"peak_busbw_gbps": peak, "min_busbw_gbps": floor}
    if not all(r["correct"] for r in rows):
        return Check("nccl.allreduce", "nccl", CLUSTER, FAIL, "wrong sums: " + text, evidence,
                     "the collective returned wrong data: check the driver and NCCL version")
    if peak < floor:
        return Check("nccl.allreduce", "nccl", CLUSTER, FAIL,
                     f"peak busbw {peak:.2f} GB/s is under cluster.network.min_busbw_gbps {floor:g}: " + text,
                     evidence, "check the transport (NET/IB, both twin HCAs in NCCL_IB_HCA), MTU 9000 "
                     "and the cable (`inv check --network`)")
    return Check("nccl.allreduce", "nccl", CLUSTER, OK, text, evidence)


def _transport(run: AllreduceRun, report, transport: dict) -> list[Check]:
    if run.backend == "gloo":
        iface = next((e.get("GLOO_SOCKET_IFNAME") for e in run.env.values() if e.get("GLOO_SOCKET_IFNAME")), None)
        return [Check("nccl.transport", "nccl", CLUSTER, OK,
                      f"gloo over TCP{' on ' + iface if iface else ''} (CPU cluster: no NCCL)", transport)]
    seen = ", ".join(sorted(report.transports)) or "none"
    if run.multi_node and report.fell_back_to_socket:
        ifaces = ", ".join(report.socket_ifaces) or "?"
        return [Check("nccl.transport", "nccl", CLUSTER, FAIL,
                      f"NCCL fell back to TCP sockets (NET/Socket on {ifaces}), 4-20x slower than RoCE",
                      transport, "NCCL_IB_HCA must list the Up HCAs (`inv plan` shows it), Docker needs "
                      "--device /dev/infiniband and an unlimited memlock, `ibdev2netdev` must show both "
                      "twins Up; then `inv check --nccl` again")]
    if run.multi_node and "IB" not in report.transports:
        return [Check("nccl.transport", "nccl", CLUSTER, WARN, f"no NET/IB connection seen (transports: {seen})",
                      transport, "NCCL_DEBUG=INFO must reach the ranks; look at the log (`--json`)")]
    where = f"NET/IB over {', '.join(report.ib_devices)}" if report.ib_devices and run.multi_node else seen
    single = "" if run.multi_node else " (one host: no network used)"
    return [Check("nccl.transport", "nccl", CLUSTER, OK, f"NCCL {report.nccl_version or ''} transport: "
                  f"{where}{single}".replace("NCCL  ", "NCCL "), transport)]


def _size(nbytes: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return f"{nbytes}B"
