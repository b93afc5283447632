"""Executing a plan: each step on all its nodes at once, with timeouts; on any failure
or Ctrl-C, the plan's undo steps run on every node before the error is reported."""
from __future__ import annotations

import re
import time
from collections.abc import Callable

from sparkops.apply.ready import wait_ready
from sparkops.base.errors import ConnectError, SparkopsError, StepError
from sparkops.base.progress import Progress
from sparkops.facts.service_log import explain
from sparkops.plan.steps import Action, Plan, Poll, Run, Step, WaitReady, WriteFile
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import GroupResult, NodeGroup
from sparkops.remote.result import CommandTimeout

CHECKS: dict[str, Callable[[str], int]] = {
    # `ray status`: one "1 node_<id>" line per live node under "Active:".
    "ray-nodes": lambda out: len(re.findall(r"^\s*\d+\s+node_[0-9a-f]+", out, re.MULTILINE)),
    # curl -w '%{http_code}': 1 once the URL answers 200.
    "http-200": lambda out: int(out.strip() == "200"),
}


def run_action(conn: NodeConn, action: Action, step: Step, on_line: Callable[[str], None] | None = None) -> str:
    """One action; with on_line, a Run hands over each output line as it comes (a build)."""
    if isinstance(action, Run):
        res = (conn.run_piped(action.argv, stdin="", timeout=action.timeout_s, on_line=on_line) if on_line
               else conn.run(action.argv, timeout=action.timeout_s))
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
            if action.watch:
                alive = conn.run(action.watch.status_argv, timeout=30)
                if not (alive.ok and alive.stdout.strip().startswith("running")):
                    log = conn.run(action.watch.log_argv, timeout=30)
                    raise StepError(f"{action.watch.service} on {conn.name} stopped before it was ready",
                                    host=conn.name, step=step.name, **explain(log.stdout + log.stderr))
            if time.monotonic() > deadline:
                raise StepError(f"{action.check} reached {seen} of {action.expect} within "
                                f"{action.timeout_s:.0f}s", host=conn.name, step=step.name,
                                log_tail=res.tail(30))
            time.sleep(action.interval_s)
    raise TypeError(f"unknown action {action!r}")


def run_step_on_nodes(group: NodeGroup, step: Step, progress: Progress, *, stream: bool = False) -> None:
    """The step's actions on every node it names, all at once; one error names every node
    that failed. stream: each output line of its commands is shown as it comes, `[node] line`."""
    step_results(group, step, progress, stream=stream).raise_failures(f"step '{step.name}'")


def step_results(group: NodeGroup, step: Step, progress: Progress, *, stream: bool = False) -> GroupResult[None]:
    """The step on every node it names, all at once; every node's outcome."""
    def work(conn: NodeConn) -> None:
        start = time.monotonic()
        on_line = (lambda line: progress.say(f"      [{conn.name}] {line}")) if stream else None
        try:
            detail = ""
            for action in step.actions.get(conn.name, ()):
                detail = run_action(conn, action, step, on_line) or detail
        except CommandTimeout as exc:
            progress.node(conn.name, False, time.monotonic() - start, "timed out")
            raise StepError(exc.message, host=conn.name, step=step.name, log_tail=exc.log_tail) from None
        except SparkopsError:
            progress.node(conn.name, False, time.monotonic() - start)
            raise
        progress.node(conn.name, True, time.monotonic() - start, detail[:80])

    return group.subset(step.actions).map(work)


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
        for node, exc in step_results(group, step, progress).errors().items():
            if isinstance(exc, ConnectError):
                problems.append(f"could not clean up {node}: {exc.message}")
            else:
                problems.append(f"clean-up on {node} failed: {exc.message}")
    return problems
