"""Fixtures for tests against the simulated cluster (sparkops.sim), for tests/conftest.py:

    from sim_fixtures import (monkeypatch_module, sim_cluster, sim_cluster_factory,  # noqa: F401
                              sim_docker, sim_vllm)

Mark such tests `@pytest.mark.cluster`. Without root or the tools they skip, except under
CI=true, where the cluster is part of the contract and its absence fails the run.
"""

from __future__ import annotations

import os

import pytest

from sparkops.sim.cluster import SimCluster, build, missing_requirements

# Another session may hold every slot for a while (parallel runs on one machine).
SLOT_WAIT_S = 300


def require_sim(docker: bool = False) -> None:
    """Skip (fail under CI=true) when this machine cannot build the simulated cluster."""
    missing = missing_requirements(docker)
    if not missing:
        return
    reason = "simulated cluster unavailable: " + "; ".join(missing)
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason} (CI=true: cluster tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sim_cluster():
    """Two hosts, spark-a and spark-b, for the whole session. A test that breaks a host
    (kill_sshd, set_roce_up(False), set_mtu, occupy_port) calls `sim_cluster.heal()` after."""
    require_sim()
    cluster = build(hosts=2, wait=SLOT_WAIT_S)
    try:
        yield cluster
    finally:
        cluster.teardown()


@pytest.fixture(scope="session")
def sim_docker(sim_cluster: SimCluster):
    """`sim_cluster` with a Docker engine per host and the base image
    (sparkops.sim.docker.BASE_IMAGE) on each; stopped with the cluster."""
    require_sim(docker=True)
    sim_cluster.start_docker()
    sim_cluster.import_base_image()
    return sim_cluster


@pytest.fixture(scope="module")
def monkeypatch_module():
    """A MonkeyPatch for module-scoped fixtures (e.g. SPARKOPS_LOCAL pointing at a sim override)."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def sim_vllm(sim_cluster, vllm_venv, tmp_path_factory, monkeypatch_module):
    """Configs for the two-host `sim` cluster serving with the test vLLM venv (the smoke model
    built on every host): `sim_vllm(profile="smoke", cluster="sim", sets=())`; `.sets` holds the
    --set values for an `inv` subprocess. Whatever the module left serving is stopped after."""
    import json

    from sparkops.base.progress import Silent
    from sparkops.config import load_config
    from sparkops.deploy.down import down
    from sparkops.models.smoke import build_everywhere
    from sparkops.sim.tasks import write_override

    override = tmp_path_factory.mktemp("sim") / "sparkops.local.toml"
    monkeypatch_module.setenv("SPARKOPS_LOCAL", str(override))
    write_override(sim_cluster, override)
    venv = f"cluster.venv={json.dumps(str(vllm_venv))}"

    def make(profile="smoke", cluster="sim", sets=()):
        return load_config(profile, cluster or "sim", sets=[venv, *sets], environ={})
    make.sets = [venv]
    build_everywhere(make(), Silent())
    yield make
    down(make(), progress=Silent())


@pytest.fixture
def sim_cluster_factory():
    """Build extra clusters in a test: `make(hosts=3, docker=False)`; all torn down after."""
    require_sim()
    made: list[SimCluster] = []

    def make(**kwargs) -> SimCluster:
        kwargs.setdefault("wait", SLOT_WAIT_S)
        made.append(build(**kwargs))
        return made[-1]

    yield make
    for cluster in made:
        cluster.teardown()
