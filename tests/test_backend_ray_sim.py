"""Backend `ray` on the simulated two-host cluster: a real two-node Ray cluster forms over the
169.254 "cable" and the head issues `vllm serve --distributed-executor-backend ray`. vLLM's
CPU build refuses Ray (`current platform cpu does not support ray`), so this verifies the Ray
path up to that documented refusal, then that the rollback leaves nothing on either host."""
from __future__ import annotations

import json
import re

import pytest

from sparkops.apply.run import CHECKS
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress
from sparkops.config import load_config
from sparkops.deploy.down import down
from sparkops.deploy.status import collect, render
from sparkops.deploy.up import up
from sparkops.facts.recorded import facts_for_plan
from sparkops.models.smoke import build_everywhere
from sparkops.plan import plan_up
from sparkops.sim.tasks import write_override

pytestmark = [pytest.mark.cluster, pytest.mark.vllm, pytest.mark.slow]

REFUSAL = "current platform cpu does not support ray"
# Every process a Ray node or the vLLM driver runs, by command line.
LEFTOVERS = ("ray", "raylet", "gcs_server", "vllm")


class Recorder(Progress):
    """Keeps every progress line; at the start of a named step runs a hook (while it is up)."""

    def __init__(self, hooks=None):
        super().__init__(quiet=True)
        self.lines: list[str] = []
        self.steps: list[str] = []
        self.hooks = hooks or {}

    def say(self, text: str) -> None:
        self.lines.append(text)

    def step(self, number, total, name, title) -> None:
        super().step(number, total, name, title)
        self.steps.append(name)
        if name in self.hooks:
            self.hooks[name]()


@pytest.fixture(scope="module")
def ray_cfg(sim_cluster, vllm_venv, tmp_path_factory, monkeypatch_module):
    if not (vllm_venv / "bin" / "ray").exists():
        pytest.fail(f"no Ray in {vllm_venv}: `python3 -m sparkops.node_scripts.vllm_cpu --venv {vllm_venv} "
                    "--with-ray` (scripts/test does)", pytrace=False)
    override = tmp_path_factory.mktemp("sim-ray") / "sparkops.local.toml"
    monkeypatch_module.setenv("SPARKOPS_LOCAL", str(override))
    write_override(sim_cluster, override)
    cfg = load_config("smoke", "sim", sets=[f"cluster.venv={json.dumps(str(vllm_venv))}",
                                            'distributed.backend="ray"'], environ={})
    build_everywhere(cfg, Progress(quiet=True))
    yield cfg
    down(cfg, progress=Progress(quiet=True))


def leftovers(cluster) -> dict[str, list[str]]:
    """`pgrep -fa` hits of LEFTOVERS on each host (each host has its own PID namespace)."""
    found = {}
    for host in (cluster.host(n) for n in ("spark-a", "spark-b")):
        hits = []
        for pattern in LEFTOVERS:
            res = host.run(["pgrep", "-fa", pattern])
            hits += [line for line in res.stdout.splitlines() if "pgrep" not in line]
        found[host.name] = sorted(set(hits))
    return found


def test_ray_cluster_forms_serve_is_issued_cpu_refuses_and_nothing_is_left(ray_cfg, sim_cluster, vllm_venv):
    cfg = ray_cfg
    head, worker = sim_cluster.host("spark-a"), sim_cluster.host("spark-b")
    address = f"{head.roce_ip}:{cfg.cluster['ports']['ray']}"
    seen = {}

    def while_ray_is_up():
        # Asked of Ray itself, from the worker, just before vLLM starts on the head.
        res = worker.run([str(vllm_venv / "bin" / "ray"), "status", "--address", address], timeout=60)
        seen["ray status"] = res.stdout + res.stderr
        seen["inv status"] = render(collect(cfg))

    def while_vllm_starts():
        # vLLM imports for seconds before it refuses Ray: its argv is there to read.
        pid = head.run(["cat", "/root/.local/share/sparkops/run/vllm.pid"]).stdout.strip()
        cmdline = head.run(["cat", f"/proc/{pid}/cmdline"]).stdout
        seen["argv"] = cmdline.split("\0")[:-1]
        environ = head.run(["cat", f"/proc/{pid}/environ"]).stdout
        seen["env"] = dict(item.split("=", 1) for item in environ.split("\0") if "=" in item)

    # What `up` will run, from the same planner and the same live facts.
    facts, _ = facts_for_plan(cfg, "live")
    plan = plan_up(cfg, facts)
    serve = next(s for s in plan.steps if s.name == "start-vllm")
    assert serve.env["spark-a"]["RAY_ADDRESS"] == address

    progress = Recorder(hooks={"start-vllm": while_ray_is_up, "ready": while_vllm_starts})
    with pytest.raises(SparkopsError) as err:
        up(cfg, progress=progress)
    text = err.value.render()

    # The Ray cluster formed with both nodes: the wait passed, and Ray itself said so.
    assert progress.steps[:5] == ["prepare", "start-ray-head", "start-ray-workers", "wait-ray",
                                  "start-vllm"], progress.lines
    assert any(re.search(r"spark-a\s+ok .*ray-nodes: 2", line) for line in progress.lines), progress.lines
    assert CHECKS["ray-nodes"](seen["ray status"]) == 2, seen["ray status"]
    assert "Ray on the head: 2 node(s) joined" in seen["inv status"], seen["inv status"]

    # vLLM started as the Ray driver, with the planned argv, and refused Ray on CPU.
    assert err.value.step == "ready" and err.value.host == "spark-a", text
    assert REFUSAL in "\n".join(err.value.details), text
    assert "distributed.backend" in (err.value.fix or ""), text
    planned = list(serve.actions["spark-a"][0].argv)
    argv = seen["argv"]
    # The process is the venv's python running the `vllm` script with the planned argv.
    assert argv[1:] == planned[planned.index("--") + 1:], (argv, planned)
    assert argv[1] == f"{vllm_venv}/bin/vllm" and argv[2:4] == ["serve", cfg.model["repo"]]
    assert seen["env"]["RAY_ADDRESS"] == address
    assert argv[-2:] == ["--distributed-executor-backend", "ray"]
    assert "--tensor-parallel-size" in argv and argv[argv.index("--tensor-parallel-size") + 1] == "2"

    # The rollback stopped everything on both hosts.
    assert leftovers(sim_cluster) == {"spark-a": [], "spark-b": []}
