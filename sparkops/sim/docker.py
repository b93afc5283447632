"""One Docker engine per simulated host, and a base image made without any registry."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path

from sparkops.sim import procs

BUSYBOX = "/bin/busybox"
BASE_IMAGE = "sparkops-sim/busybox:latest"


def sock_path(host_dir: Path) -> Path:
    return host_dir / "docker.sock"


def start(host_dir: Path, init_pid: int) -> subprocess.Popen:
    """Start dockerd inside the host (its network, mount, PID, IPC and UTS namespaces), so it
    sees the host's home and /tmp, and dies with the host like every other process of it."""
    root = host_dir / "docker"
    # Runtime state of a killed host (pid files of dockerd and containerd) names pids that may
    # be reused in the new PID namespace: clear it, as a reboot clears /run.
    shutil.rmtree(root / "exec", ignore_errors=True)
    (host_dir / "docker.pid").unlink(missing_ok=True)
    root.mkdir(exist_ok=True)
    with open(host_dir / "dockerd.log", "ab") as log:
        return subprocess.Popen(
            [
                "nsenter", "-t", str(init_pid), "--net", "--mount", "--pid", "--ipc", "--uts",
                "dockerd",
                "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                "-H", f"unix://{sock_path(host_dir)}", "--pidfile", str(host_dir / "docker.pid"),
                # Default options rewrite the root namespace's iptables (FORWARD DROP) and
                # break the bridges; containers use --network host anyway.
                "--iptables=false", "--ip6tables=false", "--bridge=none",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )


def is_ready(sock: Path) -> bool:
    """Whether the engine answers its /_ping endpoint."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in s.recv(64).split(b"\r\n")[0]
    except OSError:
        return False


def wait_ready(host_dir: Path, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not is_ready(sock_path(host_dir)):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (host_dir / "dockerd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dockerd of {host_dir.name} did not come up:\n{tail}")
        time.sleep(0.05)


def daemon_pid(host_dir: Path, pidns_inode: int) -> int | None:
    """Root-namespace pid of the host's dockerd, from its pid file (which holds the pid as
    seen inside the host)."""
    try:
        nspid = int((host_dir / "docker.pid").read_text())
    except (OSError, ValueError):
        return None
    return procs.root_pid(nspid, pidns_inode)


def stop(pids: list[int], timeout: float = 20.0) -> None:
    """Stop engines, all at once: SIGTERM lets them stop containers and unmount layers."""
    left = procs.kill_all(pids, signal.SIGTERM, timeout)
    procs.kill_all(left, signal.SIGKILL)


def busybox_rootfs_tar() -> bytes:
    """A tiny root filesystem: the static busybox from Debian's busybox-static, applets linked."""
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "root", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(os.path.realpath(BUSYBOX), arcname="bin/busybox")
        for name in applets.stdout.split():
            if name != "busybox":
                link = tarfile.TarInfo(f"bin/{name}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
    return buf.getvalue()


def import_image(sock: Path, tarball: bytes, tag: str = BASE_IMAGE) -> str:
    """`docker import` the tarball into one host's engine; returns the tag."""
    subprocess.run(
        ["docker", "-H", f"unix://{sock}", "import", "-", tag],
        input=tarball, capture_output=True, check=True, timeout=60,
    )
    return tag
