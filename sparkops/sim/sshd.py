"""Keys, configuration and start-up of each simulated host's OpenSSH server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sparkops.sim import layout as L

SSHD = "/usr/sbin/sshd"
HOSTINIT = Path(__file__).with_name("hostinit.py")


def keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair at `path` and return the public key ("ssh-ed25519 AAAA...")."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    kind, blob = path.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def write_host_files(
    host_dir: Path,
    hostname: str,
    listen: str,
    client_pub: str,
    env: dict[str, str],
    keep: list[str],
    also_listen: tuple[str, ...] = (),
    owner_keys: tuple[str, ...] = (),
    owner_key: Path | None = None,
) -> str:
    """Prepare a host's homes, /tmp, users, host key and sshd_config; return its public host key.
    `also_listen`: more addresses (the RoCE one), as on a Spark whose sshd listens on all.
    `owner_keys`: public keys the unprivileged owner (layout.OWNER) accepts; `owner_key`: its
    own private key, which it finds at ~/.ssh/id_ed25519 like any user's default key."""
    home = host_dir / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    # sshd's StrictModes refuses keys in a group- or world-writable home; others may pass
    # through it (x), as the owner must to reach the Python installs bound back in below /root.
    home.chmod(0o711)
    (home / ".ssh" / "authorized_keys").write_text(client_pub + "\n")
    (host_dir / "tmp").mkdir(mode=0o1777)
    (host_dir / "tmp").chmod(0o1777)  # mkdir's mode is filtered by the umask
    _write_owner(host_dir, owner_keys or (client_pub,), owner_key)
    host_pub = keygen(host_dir / "ssh_host_ed25519_key", hostname)
    setenv = " ".join(f'"{k}={v}"' for k, v in env.items())
    listens = "".join(f"ListenAddress {a}\n" for a in (listen, *also_listen))
    (host_dir / "sshd_config").write_text(
        f"""\
{listens}HostKey {host_dir / 'ssh_host_ed25519_key'}
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
# Reaches non-interactive `ssh host cmd` too, unlike a shell profile.
SetEnv {setenv}
"""
    )
    init = {
        "hostname": hostname,
        "cgroup_tmp": str(host_dir / ".cgroup"),
        "private_dirs": {str(Path("~root").expanduser()): str(home), "/tmp": str(host_dir / "tmp"),
                         "/home": str(host_dir / "homes")},
        # The owner exists only inside the host: its passwd and group, not this machine's.
        "files": {"/etc/passwd": str(host_dir / "passwd"), "/etc/group": str(host_dir / "group")},
        "keep": keep,
        "sshd": [SSHD, "-D", "-e", "-f", str(host_dir / "sshd_config")],
    }
    (host_dir / "hostinit.json").write_text(json.dumps(init, indent=1))
    return host_pub


def _write_owner(host_dir: Path, keys: tuple[str, ...], private: Path | None) -> None:
    """The owner's home (/home/ops inside the host) and its passwd and group entries: this
    machine's users plus the owner, who is also in the `docker` group (its engine's socket)."""
    uid = L.OWNER_UID
    homes = host_dir / "homes"
    homes.mkdir(mode=0o755)
    home = homes / L.OWNER
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "authorized_keys").write_text("".join(k + "\n" for k in keys))
    own = []
    if private is not None:
        for src, name in ((private, "id_ed25519"), (private.with_suffix(".pub"), "id_ed25519.pub")):
            (home / ".ssh" / name).write_bytes(src.read_bytes())
            own.append(home / ".ssh" / name)
        (home / ".ssh" / "id_ed25519").chmod(0o600)
    for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys", *own):
        os.chown(path, uid, uid)
    home.chmod(0o755)
    (home / ".ssh" / "authorized_keys").chmod(0o600)
    passwd = [line for line in Path("/etc/passwd").read_text().splitlines() if not line.startswith(f"{L.OWNER}:")]
    passwd.append(f"{L.OWNER}:x:{uid}:{uid}:sparkops test owner:{L.OWNER_HOME}:/bin/sh")
    groups = []
    for line in Path("/etc/group").read_text().splitlines():
        name, _, _, members = (line.split(":") + ["", "", ""])[:4]
        if name == "docker":
            line = line + ("," if members else "") + L.OWNER
        if name != L.OWNER:
            groups.append(line)
    groups.append(f"{L.OWNER}:x:{uid}:")
    (host_dir / "passwd").write_text("\n".join(passwd) + "\n")
    (host_dir / "group").write_text("\n".join(groups) + "\n")


def start(host_dir: Path, netns: str) -> subprocess.Popen:
    """Start the host: its sshd becomes PID 1 of a fresh PID namespace, so killing it ends
    every process of the host. Returns the `unshare` process (the host's parent)."""
    with open(host_dir / "sshd.log", "ab") as log:  # Popen keeps its own copy of the fd
        proc = subprocess.Popen(
            [
                "nsenter", f"--net=/run/netns/{netns}",
                "unshare", "--uts", "--pid", "--ipc", "--mount", "--fork",
                "--kill-child=SIGKILL", "--mount-proc", "--propagation", "private",
                sys.executable, "-I", "-S", str(HOSTINIT), str(host_dir / "hostinit.json"),
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    (host_dir / "init.pid").write_text(f"{_child_of(proc)}\n")
    return proc


def _child_of(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pids = children.read_text().split()
        except OSError:
            pids = []
        if pids:
            return int(pids[0])
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    raise RuntimeError(f"host init did not start (unshare exit status {proc.poll()})")


def write_client_files(state: Path, hosts: list[tuple[str, str, int, str]], key: Path) -> None:
    """known_hosts (real host keys, for strict checking) and an ssh_config for use by hand.
    `hosts` holds (name, address, port, public host key)."""
    known, config = [], []
    for name, addr, port, pub in hosts:
        names = [addr, name] if port == 22 else [f"[{addr}]:{port}", f"[{name}]:{port}"]
        known.append(f"{','.join(names)} {pub}\n")
        config.append(
            f"""\
Host {name} {addr}
  HostName {addr}
  Port {port}
  User root
  IdentityFile {key}
  IdentitiesOnly yes
  UserKnownHostsFile {state / 'known_hosts'}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10

"""
        )
    (state / "known_hosts").write_text("".join(known))
    (state / "ssh_config").write_text("".join(config))
    os.chmod(state / "ssh_config", 0o600)
