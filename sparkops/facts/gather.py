"""Node facts: the probe run on every node at once, and its sections parsed into NodeFacts
(pure, tested from recorded output)."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

from sparkops.base.errors import ConnectError, SparkopsError
from sparkops.config import Config
from sparkops.config.image import local_name
from sparkops.facts import parsers, probe
from sparkops.facts.node import NodeFacts
from sparkops.node_scripts.hf_cache import repo_folder
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import NodeGroup
from sparkops.remote.result import CommandTimeout

_LISTEN = re.compile(r"^\S+\s+\d+\s+\d+\s+(\S+):(\d+)\s")


def parse_ss_listen(text: str) -> tuple[int, ...]:
    """`ss -Htln` lines -> sorted listening TCP ports."""
    ports = {int(m.group(2)) for line in text.splitlines() if (m := _LISTEN.match(line))}
    return tuple(sorted(ports))


def facts_from_sections(node: str, sections: dict[str, tuple[int, str]]) -> NodeFacts:
    errors: dict[str, str] = {}
    unknown: dict[str, str] = {}

    def ok(name: str) -> str | None:
        rc, body = sections.get(name, (None, ""))
        if rc == 0:
            return body
        if rc == probe.UNKNOWN:  # the node has no way to tell (no tool and no fallback): not a failure
            unknown[name] = body.strip()[-200:] or "unknown"
            return None
        if rc not in (None, 1, 2, 127) or name in ("ip", "meminfo", "hostname"):
            errors[name] = f"exit {rc}: {body.strip()[-200:]}" if rc is not None else "not reported"
        return None

    def parsed(name: str, parse, default=None):
        body = ok(name)
        if body is None:
            return default
        try:
            return parse(body)
        except ValueError as exc:
            errors[name] = str(exc)
            return default

    roce = parsed("ibdev2netdev", parsers.parse_ibdev2netdev, [])
    sysfs_links, gid_index = parsed("sysfs-roce", parsers.parse_sysfs_roce, ([], {}))
    docker_runtimes = parsed("docker-runtimes", lambda t: tuple(sorted(json.loads(t or "{}"))), ())
    ids = parsed("ids", parsers.parse_ids, (None, None))
    return NodeFacts(
        node=node, source="live",
        hostname=ok("hostname"), user=ok("user"), home=ok("home"), uid=ids[0], gid=ids[1],
        gpus=tuple(parsed("nvidia-smi", parsers.parse_nvidia_smi_query, [])),
        roce=tuple(roce or sysfs_links), gid_index=gid_index,
        interfaces=parsed("ip", parsers.parse_ip_addr, {}),
        link_speed_mbps=parsed("net-speed", parsers.parse_net_speed, {}),
        memory=parsed("meminfo", parsers.parse_meminfo),
        disk=parsed("df", parsers.parse_df),
        docker_version=ok("docker-version"), docker_runtimes=docker_runtimes,
        vllm_version=ok("vllm"), image_id=ok("image-id"),
        model_present=sections.get("model", (1, ""))[0] == 0,
        model_blobs=parsed("model-blobs", parsers.parse_model_blobs),
        foreign_files=parsed("foreign-files", parsers.parse_foreign_files, ()),
        ports_in_use=parsed("ports", parse_ss_listen, ()),
        clock=parsed("clock", float), cpus=parsed("cpus", int), errors=errors, unknown=unknown)


def gather(cfg: Config, group: NodeGroup, only: Iterable[str] | None = None
           ) -> tuple[dict[str, NodeFacts], dict[str, SparkopsError]]:
    """Facts from every node of the group at once: (facts of the reachable nodes, why each
    other node could not be read). `only` these probe sections: the rest stay unknown."""
    c = cfg.cluster

    def one(conn: NodeConn) -> NodeFacts:
        def where(path: str) -> str:
            # Before facts there is no home to resolve '~/' with: an SSH command starts in the
            # home directory, so a relative path does; this machine expands it itself.
            if not path.startswith("~/"):
                return path
            return os.path.expanduser(path) if conn.is_local else path[2:]

        try:
            res = conn.run(probe.argv(where(c["paths"]["hf_home"]), repo_folder(cfg.model["repo"]),
                                      where(c["venv"]), local_name(c["image"]), c["runtime"], only,
                                      cache_dir=where(c["paths"]["cache_dir"])),
                           timeout=c["ssh"]["command_timeout_s"])
        except CommandTimeout as exc:
            raise ConnectError(f"reading facts timed out after {exc.timeout:.0f}s", host=conn.name,
                               step="facts") from None
        return facts_from_sections(conn.name, probe.split_sections(res.stdout))

    results = group.map(one)
    return results.succeeded, results.errors()
