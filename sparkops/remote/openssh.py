"""The OpenSSH client argv for a hop from the head to another node (`inv sync`'s ssh
transport, `ssh worker ... transfer.py receive`; `inv build`'s `docker save | ssh worker docker
load`): the worker's SSH user, key and port from the cluster file, its host key checked strictly
under the name the cluster file knows it by (`HostKeyAlias`), whatever address the bytes take
(the RoCE cable)."""
from __future__ import annotations

import os

# AES-GCM runs on the CPU's AES instructions (x86 AES-NI, Arm's crypto extension).
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"


def ssh_command(node: dict, ssh: dict) -> list[str]:
    """The ssh client argv (without the address) for the hop head -> node."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "Compression=no", "-c", CIPHERS,
            "-o", f"ConnectTimeout={ssh.get('connect_timeout_s', 10)}",
            "-o", "StrictHostKeyChecking=" + ("yes" if ssh.get("strict_host_keys", True) else "accept-new"),
            "-o", f"HostKeyAlias={node['host']}"]
    if ssh.get("config_file"):
        argv += ["-F", os.path.expanduser(ssh["config_file"])]
    if ssh.get("known_hosts"):
        argv += ["-o", f"UserKnownHostsFile={os.path.expanduser(ssh['known_hosts'])}"]
    if node.get("key"):
        argv += ["-i", os.path.expanduser(node["key"]), "-o", "IdentitiesOnly=yes"]
    if node.get("port"):
        argv += ["-p", str(node["port"])]
    if node.get("user"):
        argv += ["-l", node["user"]]
    return argv
