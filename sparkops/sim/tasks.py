"""`inv sim-up` / `inv sim-down`: the simulated cluster by hand, wired to `--cluster sim`.

`sim-up` records the hosts it built (their addresses change with the slot) in the local
override file under [clusters.sim], so `inv up --cluster sim` reaches them."""
from __future__ import annotations

import tomlkit

from sparkops.base.errors import SparkopsError
from sparkops.base.paths import local_override_path as override_path
from sparkops.base.paths import project_root
from sparkops.config import local_override
from sparkops.config.setup import new_api_key
from sparkops.sim.cluster import build, missing_requirements


def sim_up(hosts: int, docker: bool) -> None:
    missing = missing_requirements(docker)
    if missing:
        raise SparkopsError("cannot build the simulated cluster: " + "; ".join(missing), step="sim-up",
                            fix="run as root; `bash scripts/test` installs the packages it needs")
    cluster = build(hosts=hosts, docker=docker)
    if docker:
        cluster.import_base_image()
    cluster.keep_after_exit()  # outlives this command until sim-down
    write_override(cluster)
    for h in cluster.hosts:
        print(f"  {h.name}: ssh root@{h.mgmt_ip}, RoCE {h.roce_ip}")
    print(f"simulated cluster up (slot {cluster.slot}); try `inv up --profile smoke --cluster sim`; "
          f"remove it with `inv sim-down`")


def write_override(cluster, path=None, nodes=None) -> None:
    """[clusters.sim] nodes of `cluster` (default: reached as root; SimCluster.owner_nodes() for
    its unprivileged owner), and an API key (as `inv setup` makes) if none is set."""
    path = path or override_path(project_root())
    doc = local_override.load(path)
    key = None if doc.get("secrets", {}).get("api_key") else new_api_key()
    doc = local_override.update(doc, cluster="sim", nodes=nodes or cluster.nodes(), api_key=key)
    ssh = tomlkit.table()
    ssh["known_hosts"] = str(cluster.known_hosts_path)
    doc["clusters"]["sim"]["ssh"] = ssh
    local_override.save(doc, path)


def sim_down() -> None:
    from sparkops.sim.__main__ import main
    if main(["down"]) != 0:
        raise SparkopsError("some simulated clusters are in use by a running process", step="sim-down",
                            fix="`python -m sparkops.sim down --force` removes them anyway")
