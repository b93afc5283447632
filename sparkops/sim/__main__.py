"""Build, inspect and remove simulated clusters by hand.

    python -m sparkops.sim up [--hosts 2] [--docker] [--slot N]
    python -m sparkops.sim status
    python -m sparkops.sim down [--slot N] [--force]
"""

from __future__ import annotations

import argparse
import os
import sys

from sparkops.sim import cleanup
from sparkops.sim import docker as engine
from sparkops.sim import layout as L
from sparkops.sim.cluster import SimCluster, build


def up(args: argparse.Namespace) -> int:
    cluster = build(hosts=args.hosts, docker=args.docker, slot=args.slot)
    if args.docker:
        cluster.import_base_image()
    cluster.keep_after_exit()  # the cluster outlives this command, until `down`
    describe(cluster)
    first = cluster.hosts[0].name
    print(f"\n  ssh -F {cluster.ssh_config_path} {first} hostname")
    if args.docker:
        print(f"  ssh -F {cluster.ssh_config_path} {first} "
              f"docker run --rm {engine.BASE_IMAGE} echo hi")
    print(f"  python -m sparkops.sim down --slot {cluster.slot}")
    return 0


def describe(cluster: SimCluster) -> None:
    print(f"slot {cluster.slot}: {len(cluster.hosts)} hosts, state in {cluster.state_dir}")
    print(f"  key {cluster.key_path}  known_hosts {cluster.known_hosts_path}")
    for h in cluster.hosts:
        state = "up" if h.is_up() else "DOWN"
        dockerd = ""
        if h.docker:
            dockerd = f", docker {'up' if engine.is_ready(h.docker_sock) else 'DOWN'}"
        print(f"  {h.name}  ssh root@{h.mgmt_ip}  roce {h.roce_ip}  netns {h.netns}  "
              f"[{state}{dockerd}, {len(h.pids())} processes]")


def status(args: argparse.Namespace) -> int:
    found = False
    for slot in range(L.MAX_SLOTS):
        fd = cleanup.try_lock(slot)
        if fd is not None:
            os.close(fd)
        if (L.slot_dir(slot) / "cluster.json").exists():
            found = True
            describe(SimCluster.load(slot))
            if fd is not None:
                print("  (not owned by any process: leftovers, remove with `down`)")
        elif any(cleanup.leftovers(slot).values()):
            found = True
            print(f"slot {slot}: leftovers {cleanup.leftovers(slot)}")
    if not found:
        print("no simulated cluster")
    return 0


def down(args: argparse.Namespace) -> int:
    failed = 0
    for slot in range(L.MAX_SLOTS) if args.slot is None else [args.slot]:
        cleanup.stop_holder(slot)
        fd = cleanup.try_lock(slot)
        if fd is None and not args.force:
            print(f"slot {slot}: in use by a running process (a test session?); "
                  "skipped, --force removes it anyway")
            failed = 1
            continue
        try:
            if any(cleanup.leftovers(slot).values()) or L.slot_dir(slot).exists():
                cleanup.remove(slot)
                print(f"slot {slot}: removed")
        finally:
            if fd is not None:
                os.close(fd)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparkops.sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="build a cluster and leave it running")
    p.add_argument("--hosts", type=int, default=2, help="number of hosts (default 2)")
    p.add_argument("--docker", action="store_true", help="a Docker engine and base image per host")
    p.add_argument("--slot", type=int, help="slot to use (default: the first free one)")
    p.set_defaults(func=up)
    p = sub.add_parser("down", help="remove clusters made by `up` and leftovers of crashed runs")
    p.add_argument("--slot", type=int, help="only this slot (default: all)")
    p.add_argument("--force", action="store_true", help="also remove clusters in use")
    p.set_defaults(func=down)
    p = sub.add_parser("status", help="show the clusters and leftovers that exist")
    p.set_defaults(func=status)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
