"""`inv install-vllm --wheels` on the simulated pair: both nodes over SSH, each with its own home
and /tmp, so the folder (in the controller's /tmp) reaches them only by sparkops' own copy."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from fake_wheels import folder, system_python

from sparkops.base.progress import Silent
from sparkops.config import load_config
from sparkops.runtimes.install import install_vllm_wheels
from sparkops.sim.tasks import write_override

pytestmark = [pytest.mark.cluster]

VENV = "/root/vllm-from-wheels"
STAGING = "/root/.local/share/sparkops/wheels-incoming"


def test_install_copies_the_folder_to_each_node_and_reuses_its_torch(sim_cluster, tmp_path, monkeypatch):
    override = tmp_path / "sparkops.local.toml"
    monkeypatch.setenv("SPARKOPS_LOCAL", str(override))
    write_override(sim_cluster, override)
    # The nodes' own Python must be one every host sees: /var/tmp is shared, /tmp is not.
    shared = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="sparkops-test-python-"))
    try:
        python = system_python(shared / "python", "2.11.0+cu130")
        wheels = folder(tmp_path / "wheels")
        hosts = sim_cluster.hosts
        assert all(h.run(["test", "-d", str(wheels)]).returncode == 1 for h in hosts)  # not there but by copy

        def install() -> dict[str, str]:
            cfg = load_config("smoke", "sim", sets=['cluster.venv="~/vllm-from-wheels"'], environ={})
            return install_vllm_wheels(cfg, wheels, Silent(), python=str(python))

        assert install() == {h.name: f"vllm 0.26.0 with torch 2.11.0+cu130 (reused from this node's Python) "
                                     f"installed in {VENV}" for h in hosts}
        for host in hosts:
            ran = host.run([f"{VENV}/bin/vllm"])
            assert ran.returncode == 0, ran.stderr
            seen = json.loads(ran.stdout)
            assert seen["vllm"] == "0.26.0" and seen["torch_file"].startswith(str(shared))
            assert host.run(["test", "-e", STAGING]).returncode == 1  # the copy was removed
        assert set(install().values()) == {f"vllm 0.26.0 (torch 2.11.0+cu130 reused): already installed in {VENV}"}
    finally:
        for host in sim_cluster.hosts:
            host.run(["rm", "-rf", VENV, STAGING])
        shutil.rmtree(shared, ignore_errors=True)
