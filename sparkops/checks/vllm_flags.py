"""Does the vLLM that will run know every flag the plan gives it, and does it have Ray when the
backend is `ray`? Asked of that vLLM itself (`vllm serve --help=all` in the virtualenv or the
image) before anything starts: an unknown flag (`--nnodes` on an old vLLM, a typo in
serving.extra_args) otherwise crashes start-up minutes later, on every node. The help text is
cached on this machine by vLLM version (native) or image ID (docker): it takes a while to print."""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path

from sparkops.base.files import atomic_write
from sparkops.checks.result import FAIL, OK, Check
from sparkops.plan import RUNTIMES
from sparkops.plan.context import NodeContext
from sparkops.plan.steps import Plan, Run
from sparkops.remote.connection import NodeConn

HELP_TIMEOUT_S = 300
_FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")


def known_flags(help_text: str) -> set[str]:
    """Every long option `vllm serve --help=all` prints (argparse lists `--x, --no-x` both)."""
    return set(_FLAG.findall(help_text))


def used_flags(plan: Plan) -> dict[str, set[str]]:
    """The long options of every `vllm serve` the plan starts, per node."""
    out: dict[str, set[str]] = {}
    for step in plan.steps:
        for node, actions in step.actions.items():
            for action in actions:
                if not isinstance(action, Run):
                    continue
                argv = list(action.argv)
                at = _serve_at(argv)
                if at is not None:
                    flags = {a.split("=", 1)[0] for a in argv[at + 1:] if a.startswith("--")}
                    out.setdefault(node, set()).update(flags)
    return out


def _serve_at(argv: list[str]) -> int | None:
    """Where `serve` is in `.../vllm serve ...` (native) or `docker run ... --entrypoint vllm IMAGE
    serve ...` (docker), else None."""
    def is_vllm(a: str) -> bool:
        return a.rsplit("/", 1)[-1] == "vllm"
    for i, a in enumerate(argv):
        if a == "serve" and i >= 1 and (is_vllm(argv[i - 1])
                                        or (i >= 3 and argv[i - 3] == "--entrypoint" and is_vllm(argv[i - 2]))):
            return i
    return None


def unknown(used: set[str], known: set[str]) -> list[tuple[str, str | None]]:
    """(flag, the closest flag this vLLM has) for each flag it does not know."""
    out: list[tuple[str, str | None]] = []
    for flag in sorted(used - known):
        close = difflib.get_close_matches(flag, sorted(known), n=1, cutoff=0.6)
        out.append((flag, close[0] if close else None))
    return out


def cache_key(head: NodeContext, runtime_name: str) -> str | None:
    ident = head.facts.image_id if runtime_name == "docker" else head.facts.vllm_version
    return hashlib.sha256(f"{runtime_name}:{ident}".encode()).hexdigest()[:16] if ident else None


def help_argv(head: NodeContext) -> tuple[str, ...]:
    """`vllm serve --help=all` where vLLM will run: the virtualenv, or a throwaway container of
    the image with the service's device flags."""
    return RUNTIMES[head.cfg.cluster["runtime"]].tool_argv(head, ["vllm", "serve", "--help=all"])


def help_text(conn: NodeConn, head: NodeContext, cache_dir: Path) -> tuple[str | None, str]:
    """(the help text, or None when it could not be read; what happened)."""
    runtime = RUNTIMES[head.cfg.cluster["runtime"]]
    key = cache_key(head, runtime.name)
    cached = cache_dir / f"{key}.json" if key else None
    if cached is not None and cached.is_file():
        try:
            return json.loads(cached.read_text())["help"], "cached"
        except (OSError, ValueError, KeyError):
            pass
    res = conn.run(help_argv(head), timeout=HELP_TIMEOUT_S)
    text = res.stdout
    if not res.ok or "--" not in text:
        return None, f"`vllm serve --help=all` failed (exit {res.rc}): {' '.join(res.tail(3))}"
    if cached is not None:
        atomic_write(cached, json.dumps({"help": text}))
    return text, "read"


def checks(plan: Plan, head: NodeContext, conn: NodeConn, cache_dir: Path) -> list[Check]:
    out = []
    text, how = help_text(conn, head, cache_dir)
    if text is None:
        out.append(Check("vllm.flags", "deploy", head.name, FAIL,
                         f"could not ask vLLM which flags it has: {how}",
                         fix="is vLLM installed in the runtime? `inv check` shows it"))
    else:
        known = known_flags(text)
        for node, used in used_flags(plan).items():
            for flag, closest in unknown(used, known):
                hint = f"; the closest it has is {closest}" if closest else ""
                out.append(Check("vllm.flags", "deploy", node, FAIL,
                                 f"this vLLM has no flag {flag}{hint}",
                                 evidence={"source": f"`vllm serve --help=all` on {head.name} ({how})"},
                                 fix=f"remove or correct {flag} (serving.extra_args, or a newer image/virtualenv)"))
        if not out:
            out.append(Check("vllm.flags", "deploy", head.name, OK, "vLLM knows every flag the plan uses"))
    if head.cfg.doc["distributed"]["backend"] == "ray":
        runtime = RUNTIMES[head.cfg.cluster["runtime"]]
        res = conn.run(runtime.tool_argv(head, ["python3", "-c", "import ray; print(ray.__version__)"]),
                       timeout=120)
        if not res.ok:
            out.append(Check("vllm.ray", "deploy", head.name, FAIL, "backend is ray, but Ray is not installed "
                             "where vLLM runs", evidence={"output": res.tail(2)},
                             fix="install Ray there (`pip install ray`), or use backend mp"))
    return out
