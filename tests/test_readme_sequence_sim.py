"""The README's "On two Sparks" block, run as written on the simulated pair: each line in turn,
through bash, inside the head (spark-a) as its unprivileged owner, in the checkout, with
the Docker runtime, as a first-time owner would type it. What differs from a real pair is said
here, not hidden: the worker's cable address is the simulated one, `--trust-host-keys` gets
`--yes` (no terminal to confirm at), the cluster is `sim` (the owner's override file names it
the default, as `inv sim-up` does), and the last three lines (a 65 GB download, a GPU) are only
checked to name verbs and flags that exist. The deployment it makes is then checked as a user
would: a streamed chat with the key, the containers running as the owner, every file in the
owner's caches the owner's, status, logs, and down."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from test_fix_commands import Command, commands_in, problems, task_flags

from sparkops.apply.ready import headers
from sparkops.config import local_override
from sparkops.config.toml_files import read_toml
from sparkops.sim import layout
from sparkops.sim.cluster import STANDINS_DIR

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[1]
OVERRIDE = f"{layout.OWNER_HOME}/sparkops.local.toml"
NEEDS_A_REAL_PAIR = ("inv download ", "inv sync --profile gpt-oss", "inv up --profile gpt-oss")


def readme_block() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## On two Sparks\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.split("```\n")[1].splitlines() if line.strip()]


def test_the_block_is_the_whole_first_run():
    """Nothing a first run needs is left out: the image, the smoke model, the key."""
    lines = readme_block()
    verbs = [line.split()[1] for line in lines if line.startswith("inv ")]
    assert verbs[:6] == ["setup", "check", "build", "smoke-model", "plan", "up"], verbs
    assert any("inv api-key" in line for line in lines)
    flags = task_flags()
    for line in lines:
        for command in commands_in(line.split("#", 1)[0]):
            assert problems(Command("README.md", command), flags) == [], line


@pytest.fixture(scope="module")
def owner(sim_docker):
    """`run(line)`: one line of the block through bash inside spark-a as the owner; the owner's
    override file holds what `inv sim-up` would write: the pair's node names, the default
    cluster, where its known hosts are (the owner's own file, which setup fills)."""
    head = sim_docker.host("spark-a")
    path = head.owner_home / "sparkops.local.toml"
    path.unlink(missing_ok=True)  # a first run: nothing of another test's
    doc = local_override.update(local_override.load(path), cluster="sim", default_cluster="sim",
                                nodes=[{"name": n["name"], "host": "spark-b.local" if i else "local", "env": n["env"]}
                                       for i, n in enumerate(sim_docker.nodes())])
    doc["clusters"]["sim"]["ssh"] = {"known_hosts": "~/.ssh/known_hosts"}
    local_override.save(doc, path)
    subprocess.run(["chown", f"{layout.OWNER_UID}:{layout.OWNER_UID}", str(path)], check=True)
    env = {"SPARKOPS_LOCAL": OVERRIDE, "SPARKOPS_CLUSTER__RUNTIME": '"docker"',
           "PATH": f"{Path(sys.executable).parent}:{STANDINS_DIR}:/usr/local/bin:/usr/bin:/bin"}

    def run(line: str, timeout: float = 900) -> subprocess.CompletedProcess:
        argv = sim_docker.owner_argv(head, ["bash", "-c", line], cwd=str(ROOT), env=env)  # in the checkout
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    yield run
    run("inv down")
    path.unlink()


def test_the_readme_block_runs_as_written_on_the_simulated_pair(owner, sim_docker):
    head, worker = sim_docker.hosts
    said = {}
    for line in readme_block():
        if line.startswith("python3 -m venv") or line.startswith(NEEDS_A_REAL_PAIR):
            continue
        line = line.replace("169.254.100.2 ", f"{worker.roce_ip} ").replace("--trust-host-keys",
                                                                             "--trust-host-keys --yes")
        done = owner(line)
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, done.stderr
        said[line.split()[1] if line.startswith("inv ") else line.split()[0]] = done.stdout
    assert "API key generated" in said["setup"]
    assert "spark-a -> spark-b: 169.254.100.12, RoCE enp1s0f1np1" in said["plan"]
    assert [m["id"] for m in json.loads(said["curl"])["data"]] == ["smoke"]
    key = read_toml(head.owner_home / "sparkops.local.toml")["secrets"]["api_key"]

    # A streamed chat with the key, from another machine on the LAN.
    with requests.post(f"http://{head.mgmt_ip}:8000/v1/chat/completions", stream=True, timeout=120,
                       headers=headers(key), json={
            "model": "smoke", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}) as resp:
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith(b"data: {")]
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    # The containers run as the owner; the model it built, the caches and homes they wrote: the owner's.
    for host in (head, worker):
        ps = docker(host, "ps", "-q", "--filter", "label=sparkops.managed=1").split()
        assert len(ps) == 1, host.name
        assert docker(host, "exec", ps[0], "id", "-u").strip() == str(layout.OWNER_UID)
        written = list((host.owner_home / ".cache").rglob("*"))
        assert written and {p.lstat().st_uid for p in written} == {layout.OWNER_UID}, host.name

    status = owner("inv status")
    assert status.returncode == 0 and "READY" in status.stdout, status.stdout
    logs = owner("inv logs --lines 3")
    assert {"[spark-a:vllm]", "[spark-b:vllm]"} <= {line.split("]")[0] + "]" for line in logs.stdout.splitlines()}
    down = owner("inv down")
    assert down.returncode == 0, down.stderr
    assert [docker(h, "ps", "-aq", "--filter", "label=sparkops.managed=1") for h in (head, worker)] == ["", ""]


def docker(host, *args: str) -> str:
    done = host.run(["docker", "-H", f"unix://{host.docker_sock}", *args])
    assert done.returncode == 0, done.stderr
    return done.stdout
