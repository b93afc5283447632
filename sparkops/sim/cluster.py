"""A real multi-host cluster on one machine, built from network namespaces.

    cluster = build(hosts=2)            # spark-a, spark-b; a few tenths of a second
    cluster.connection(cluster.hosts[0]).run("hostname")
    cluster.teardown()

Each host is a network namespace with the Spark's interface names, its own sshd as PID 1 of
its own PID namespace, its own hostname, home (/root), /tmp and /dev/shm. The controller (this
process, in the root namespace) reaches the hosts over SSH on a "LAN" bridge; the hosts reach
each other over a "QSFP cable" with 169.254.x.y addresses at MTU 9000.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sparkops.sim import cleanup, network, sshd
from sparkops.sim import docker as engine
from sparkops.sim import layout as L
from sparkops.sim.host import PortHog, SimHost, enter

__all__ = ["STANDINS_DIR", "PortHog", "SimCluster", "SimHost", "build", "missing_requirements"]

STANDINS_DIR = Path(__file__).with_name("standins")
KEEP_ENV = "SPARKOPS_SIM_KEEP"  # extra paths (os.pathsep-separated) to keep visible in hosts

_TOOLS = ["ip", "nsenter", "unshare", "mount", "umount", "ssh", "ssh-keygen", "ping"]
_DOCKER_TOOLS = ["dockerd", "docker", "busybox"]


def missing_requirements(docker: bool = False) -> list[str]:
    """Why a cluster cannot be built here; empty when it can."""
    missing = [] if os.geteuid() == 0 else ["needs root (network namespaces, mounts)"]
    tools = _TOOLS + (_DOCKER_TOOLS if docker else [])
    missing += [f"`{t}` not found" for t in tools if shutil.which(t) is None]
    if not Path(sshd.SSHD).exists():
        missing.append(f"{sshd.SSHD} not found (package openssh-server)")
    return missing


@dataclass
class SimCluster:
    slot: int
    hosts: list[SimHost]
    state_dir: Path
    key_path: Path  # the controller's private key, accepted by every host
    known_hosts_path: Path  # the hosts' real host keys
    ssh_config_path: Path  # `ssh -F <it> spark-a`
    standins_dir: Path
    _lock_fd: int | None = field(default=None, repr=False, compare=False)

    def host(self, name: str) -> SimHost:
        """A host by name (spark-a), letter (a) or management address."""
        for h in self.hosts:
            if name in (h.name, h.name.removeprefix("spark-"), h.mgmt_ip):
                return h
        raise KeyError(name)

    def connection(self, host: SimHost | str, **kwargs):
        """A fabric Connection that checks host keys strictly against known_hosts."""
        from fabric import Connection
        from paramiko import RejectPolicy

        host = self.host(host) if isinstance(host, str) else host
        kwargs.setdefault("connect_timeout", 10)
        conn = Connection(
            host.mgmt_ip, user="root", port=host.ssh_port,
            connect_kwargs={"key_filename": [str(self.key_path)], "look_for_keys": False,
                            "allow_agent": False},
            **kwargs,
        )
        conn.client.load_host_keys(str(self.known_hosts_path))
        conn.client.set_missing_host_key_policy(RejectPolicy())
        return conn

    def nodes(self) -> list[dict]:
        """The hosts as cluster-profile node entries (name, host, port, user, key, env).

        Every host's vLLM rank gets a CPU of its own, as each Spark has its own: left to
        vLLM's automatic binding, each host pins its rank to the same CPU (each sees the whole
        machine), and the two ranks of one model take turns on it (smoke model, TP=2 on 2
        CPUs: TPOT ~25 ms that way, ~20 ms with a CPU each)."""
        cpus = sorted(os.sched_getaffinity(0))
        return [{"name": h.name, "host": h.mgmt_ip, "port": h.ssh_port, "user": "root",
                 "key": str(self.key_path), "env": {"VLLM_CPU_OMP_THREADS_BIND": str(cpus[i % len(cpus)])}}
                for i, h in enumerate(self.hosts)]

    @property
    def owner_key_path(self) -> Path:
        """The owner's private key (readable by the owner only), accepted by the owner on every
        host: what an owner's head uses to reach the workers."""
        return self.state_dir / "owner_id_ed25519"

    def owner_nodes(self, head_local: bool = True) -> list[dict]:
        """The hosts as a real pair is configured by its owner: the head is the machine sparkops
        runs on (`host = "local"`, when the controller runs inside the first host as the owner:
        SimHost.owner_argv), every other node reached over SSH as the unprivileged owner."""
        nodes = self.nodes()
        for node in nodes:
            node.update(user=L.OWNER, key=str(self.owner_key_path))
        if head_local:
            nodes[0] = {"name": nodes[0]["name"], "host": "local", "env": nodes[0]["env"]}
        return nodes

    def owner_argv(self, host: SimHost | str, argv: list[str], *, cwd: str = "/",
                   env: dict[str, str] | None = None) -> list[str]:
        """argv that runs `argv` inside `host` as its owner, as if the owner had logged in there:
        the owner's uid, groups, home and a login's environment (the host's PATH with the
        stand-ins, its Docker engine), plus `env`. Nothing of the caller's environment leaks in."""
        host = self.host(host) if isinstance(host, str) else host
        pid = host.init_pid()
        if pid is None:
            raise RuntimeError(f"{host.name} is down")
        login = {"HOME": L.OWNER_HOME, "USER": L.OWNER, "LOGNAME": L.OWNER, "PATH": _host_path(),
                 "DOCKER_HOST": f"unix://{engine.sock_path(host.dir)}", "SPARKOPS_SIM_HOST": host.name,
                 "LANG": "C.UTF-8", **(env or {})}
        # The cd happens inside the host: nsenter's own --wd opens the folder before it enters.
        return [*enter(pid), "setpriv", f"--reuid={L.OWNER_UID}", f"--regid={L.OWNER_UID}", "--init-groups",
                "env", "-i", *(f"{k}={v}" for k, v in login.items()),
                "sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv]

    def ssh_argv(self, host: SimHost | str, *command: str) -> list[str]:
        """argv of the OpenSSH client running `command` on `host`."""
        name = host if isinstance(host, str) else host.name
        return ["ssh", "-F", str(self.ssh_config_path), name, *command]

    def start_docker(self, timeout: float = 60.0) -> None:
        """Start every host's Docker engine, concurrently."""
        started = [(h, h.start_docker()) for h in self.hosts if not engine.is_ready(h.docker_sock)]
        for h, proc in started:
            engine.wait_ready(h.dir, proc, timeout)
        self.save()

    def stop_docker(self) -> None:
        engine.stop([p for p in (h.docker_pid() for h in self.hosts) if p])
        for h in self.hosts:
            h.docker = False
        self.save()

    def import_base_image(self, tag: str = engine.BASE_IMAGE) -> str:
        """Make a busybox base image on every host (no registry needed); returns its tag."""
        tarball = engine.busybox_rootfs_tar()
        for h in self.hosts:
            engine.import_image(h.docker_sock, tarball, tag)
        return tag

    def heal(self) -> None:
        """Undo every simulated failure on every host."""
        for h in self.hosts:
            h.heal()
        network.wait_carrier(self.slot, len(self.hosts))

    def keep_after_exit(self) -> None:
        """Leave the cluster running after this process exits (`sim-up`): a detached process
        takes over the slot's lock until `python -m sparkops.sim down`."""
        if self._lock_fd is None:
            return
        cleanup.keep_locked(self.slot, self._lock_fd)
        os.close(self._lock_fd)
        self._lock_fd = None

    def teardown(self) -> None:
        """Remove everything of the cluster, whatever state it is in, and free its slot.
        Only its owner (the caller of build()) can, once: after that the slot may be another's.
        A cluster made by `python -m sparkops.sim up` goes with `python -m sparkops.sim down`."""
        if self._lock_fd is None:
            return
        try:
            # Best effort: what follows removes everything anyway.
            with contextlib.suppress(Exception):
                for h in self.hosts:
                    h.release_ports()
                self.stop_docker()  # gracefully, before the hosts are killed
            cleanup.remove(self.slot, reap=[p for h in self.hosts for p in h.children()])
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def save(self) -> None:
        data = {
            "slot": self.slot, "state_dir": str(self.state_dir), "key_path": str(self.key_path),
            "known_hosts_path": str(self.known_hosts_path),
            "ssh_config_path": str(self.ssh_config_path), "standins_dir": str(self.standins_dir),
            "hosts": [h.to_json() for h in self.hosts],
        }
        (self.state_dir / "cluster.json").write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, slot: int) -> SimCluster:
        """The cluster living in `slot`, e.g. one made by `python -m sparkops.sim up`.
        It is not owned by the caller: teardown() is `python -m sparkops.sim down`'s job."""
        data = json.loads((L.slot_dir(slot) / "cluster.json").read_text())
        hosts = [SimHost.from_json(h) for h in data.pop("hosts")]
        return cls(slot=int(data["slot"]), hosts=hosts, state_dir=Path(data["state_dir"]),
                   key_path=Path(data["key_path"]), known_hosts_path=Path(data["known_hosts_path"]),
                   ssh_config_path=Path(data["ssh_config_path"]), standins_dir=Path(data["standins_dir"]))


