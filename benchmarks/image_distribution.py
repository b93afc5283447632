"""How fast `inv build` gives every node the head's image, and how fast it skips.

    sudo python3 benchmarks/image_distribution.py [--mb 512] [--out benchmarks/results/image_distribution.json]

On the simulated cluster with a Docker engine per host: an image with a --mb MB layer of
random bytes is built on the head, then distributed to the worker (`docker save | ssh worker
docker load`, run on the head over the RoCE veth), then distributed again (skipped: same
image ID). For comparison, in the same run: the same number of bytes as a plain stream
head -> worker over the same kind of SSH hop, and `docker save` alone into `wc -c`.
Writes benchmarks/results/image_distribution.json. Every step must succeed and every byte
arrive: the build, both distributions (the worker must then hold the head's image ID), `docker
save` (bash pipefail, so a failed save is not a count of 0 bytes) and the raw stream (counted on
the worker); otherwise the run stops with exit status 1 naming the case (benchmarks/_checks.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _checks import STRICT_SH, expect, expect_ok, fail

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparkops.base.progress import Progress  # noqa: E402
from sparkops.config import load_config  # noqa: E402
from sparkops.facts.roce import copy_route  # noqa: E402
from sparkops.facts.session import cluster_session  # noqa: E402
from sparkops.plan.context import contexts  # noqa: E402
from sparkops.remote.openssh import ssh_command  # noqa: E402
from sparkops.runtimes.build import distribute, image_ids  # noqa: E402
from sparkops.sim.cluster import build  # noqa: E402
from sparkops.sim.docker import BASE_IMAGE  # noqa: E402
from sparkops.sim.tasks import write_override  # noqa: E402

IMAGE = "sparkops/bench-distribute:latest"


def timed(fn):
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "image_distribution.json")
    args = parser.parse_args()
    cluster = build(hosts=2, docker=True, wait=300)
    try:
        cluster.import_base_image()
        override = Path(tempfile.mkdtemp()) / "sparkops.local.toml"
        os.environ["SPARKOPS_LOCAL"] = str(override)
        write_override(cluster, override)
        cfg = load_config("smoke", "sim", environ={},
                          sets=['cluster.runtime="docker"', f'cluster.image="{IMAGE}"'])
        head = cluster.hosts[0]
        dockerfile = (f"FROM {BASE_IMAGE}\nRUN dd if=/dev/urandom of=/blob bs=1M count={args.mb} "
                      f"2>/dev/null\n")
        build_s, res = timed(lambda: head.run(["docker", "-H", f"unix://{head.docker_sock}", "build", "-t",
                                              IMAGE, "-"], input=dockerfile, capture_output=True, timeout=600))
        expect_ok("build_on_head", res.returncode, res.stderr)
        with cluster_session(cfg) as session:
            group = session.group
            ctxs = contexts(cfg, session.facts, all_nodes=True)
            quiet = Progress(quiet=True)
            net = cfg.cluster["network"]
            routes = {c.name: copy_route(c.facts, c.node, net, over_lan=False).address for c in ctxs[1:]}
            first_s, ids = timed(lambda: distribute(cfg, group, ctxs, IMAGE, quiet, routes))
            held = image_ids(group, ctxs, IMAGE)
            expect("distribute", "nodes holding the head's image", sorted(n for n, i in held.items()
                                                                          if i and i == ids["spark-a"]), sorted(held))
            skip_s, _ = timed(lambda: distribute(cfg, group, ctxs, IMAGE, quiet, routes))
            save_s, res = timed(lambda: group["spark-a"].run(
                ["bash", "-c", STRICT_SH + 'docker save "$1" | wc -c', "save", IMAGE], timeout=600))
            expect_ok("docker_save_to_null", res.rc, res.stderr)
            saved = raw = int(res.stdout.strip())
            if saved < args.mb * 2**20:
                fail("docker_save_to_null", f"saved {saved} bytes, less than the {args.mb} MiB layer")
            worker = ctxs[1]
            ssh = ssh_command(worker.node, cfg.cluster["ssh"])
            address = routes[worker.name]
            raw_s, res = timed(lambda: group["spark-a"].run(
                ["bash", "-c", STRICT_SH + 'n=$1; shift; head -c "$n" /dev/zero | "$@"', "raw", str(saved), *ssh,
                 address, "wc -c"], timeout=600))
            expect_ok("raw_stream", res.rc, res.stderr)
            expect("raw_stream", "bytes received by the worker", int(res.stdout.split()[-1]), saved)
            same = len(set(image_ids(group, ctxs, IMAGE).values())) == 1
            if not same:
                fail("skip", "after the second distribute the nodes hold different image IDs")
    finally:
        cluster.teardown()
    mb = saved / 1e6
    out = {"what": __doc__.strip().splitlines()[0], "command": "python3 benchmarks/image_distribution.py "
           f"--mb {args.mb}", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cpus": os.cpu_count(), "image_mb": round(mb, 1), "build_on_head_s": round(build_s, 2),
           "distribute_s": round(first_s, 2), "distribute_mb_per_s": round(mb / first_s, 1),
           "skip_s": round(skip_s, 3), "docker_save_to_null_s": round(save_s, 2),
           "raw_stream_s": round(raw_s, 2), "raw_stream_mb_per_s": round(raw / 1e6 / raw_s, 1),
           "same_image_id_everywhere": same, "image_id": ids["spark-a"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
