"""Executing a plan: each step on all its nodes at once, with timeouts; on any failure
or Ctrl-C, the plan's undo steps run on every node before the error is reported."""
from __future__ import annotations

import re
import time

from .logtail import explain
from .errors import ConnectError, SparkopsError, StepError
from .plan.model import Plan, Poll, Run, Step, WaitReady, WriteFile
from .progress import Progress
from .readiness import probe
from .remote.connection import CommandTimeout, NodeConn
from .remote.group import NodeGroup

CHECKS = {
    # `ray status`: one "1 node_<id>" line per live node under "Active:".
    "ray-nodes": lambda out: len(re.findall(r"^\s*\d+\s+node_[0-9a-f]+", out, re.MULTILINE)),
}


def run_action(conn: NodeConn, action, step: Step) -> str:
    if isinstance(action, Run):
        res = conn.run(action.argv, timeout=action.timeout_s)
        if res.rc not in action.ok_exit:
            raise StepError(f"`{action.render()[:200]}` exited {res.rc}", host=conn.name,
                            step=step.name, log_tail=res.tail(30))
        return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    if isinstance(action, WriteFile):
        res = conn.write_file(action.path, action.content, action.mode)
        if not res.ok:
            raise StepError(f"cannot write {action.path}", host=conn.name, step=step.name,
                            log_tail=res.tail(10), fix="check the directory exists and is writable")
        return ""
    if isinstance(action, Poll):
        deadline = time.monotonic() + action.timeout_s
        seen = 0
        while True:
            res = conn.run(action.argv, timeout=min(60, action.timeout_s))
            seen = CHECKS[action.check](res.stdout) if res.ok else 0
            if seen >= action.expect:
                return f"{action.check}: {seen}"
            if time.monotonic() > deadline:
                raise StepError(f"{action.check} reached {seen} of {action.expect} within "
                                f"{action.timeout_s:.0f}s", host=conn.name, step=step.name,
                                log_tail=res.tail(30))
            time.sleep(action.interval_s)
    raise TypeError(f"unknown action {action!r}")


def run_step_on_nodes(group: NodeGroup, step: Step, progress: Progress) -> None:
    def work(conn: NodeConn):
        start = time.monotonic()
        try:
            detail = ""
            for action in step.actions.get(conn.name, ()):
                detail = run_action(conn, action, step) or detail
        except CommandTimeout as exc:
            progress.node(conn.name, False, time.monotonic() - start, "timed out")
            raise StepError(str(exc), host=conn.name, step=step.name,
                            log_tail=exc.partial.splitlines()[-30:]) from None
        except SparkopsError:
            progress.node(conn.name, False, time.monotonic() - start)
            raise
        progress.node(conn.name, True, time.monotonic() - start, detail[:80])

    results = group.subset(step.actions).map(work)
    failures = [r for r in results.values() if isinstance(r, BaseException)]
    if failures:
        first = failures[0]
        if isinstance(first, SparkopsError):
            if len(failures) > 1:
                first.details.extend(f"also failed: {e.host}: {e.message}" for e in failures[1:]
                                     if isinstance(e, SparkopsError))
            raise first
        raise first


def wait_ready(group: NodeGroup, wait: WaitReady, api_key: str | None, progress: Progress) -> None:
    deadline = time.monotonic() + wait.timeout_s
    start = time.monotonic()
    last_said = 0.0
    last = None
    while True:
        last = probe(wait.url, wait.model, api_key)
        if last.ready:
            progress.say(f"      API ready after {time.monotonic() - start:.1f}s: {last.detail}")
            return
        for item in wait.watch:
            res = group[item.node].run(item.status_argv, timeout=30)
            if not (res.ok and res.stdout.strip().startswith("running")):
                log = group[item.node].run(item.log_argv, timeout=30)
                raise StepError(f"{item.service} on {item.node} stopped while waiting for the API",
                                host=item.node, step="ready", **explain(log.stdout + log.stderr))
        now = time.monotonic()
        if now - last_said > 15:
            head = wait.watch[0]
            log = group[head.node].run(head.log_argv, timeout=30)
            tail = (log.stdout + log.stderr).rstrip().splitlines()[-1:]
            progress.say(f"      waiting {now - start:4.0f}s ({last.detail})"
                         + (f"  | {tail[0][:100]}" if tail else ""))
            last_said = now
        if now > deadline:
            head = wait.watch[0]
            log = group[head.node].run(head.log_argv, timeout=30)
            found = explain(log.stdout + log.stderr)
            found["fix"] = found["fix"] or ("raise serving.ready_timeout_s if the model is still "
                                            "loading; see `inv logs`")
            raise StepError(f"the API at {wait.url} was not ready within {wait.timeout_s:.0f}s "
                            f"(last check: {last.detail})", host=head.node, step="ready", **found)
        time.sleep(1.0)


def apply(plan: Plan, group: NodeGroup, *, progress: Progress, api_key: str | None = None) -> None:
    """Run the plan; on any failure or Ctrl-C undo everything it could have started."""
    total = len(plan.steps)
    try:
        for number, step in enumerate(plan.steps, 1):
            progress.step(number, total, step.name, step.title)
            if step.actions:
                run_step_on_nodes(group, step, progress)
            for action in step.controller:
                if isinstance(action, WaitReady):
                    wait_ready(group, action, api_key, progress)
    except (SparkopsError, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        progress.say("interrupted: stopping what this run started" if interrupted
                     else "failed: stopping what this run started on every node")
        problems = undo(plan, group, progress)
        if isinstance(exc, SparkopsError) and problems:
            exc.details.extend(problems)
        raise


def undo(plan: Plan, group: NodeGroup, progress: Progress) -> list[str]:
    problems = []
    for step in plan.undo:
        try:
            run_step_on_nodes(group, step, progress)
        except ConnectError as exc:
            problems.append(f"could not clean up {exc.host}: {exc.message}")
        except SparkopsError as exc:
            problems.append(f"clean-up on {exc.host} failed: {exc.message}")
    return problems
