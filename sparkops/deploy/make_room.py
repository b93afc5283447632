"""`up`'s last step before anything starts, on a unified-memory cluster: room for vLLM's
start-up memory check. Each node's memory is read again (the preflight's facts can be minutes
old); where the page cache is in the way (checks/memory.py: evict), the model's own pages are
evicted there (node_scripts/page_cache.py, no root), and the node decides again from what it
reads after. Still short, or memory gone meanwhile: refused with the numbers and a fix."""
from __future__ import annotations

import json
import posixpath

from sparkops.base.errors import SparkopsError, StepError, every_node
from sparkops.base.progress import Progress
from sparkops.checks import memory
from sparkops.facts.gather import gather
from sparkops.facts.parsers import parse_meminfo
from sparkops.facts.session import ClusterSession
from sparkops.node_scripts import python_argv
from sparkops.node_scripts.hf_cache import repo_folder
from sparkops.plan.context import NodeContext, contexts
from sparkops.remote.connection import NodeConn
from sparkops.remote.result import CommandTimeout

STEP = "preflight"
# Pages still dirty after a sync are written back before they can go: a minute or more for a
# large model on a slow disk; evicting clean pages takes seconds.
EVICT_TIMEOUT_S = 600.0


def make_room(session: ClusterSession, progress: Progress) -> None:
    cfg = session.cfg
    if not memory.applies(cfg):
        return
    ctxs = contexts(cfg, session.facts)
    fresh, down = gather(cfg, session.group.subset(c.name for c in ctxs), only=["meminfo"])
    if down:
        raise every_node(down, "reading memory")
    gmu = cfg.serving["gpu_memory_utilization"]
    read = {c.name: mem for c in ctxs if (mem := fresh[c.name].memory) is not None}
    verdicts = {name: memory.decide(mem, gmu) for name, mem in read.items()}
    for c in ctxs:
        if c.name not in read:
            why = fresh[c.name].errors.get("meminfo", "not reported")
            progress.say(f"warning: [{c.name}] /proc/meminfo could not be read ({why}): its free memory is "
                         "not compared with what vLLM will ask for")
    refused = {n: _refused(n, v) for n, v in verdicts.items() if v.action == memory.REFUSE}
    if refused:
        raise every_node(refused, STEP)
    short = [c for c in ctxs if c.name in verdicts and verdicts[c.name].action == memory.EVICT]
    if not short:
        return
    progress.say(f"evicting the model's pages from the page cache on {', '.join(c.name for c in short)}: "
                 "on unified memory vLLM's start-up check counts them as used")
    by_name = {c.name: c for c in short}
    reports = session.group.subset(by_name).map(lambda conn: evict(conn, by_name[conn.name])) \
        .raise_failures("evicting the page cache")
    still: dict[str, SparkopsError] = {}
    for c in short:
        report = reports[c.name]
        before, after = parse_meminfo(report["meminfo_before"]), parse_meminfo(report["meminfo_after"])
        progress.say(f"  {c.name}: {evicted_text(report)}; MemFree {memory.gib_text(before.free_bytes)} -> "
                     f"{memory.gib_text(after.free_bytes)}")
        verdict = memory.decide(after, gmu)
        if verdict.action == memory.REFUSE:
            still[c.name] = _refused(c.name, verdict)
        elif verdict.action == memory.EVICT:
            still[c.name] = SparkopsError(
                f"vLLM would refuse to start, even with the model's pages out of the page cache "
                f"({evicted_text(report)}): {memory.gib_text(after.free_bytes)} are free (MemFree), "
                f"{memory.gib_text(after.cached_bytes)} still in the page cache; {verdict.need_text()}",
                host=c.name, step=STEP, fix=memory.still_short_fix(verdict, c.name))
    if still:
        raise every_node(still, STEP)


def model_folder(ctx: NodeContext) -> str:
    return posixpath.join(ctx.hf_home, "hub", repo_folder(ctx.cfg.model["repo"]))


def evict(conn: NodeConn, ctx: NodeContext) -> dict:
    """Run page_cache.py on the node -> its report (see that script)."""
    try:
        res = conn.run(python_argv("page_cache.py", "evict", model_folder(ctx)), timeout=EVICT_TIMEOUT_S)
    except CommandTimeout as exc:
        raise StepError(f"evicting the model's pages from the page cache took over {exc.timeout:.0f}s",
                        host=conn.name, step=STEP, log_tail=exc.log_tail,
                        fix="check the disk holding the HF cache (`iostat -x 5` on the node)") from None
    try:
        report = json.loads(res.stdout) if res.ok else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise StepError(f"evicting the model's pages from the page cache failed (exit {res.rc})",
                        host=conn.name, step=STEP, log_tail=res.tail(20),
                        fix="the node needs python3 on its PATH (`python3 --version` there)")
    return report


def evicted_text(report: dict) -> str:
    if not report["exists"]:
        return f"no model folder at {report['root']}"
    files = report["files"]
    size = f"{files} file{'' if files == 1 else 's'}, {memory.gib_text(report['bytes'])}"
    if report["unmeasured"]:  # files of another user: mincore cannot tell (page_cache.py)
        text = f"advised the kernel to drop all of the model's {size}"
    else:
        dropped = report["resident_before"] - report["resident_after"]
        text = f"evicted {memory.gib_text(dropped)} of the model's {size}"
    if report["unreadable_count"]:
        text += f" ({report['unreadable_count']} unreadable: {', '.join(report['unreadable'])})"
    return text


def _refused(node: str, verdict: memory.Verdict) -> SparkopsError:
    c = memory.check(node, verdict)
    return SparkopsError(f"vLLM would refuse to start: {c.message}", host=node, step=STEP, fix=c.fix)
