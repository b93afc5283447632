"""`inv setup`: ask for (or take flags for) the worker addresses, SSH user and secrets, and
write them to sparkops.local.toml; optionally record the nodes' SSH host keys."""
from __future__ import annotations

import getpass
import os
import secrets
import subprocess
import sys
from pathlib import Path

from sparkops.base.errors import SparkopsError
from sparkops.base.paths import local_override_path as override_path
from sparkops.base.paths import project_root
from sparkops.config import local_override
from sparkops.config.catalog import cluster_path
from sparkops.config.toml_files import read_toml


def _ask(question: str, default: str | None, assume_yes: bool) -> str | None:
    if assume_yes or not sys.stdin.isatty():
        return default
    answer = input(f"{question}" + (f" [{default}]" if default else "") + ": ").strip()
    return answer or default


def run_setup(*, cluster: str, workers: list[str], head: str | None, user: str | None,
              key: str | None, hf_token_stdin: bool, api_key_stdin: bool, make_default: bool,
              trust_host_keys: bool, assume_yes: bool) -> Path:
    root = project_root()
    path = override_path(root)
    current_doc = local_override.load(path)
    # What is configured now is what a second `inv setup` offers: this file's nodes, else the
    # cluster file's.
    current = (current_doc.get("clusters", {}).get(cluster, {}).get("nodes")
               or read_toml(cluster_path(root, cluster)).get("cluster", {}).get("nodes", []))
    interactive = sys.stdin.isatty() and not assume_yes and not (hf_token_stdin or api_key_stdin)
    head = head or _ask("head node address ('local' = this machine)",
                        current[0]["host"] if current else "local", not interactive)
    if not workers:
        defaults = ",".join(n["host"] for n in current[1:])
        answer = _ask("worker address(es), comma separated", defaults, not interactive)
        workers = [w.strip() for w in (answer or "").split(",") if w.strip()]
    user = user or _ask("SSH user on the nodes (empty = your user name)", None, not interactive)
    hf_token = api_key = None
    if hf_token_stdin:
        hf_token = sys.stdin.readline().strip()
    elif interactive:
        hf_token = getpass.getpass("Hugging Face token (empty to skip; hidden): ").strip() or None
    if api_key_stdin:
        api_key = sys.stdin.readline().strip()
    made_key = False
    if not api_key and not current_doc.get("secrets", {}).get("api_key") and not os.environ.get("VLLM_API_KEY"):
        api_key, made_key = new_api_key(), True  # the API is never served open by default
    nodes = []
    for i, host in enumerate([head, *workers]):
        # A node keeps what else it had (env, roce_ip, a key given before): setup changes the
        # address, the user and the key, not the rest.
        old = _plain(current[i]) if i < len(current) else {}
        remote = host != "local"
        nodes.append({**old, "name": old.get("name") or f"node-{i + 1}", "host": host,
                      "user": (user or old.get("user")) if remote else None,
                      "key": (key or old.get("key")) if remote else None})
    doc = local_override.update(current_doc, cluster=cluster, nodes=nodes,
                                hf_token=hf_token, api_key=api_key,
                                default_cluster=cluster if make_default else None)
    local_override.save(doc, path)
    print(f"wrote {path} (mode 0600): cluster {cluster}: "
          + ", ".join(f"{n['name']}={n['host']}" for n in nodes)
          + (", HF token set" if hf_token else "")
          + (", API key generated (`inv api-key` prints it)" if made_key else ", API key set" if api_key else ""))
    if trust_host_keys:
        for node in nodes:
            if node["host"] != "local":
                record_host_key(str(node["host"]), assume_yes)
    return path


def _plain(node) -> dict:
    """A node table as plain Python (tomlkit's own types unwrapped)."""
    return node.unwrap() if hasattr(node, "unwrap") else dict(node)


def new_api_key() -> str:
    """A key for the served API: 256 random bits, URL-safe (it travels in a Bearer header)."""
    return "sparkops-" + secrets.token_urlsafe(32)


def write_api_key(key: str) -> Path:
    """Put the key into the local override file's [secrets] (mode 0600, all clusters)."""
    path = override_path(project_root())
    doc = local_override.load(path)
    local_override.save(local_override.update(doc, api_key=key), path)
    return path


def record_host_key(host: str, assume_yes: bool) -> None:
    """Show the node's host key fingerprints; append them to ~/.ssh/known_hosts when accepted."""
    scan = subprocess.run(["ssh-keyscan", "-T", "5", host], capture_output=True, text=True)
    if not scan.stdout.strip():
        raise SparkopsError(f"no SSH host key from {host}", host=host, step="setup",
                            log_tail=scan.stderr.strip().splitlines()[-5:],
                            fix="check the address and that sshd runs there")
    prints = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan.stdout, capture_output=True, text=True)
    print(f"host keys of {host}:\n" + prints.stdout.rstrip())
    if not assume_yes and (not sys.stdin.isatty() or input("record them? [y/N] ").strip().lower() != "y"):
        print(f"not recorded: {host}")
        return
    known = Path("~/.ssh/known_hosts").expanduser()
    known.parent.mkdir(mode=0o700, exist_ok=True)
    with known.open("a") as handle:
        handle.write(scan.stdout if scan.stdout.endswith("\n") else scan.stdout + "\n")
    print(f"recorded in {known}")
