"""The docker runtime on the simulated cluster: real Docker engines per host, an image built
on the head and copied to the worker (`inv build`), vLLM in containers with TP=2 across hosts.
Both hosts are reached as their unprivileged owner (in its `docker` group), as on a real pair:
the containers run as that user, and whatever they write in its caches stays its own."""
from __future__ import annotations

import json

import pytest
import requests

from sparkops.apply.ready import headers
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress, Silent
from sparkops.config import load_config
from sparkops.deploy.down import down
from sparkops.deploy.logs import show
from sparkops.deploy.status import collect
from sparkops.deploy.up import up
from sparkops.models.smoke import build_everywhere
from sparkops.runtimes.build import build
from sparkops.sim.docker import BASE_IMAGE
from sparkops.sim.layout import OWNER_UID
from sparkops.sim.tasks import write_override

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def docker_sim(sim_docker, vllm_venv, tmp_path_factory):
    override = tmp_path_factory.mktemp("sim-docker") / "sparkops.local.toml"
    write_override(sim_docker, override, nodes=sim_docker.owner_nodes(head_local=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARKOPS_LOCAL", str(override))

        def make(extra=()):
            return load_config("smoke", "sim", environ={},
                               sets=['cluster.runtime="docker"', *extra])
        yield make
        down(make(), progress=Silent())


def containers(cluster) -> dict[str, list[str]]:
    out = {}
    for host in cluster.hosts:
        res = host.run(["docker", "-H", f"unix://{host.docker_sock}", "ps", "-aq",
                        "--filter", "label=sparkops.managed=1"], capture_output=True, text=True)
        out[host.name] = res.stdout.split()
    return out


def test_build_gives_every_node_the_same_image_and_skips_when_it_has_it(docker_sim, capsys):
    cfg = docker_sim()
    ids = build(cfg, Progress())
    assert ids["spark-a"] == ids["spark-b"] and ids["spark-a"].startswith("sha256:")
    capsys.readouterr()
    again = build(cfg, Progress())
    assert again == ids
    assert "skipped: already holds" in capsys.readouterr().err


def test_up_in_containers_across_two_hosts(docker_sim, sim_docker):
    cfg = docker_sim()
    build(cfg, Silent())
    build_everywhere(cfg, Silent())
    result = up(cfg, progress=Silent())
    with requests.post(f"{result.url}/v1/chat/completions", stream=True, timeout=120,
                       headers=headers(cfg.secrets["api_key"]), json={
            "model": "smoke", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}) as resp:
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith(b"data: {")]
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    assert all(len(ids) == 1 for ids in containers(sim_docker).values())
    # The smoke model built in a container, the served one's caches and home: all the owner's.
    for host in sim_docker.hosts:
        written = [p for p in (host.owner_home / ".cache").rglob("*")]
        assert written and {p.lstat().st_uid for p in written} == {OWNER_UID}, host.name
        uid = host.run(["docker", "-H", f"unix://{host.docker_sock}", "exec", "sparkops-vllm", "id", "-u"])
        assert uid.stdout.strip() == str(OWNER_UID), uid.stderr

    data = collect(cfg)
    assert data["api"]["ready"]
    assert [n["services"]["vllm"]["running"] for n in data["nodes"]] == [True, True]

    import io
    buffer = io.StringIO()
    show(cfg, node=None, lines=3, follow=False, out=buffer)
    assert {"[spark-a:vllm]", "[spark-b:vllm]"} <= {l.split("]")[0] + "]" for l in buffer.getvalue().splitlines()}

    assert down(cfg, progress=Silent()) == []
    assert containers(sim_docker) == {"spark-a": [], "spark-b": []}


def test_nodes_with_different_images_are_refused_then_build_repairs(docker_sim, sim_docker):
    cfg = docker_sim()
    build(cfg, Silent())
    worker = sim_docker.host("spark-b")
    worker.run(["docker", "-H", f"unix://{worker.docker_sock}", "tag", BASE_IMAGE, cfg.cluster["image"]],
               check=True, capture_output=True)
    with pytest.raises(SparkopsError) as err:
        up(cfg, progress=Silent())
    assert "different images" in err.value.render() and "inv build" in err.value.render()
    assert containers(sim_docker) == {"spark-a": [], "spark-b": []}
    ids = build(cfg, Silent())
    assert ids["spark-a"] == ids["spark-b"]
