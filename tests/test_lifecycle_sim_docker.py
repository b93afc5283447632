"""The docker runtime on the simulated cluster: real Docker engines per host, an image built
on the head and copied to the worker (`inv build`), vLLM in containers with TP=2 across hosts.
Both hosts are reached as their unprivileged owner (in its `docker` group), as on a real pair.
vLLM serving in containers across both hosts, as the owner, is test_readme_sequence_sim.py's."""
from __future__ import annotations

import io
import subprocess

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress, Silent
from sparkops.config import load_config
from sparkops.config.image import local_name
from sparkops.deploy.down import down
from sparkops.deploy.up import up
from sparkops.facts.roce import copy_route
from sparkops.facts.session import cluster_session
from sparkops.plan.context import contexts
from sparkops.remote.openssh import ssh_command
from sparkops.runtimes.build import build, copy_all, copy_argv, distribute
from sparkops.sim.docker import BASE_IMAGE
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


def docker(host, *args: str) -> subprocess.CompletedProcess:
    return host.run(["docker", "-H", f"unix://{host.docker_sock}", *args], capture_output=True, text=True)


def test_build_gives_every_node_the_same_image_and_skips_when_it_has_it(docker_sim, sim_docker):
    cfg = docker_sim()
    docker(sim_docker.host("spark-b"), "rmi", "-f", cfg.cluster["image"])  # a copy to make
    shown = io.StringIO()
    ids = build(cfg, Progress(stream=shown))
    assert ids["spark-a"] == ids["spark-b"] and ids["spark-a"].startswith("sha256:")
    lines = shown.getvalue().splitlines()
    # Docker's own build output, as it came, then the copy: counted bytes, checked both ends.
    assert any(line.startswith("      [spark-a] ") and "RUN ln -s usr/lib" in line for line in lines), lines
    loaded = [line for line in lines if line.split()[:2] == ["spark-b", "ok"]]
    assert len(loaded) == 1 and "MB loaded from the head" in loaded[0], lines
    again = io.StringIO()
    assert build(cfg, Progress(stream=again)) == ids
    assert "skipped: already holds" in again.getvalue()


def test_a_prebuilt_image_by_digest_goes_to_the_workers_by_its_id(docker_sim, sim_docker):
    """No registry here, so no pull: the head holds the image under the digest's local name
    (what `inv build` tags after its pull), the worker has never seen it; distribute gives the
    worker that very image ID under that name, which is what up runs."""
    cfg = docker_sim([f'cluster.image="sparkops-sim/prebuilt@sha256:{"ab" * 32}"'])
    local = local_name(cfg.cluster["image"])
    head, worker = sim_docker.host("spark-a"), sim_docker.host("spark-b")
    docker(head, "tag", BASE_IMAGE, local)
    docker(worker, "rmi", "-f", local)
    known = docker(head, "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()
    try:
        with cluster_session(cfg) as session:
            session.require()
            ctxs = contexts(cfg, session.facts, all_nodes=True)
            routes = {"spark-b": sim_docker.host("spark-b").roce_ip}
            assert distribute(cfg, session.group, ctxs, local, Silent(), routes) == {"spark-a": known,
                                                                                    "spark-b": known}
        assert docker(worker, "image", "inspect", "--format", "{{.Id}}", local).stdout.strip() == known
    finally:
        for host in (head, worker):
            docker(host, "rmi", local)


def test_a_failed_docker_save_is_not_taken_for_a_copy(docker_sim, sim_docker):
    """`docker save` of an image the head lacks, piped into the worker's `docker load`: with a
    plain `sh` pipe only the load's status counted; here the save's own failure is the error."""
    cfg = docker_sim()
    with cluster_session(cfg) as session:
        session.require()
        ctxs = contexts(cfg, session.facts, all_nodes=True)
        worker = ctxs[1]
        argv = copy_argv("sparkops-sim/absent:1", ssh_command(worker.node, cfg.cluster["ssh"]),
                         copy_route(worker.facts, worker.node, cfg.cluster["network"], over_lan=False).address)
        out = copy_all(session.group["spark-a"], {"spark-b": argv}, 0, Silent())
    message = out.failed["spark-b"].message
    assert "`docker save sparkops-sim/absent:1` exited 1" in message and "absent" in message


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
