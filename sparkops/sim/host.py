"""One simulated DGX Spark: its addresses, its processes, and the failures tests inflict on it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sparkops.sim import docker, network, procs, sshd
from sparkops.sim import layout as L

# Binds a TCP port and holds it until killed (the argument is the port).
_HOG = (
    "import socket,sys,signal\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen()\n"
    "print('ready', flush=True); signal.pause()\n"
)


def enter(init_pid: int) -> list[str]:
    """argv prefix that runs a command inside a host (all its namespaces; the child is forked
    into its PID namespace, so it dies with the host)."""
    return ["nsenter", "-t", str(init_pid), "--net", "--mount", "--pid", "--uts", "--ipc",
            "--wd=/", "--"]


@dataclass
class SimHost:
    name: str  # hostname, e.g. spark-a
    index: int
    netns: str  # network namespace, e.g. sparkops-sim0-a
    mgmt_ip: str  # on enP7s7, reachable from the controller
    roce_ip: str  # on enp1s0f1np1, reachable only from the other hosts
    ssh_port: int
    dir: Path  # this host's state directory
    host_key: str  # public host key, "ssh-ed25519 AAAA..."
    docker: bool = False  # whether its Docker engine is meant to run
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)  # unshare
    _children: list = field(default_factory=list, repr=False, compare=False)  # to reap
    _hogs: list = field(default_factory=list, repr=False, compare=False)

    @property
    def home(self) -> Path:
        """The directory that is /root inside the host."""
        return self.dir / "home"

    @property
    def owner_home(self) -> Path:
        """The directory that is the owner's home (layout.OWNER_HOME) inside the host."""
        return self.dir / "homes" / L.OWNER

    @property
    def tmp(self) -> Path:
        """The directory that is /tmp inside the host."""
        return self.dir / "tmp"

    @property
    def docker_sock(self) -> Path:
        return docker.sock_path(self.dir)

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    # -- state -------------------------------------------------------------------------------

    def init_pid(self) -> int | None:
        """Root-namespace pid of the host's PID 1 (its sshd), None when the host is down."""
        try:
            pid = int((self.dir / "init.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if procs.is_alive(pid) else None

    def is_up(self) -> bool:
        return self.init_pid() is not None

    def pids(self) -> list[int]:
        """Root-namespace pids of every process of the host."""
        pid = self.init_pid()
        inode = pid and procs.ns_inode(f"/proc/{pid}/ns/pid")
        return procs.pids_in_ns("pid", inode) if inode else []

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a probe inside the host without SSH (controller's environment, not sshd's)."""
        pid = self.init_pid()
        if pid is None:
            raise RuntimeError(f"{self.name} is down")
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("check", False)
        return subprocess.run([*enter(pid), *argv], **kwargs)

    # -- life cycle --------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """(Re)start whatever of the host is down: sshd, then its Docker engine if it has one."""
        if not self.is_up():
            self.launch()
            self.wait_ssh(timeout)
        if self.docker and not docker.is_ready(self.docker_sock):
            docker.wait_ready(self.dir, self.start_docker())

    def launch(self) -> None:
        """Start the host's PID 1 (its sshd) without waiting for it to answer."""
        self._proc = sshd.start(self.dir, self.netns)
        self._children.append(self._proc)

    def wait_ssh(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.mgmt_ip, self.ssh_port), timeout=0.5):
                    return
            except OSError:
                pass
            if (self._proc and self._proc.poll() is not None) or time.monotonic() > deadline:
                tail = self.sshd_log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"sshd of {self.name} did not come up:\n{tail}")
            time.sleep(0.01)

    def start_docker(self) -> subprocess.Popen:
        """Start the engine without waiting for it (see docker.wait_ready)."""
        pid = self.init_pid()
        if pid is None:
            raise RuntimeError(f"{self.name} is down")
        self.docker = True
        proc = docker.start(self.dir, pid)
        self._children.append(proc)
        return proc

    def docker_pid(self) -> int | None:
        """Root-namespace pid of the host's dockerd, None if it has none running."""
        pid = self.init_pid()
        inode = pid and procs.ns_inode(f"/proc/{pid}/ns/pid")
        return docker.daemon_pid(self.dir, inode) if inode else None

    def stop_docker(self) -> None:
        docker.stop([p for p in [self.docker_pid()] if p])
        self.docker = False

    def kill_sshd(self) -> None:
        """Kill the host's sshd, its PID 1: the kernel then ends every process of the host,
        Docker engine and containers included, like a power cut. `start()` brings it back."""
        pid, pids = self.init_pid(), self.pids()
        if pid is None:
            return
        left = procs.kill_all([pid, *pids], signal.SIGKILL, timeout=10, reap=self.children())
        if left:
            raise RuntimeError(f"{self.name}: processes {left} survive their host")

    # -- failures ----------------------------------------------------------------------------

    def set_roce_up(self, up: bool) -> None:
        """Bring both RoCE ports (the port and its twin) up or down."""
        for ifname in (L.ROCE_IF, L.ROCE_TWIN_IF):
            network.ip("link", "set", ifname, "up" if up else "down", netns=self.netns)

    def set_mtu(self, mtu: int, ifname: str = L.ROCE_IF) -> None:
        network.ip("link", "set", ifname, "mtu", str(mtu), netns=self.netns)

    def occupy_port(self, port: int) -> PortHog:
        """Hold TCP `port` on all the host's addresses until released (or the host dies)."""
        pid = self.init_pid()
        if pid is None:
            raise RuntimeError(f"{self.name} is down")
        proc = subprocess.Popen(
            [*enter(pid), sys.executable, "-I", "-S", "-c", _HOG, str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        assert proc.stdout is not None  # stdout=PIPE
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            why = line + proc.stdout.read()
            raise RuntimeError(f"{self.name}: cannot occupy port {port}: {why}")
        hog = PortHog(self.name, port, proc)
        self._hogs.append(hog)
        return hog

    def children(self) -> list[subprocess.Popen]:
        """Processes of the host this process started (and must reap); forgets finished ones."""
        self._children[:] = [p for p in self._children if p.poll() is None]
        return self._children + [hog.proc for hog in self._hogs]

    def release_ports(self) -> None:
        while self._hogs:
            self._hogs.pop().release()

    def heal(self) -> None:
        """Undo every failure above: restart if down, RoCE up at MTU 9000, ports free."""
        self.release_ports()
        self.start()
        self.set_roce_up(True)
        for ifname in (L.ROCE_IF, L.ROCE_TWIN_IF):
            self.set_mtu(L.ROCE_MTU, ifname)

    def to_json(self) -> dict:
        return {
            "name": self.name, "index": self.index, "netns": self.netns, "mgmt_ip": self.mgmt_ip,
            "roce_ip": self.roce_ip, "ssh_port": self.ssh_port, "dir": str(self.dir),
            "host_key": self.host_key, "docker": self.docker,
        }

    @classmethod
    def from_json(cls, data: dict) -> SimHost:
        return cls(**{**data, "dir": Path(data["dir"])})


@dataclass
class PortHog:
    host: str
    port: int
    proc: subprocess.Popen = field(repr=False)

    def release(self) -> None:
        # nsenter forked the holder into the host's PID namespace: end the child and let nsenter
        # reap it. Killing nsenter too would orphan a zombie in the host, which its sshd never
        # reaps, and which would then hold up the host's death (kill_sshd) by a second or so.
        children = procs.with_descendants([self.proc.pid]) - {self.proc.pid}
        procs.kill_all(children, signal.SIGKILL, reap=[self.proc])
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> PortHog:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
