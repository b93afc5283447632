"""Node facts: the probe's sections parsed into NodeFacts (pure), and gathering them."""
from __future__ import annotations

import json
import re

from . import parsers
from .node import NodeFacts

_LISTEN = re.compile(r"^\S+\s+\d+\s+\d+\s+(\S+):(\d+)\s")


def parse_ss_listen(text: str) -> tuple[int, ...]:
    """`ss -Htln` lines -> sorted listening TCP ports."""
    ports = {int(m.group(2)) for line in text.splitlines() if (m := _LISTEN.match(line))}
    return tuple(sorted(ports))


def model_dir_name(repo: str) -> str:
    """huggingface_hub's cache folder for a model repo."""
    return "models--" + repo.replace("/", "--")


def facts_from_sections(node: str, sections: dict[str, tuple[int, str]]) -> NodeFacts:
    errors: dict[str, str] = {}

    def ok(name: str) -> str | None:
        rc, body = sections.get(name, (None, ""))
        if rc == 0:
            return body
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
    return NodeFacts(
        node=node, source="live",
        hostname=ok("hostname"), user=ok("user"), home=ok("home"),
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
        ports_in_use=parsed("ports", parse_ss_listen, ()),
        clock=parsed("clock", float), errors=errors)
