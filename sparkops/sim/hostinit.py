"""PID 1 of a simulated host: make the host's view of the machine, then become its sshd.

Run by `unshare` inside fresh UTS, PID, IPC and mount namespaces (and the host's network
namespace), with one argument: a JSON file written by sparkops.sim.sshd. Standard library only,
run with `python -I -S`, because it is on the critical path of every host start.
"""

import json
import os
import socket
import subprocess
import sys


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def bind_into(src: str, under: str, root: str) -> None:
    """Make `src` (a path below `under`) reappear below `root`, which will replace `under`."""
    target = os.path.join(root, os.path.relpath(src, under))
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount("--rbind", src, target)


def main(config_path: str) -> None:
    with open(config_path) as f:
        cfg = json.load(f)
    socket.sethostname(cfg["hostname"])

    # /sys must be remounted to show this network namespace's interfaces (as `ip netns exec`
    # does), but that hides the cgroup mounts dockerd needs: carry them over the remount.
    cgroup_tmp = cfg["cgroup_tmp"]
    os.makedirs(cgroup_tmp, exist_ok=True)
    mount("--rbind", "/sys/fs/cgroup", cgroup_tmp)
    mount("-t", "sysfs", "sysfs", "/sys")
    mount("--move", cgroup_tmp, "/sys/fs/cgroup")

    # Copies of other hosts' /run/netns entries would keep their namespaces alive after delete.
    subprocess.run(["umount", "--lazy", "/run/netns"], stderr=subprocess.DEVNULL, check=False)

    mount("-t", "tmpfs", "-o", "mode=1777", "tmpfs", "/dev/shm")

    # Per-host home and /tmp, with the software the controller uses (Python installs,
    # virtualenvs, the stand-ins) bound back in at its usual path.
    for target, src in cfg["private_dirs"].items():
        for path in cfg["keep"]:
            if path.startswith(target + "/") and os.path.exists(path):
                bind_into(path, target, src)
        mount("--rbind", src, target)
    for target, src in cfg.get("files", {}).items():
        mount("--bind", src, target)

    os.chdir("/")
    os.execv(cfg["sshd"][0], cfg["sshd"])


if __name__ == "__main__":
    main(sys.argv[1])