def build(
    hosts: int = 2,
    docker: bool = False,
    slot: int | None = None,
    wait: float = 0.0,
    keep: list[str] | tuple[str, ...] = (),
) -> SimCluster:
    """Build a cluster of `hosts` hosts in `slot` (default: the first free one, waiting up to
    `wait` seconds for one), after removing any leftovers of a crashed run there.
    `keep`: paths under /root or /tmp that hosts must see as the controller does."""
    if not 1 <= hosts <= L.MAX_HOSTS:
        raise ValueError(f"hosts must be 1..{L.MAX_HOSTS}")
    missing = missing_requirements(docker)
    if missing:
        raise RuntimeError("cannot build the simulated cluster: " + "; ".join(missing))
    slot, fd = cleanup.lock(slot, wait)
    try:
        cleanup.remove(slot)
        cluster = _build(slot, hosts, keep)
        cluster._lock_fd = fd
        if docker:
            cluster.start_docker()
        return cluster
    except BaseException:
        try:
            cleanup.remove(slot)
        finally:
            os.close(fd)
        raise


def _build(slot: int, count: int, keep: list[str] | tuple[str, ...]) -> SimCluster:
    state = L.slot_dir(slot)
    state.mkdir(parents=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    network.build(slot, count)
    key = state / "id_ed25519"
    client_pub = sshd.keygen(key, "sparkops-sim-controller")
    owner_key = state / "owner_id_ed25519"
    owner_pub = sshd.keygen(owner_key, f"{L.OWNER}@sparkops-sim")
    for path in (owner_key, owner_key.with_suffix(".pub")):
        os.chown(path, L.OWNER_UID, L.OWNER_UID)
    search_path = _host_path()
    keep_paths = _keep_paths([*keep, *search_path.split(":")])
    hosts = []
    for i in range(count):
        name, host_dir = L.host_name(i), state / L.letter(i)
        host_dir.mkdir()
        env = {"PATH": search_path, "DOCKER_HOST": f"unix://{engine.sock_path(host_dir)}",
               "SPARKOPS_SIM_HOST": name}
        host_key = sshd.write_host_files(
            host_dir, name, f"{L.mgmt_ip(slot, i)}:22", client_pub, env, keep_paths,
            also_listen=(f"{L.roce_ip(i)}:22",),  # `inv sync` copies over the "cable"
            owner_keys=(owner_pub, client_pub), owner_key=owner_key,
        )
        hosts.append(SimHost(name, i, L.netns_name(slot, i), L.mgmt_ip(slot, i), L.roce_ip(i),
                             22, host_dir, host_key))
    for h in hosts:  # all at once: each start-up is mostly waiting
        h.launch()
    network.wait_carrier(slot, count)
    for h in hosts:
        h.wait_ssh()
    sshd.write_client_files(
        state, [(h.name, h.mgmt_ip, h.ssh_port, h.host_key) for h in hosts], key
    )
    cluster = SimCluster(slot, hosts, state, key, state / "known_hosts", state / "ssh_config",
                         STANDINS_DIR)
    cluster.save()
    return cluster


def _host_path() -> str:
    """The hosts' PATH: the stand-ins first, then the controller's own PATH (same software)."""
    entries = [str(STANDINS_DIR), *os.environ.get("PATH", "/usr/bin:/bin").split(":")]
    return ":".join(dict.fromkeys(e for e in entries if e))


def _keep_paths(extra: list[str]) -> list[str]:
    """Top-level entries of /root, /tmp and /home that hosts must keep seeing: where this Python, its
    virtualenv, the stand-ins and the PATH live (a virtualenv's interpreter is a link into the
    base install), plus `extra` and $SPARKOPS_SIM_KEEP."""
    home = str(Path("~root").expanduser())
    wanted = [sys.base_prefix, sys.prefix, str(STANDINS_DIR), *extra,
              *os.environ.get(KEEP_ENV, "").split(os.pathsep)]
    keep = set()
    for path in filter(os.path.isabs, wanted):
        path = os.path.normpath(path)
        for private in (home, "/tmp", "/home"):
            if path.startswith(private + "/"):
                keep.add(os.path.join(private, os.path.relpath(path, private).split("/")[0]))
    return sorted(keep)
