"""Layout replicas in the docker runtime on the simulated pair, as a first-time owner would run
it: the README's first-run lines (setup, check, build, smoke-model) as the unprivileged owner,
then `up` in the replicas layout: a `sparkops-vllm` container on each host and vLLM's router in
a `sparkops-router` container on the head (the serving image's Python, sparkops/node_scripts/
router.py), requests from the LAN with the key, `status` READY, the router's log in `logs`,
and `down` leaves no container. The native runtime's replicas are test_replicas_sim.py's."""
from __future__ import annotations

import pytest
import requests
from test_readme_sequence_sim import docker, owner, readme_block  # noqa: F401  (owner: a fixture)

from sparkops.apply.ready import headers
from sparkops.config.toml_files import read_toml

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.vllm]

# The sim's head is reached over its LAN address: the router may listen there (checks/api.py).
REPLICAS = ("--set serving.tensor_parallel=1 --set serving.data_parallel=2 --set distributed.backend=replicas "
            "--set router.allow_unauthenticated_admin=true")
FIRST_RUN = ("inv setup", "inv check", "inv build", "inv smoke-model")


def test_replicas_in_containers_serve_from_both_hosts_and_down_leaves_nothing(owner, sim_docker):  # noqa: F811
    head, worker = sim_docker.hosts
    for line in readme_block():
        if not line.startswith(FIRST_RUN):
            continue
        line = line.replace("169.254.100.2 ", f"{worker.roce_ip} ").replace("--trust-host-keys",
                                                                             "--trust-host-keys --yes")
        done = owner(line)
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    done = owner(f"inv up --profile smoke {REPLICAS}")
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    said = done.stdout + done.stderr  # progress goes to stderr
    assert "every replica served: replica 0 on spark-a" in said and "replica 1 on spark-b" in said, said[-3000:]
    names = {h.name: docker(h, "ps", "--format", "{{.Names}}", "--filter", "label=sparkops.managed=1").split()
             for h in (head, worker)}
    assert {k: sorted(v) for k, v in names.items()} == {"spark-a": ["sparkops-router", "sparkops-vllm"],
                                                        "spark-b": ["sparkops-vllm"]}, names
    key = read_toml(head.owner_home / "sparkops.local.toml")["secrets"]["api_key"]
    for i in range(8):
        answer = requests.post(f"http://{head.mgmt_ip}:8000/v1/chat/completions", timeout=120, headers=headers(key),
                               json={"model": "smoke", "messages": [{"role": "user", "content": f"{i} Hi"}],
                                     "max_tokens": 4})
        assert answer.status_code == 200, answer.text
    status = owner("inv status")
    assert status.returncode == 0 and "deployment READY" in status.stdout, status.stdout
    logs = owner("inv logs --lines 2")
    assert {"[spark-a:router]", "[spark-a:vllm]", "[spark-b:vllm]"} <= {
        line.split("]")[0] + "]" for line in logs.stdout.splitlines()}, logs.stdout[-2000:]
    assert owner("inv down").returncode == 0
    assert [docker(h, "ps", "-aq", "--filter", "label=sparkops.managed=1") for h in (head, worker)] == ["", ""]
