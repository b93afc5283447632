"""The environment of everything sparkops runs on the nodes over the cluster's network: vLLM
(and Ray) in either runtime, and the all-reduce test, which must see exactly what vLLM sees.
Pure: facts and configuration in, {name: value} out.

Layers, later ones winning: the network variables derived from the node's facts (RoCE
interface, HCAs, GID index), the runtime's own (HF_HOME, PATH), HF_HUB_OFFLINE, the
profile's `[env]`, the node's `cluster.nodes[].env`, and for vLLM the API key.
"""
from __future__ import annotations

from sparkops.base.errors import ConfigError
from sparkops.config import Config
from sparkops.facts.roce import RoceChoice
from sparkops.plan.context import NodeContext
from sparkops.plan.interfaces import Runtime


def network_env(choice: RoceChoice | None, *, accelerator: str, network: dict, backend: str,
                multi_node: bool) -> dict[str, str]:
    """What NCCL, Gloo, vLLM and Ray need to find each other on this node."""
    if not multi_node or choice is None:
        # One node: every rank is local. Loopback for Gloo, or it resolves the hostname first,
        # which stalls for minutes (DNS timeouts) where the name has no address; and keep NCCL
        # off the IB path it would probe for.
        env = {"GLOO_SOCKET_IFNAME": "lo"}
        return env | {"NCCL_IB_DISABLE": "1"} if accelerator == "nvidia" else env
    iface = choice.interface
    env = {
        "VLLM_HOST_IP": choice.ip,
        "GLOO_SOCKET_IFNAME": iface,
        "TP_SOCKET_IFNAME": iface,
    }
    if backend == "ray":
        env |= {"RAY_NODE_IP_ADDRESS": choice.ip, "RAY_OVERRIDE_NODE_IP_ADDRESS": choice.ip,
                # Ray's memory monitor reads page cache as pressure and kills vLLM on a Spark.
                "RAY_memory_monitor_refresh_ms": "0"}
    if accelerator != "nvidia":
        return env
    env |= {
        "NCCL_SOCKET_IFNAME": iface,
        "UCX_NET_DEVICES": iface,
        "OMPI_MCA_btl_tcp_if_include": iface,
        "NCCL_IB_DISABLE": "0",
        # Each QSFP port is two PCIe x4 HCAs; one alone gets about half the link.
        "NCCL_IB_HCA": ",".join(choice.hcas),
        "NCCL_NET_GDR_LEVEL": str(network.get("gdr_level", 0)),
        "NCCL_IGNORE_CPU_AFFINITY": "1",
        "NCCL_DEBUG": network.get("nccl_debug", "INFO"),
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    }
    if choice.gid_index is not None:
        env["NCCL_IB_GID_INDEX"] = str(choice.gid_index)
    return env


def serving_env(cfg: Config, ctx: NodeContext, choice: RoceChoice | None, runtime: Runtime, *,
                multi_node: bool, secrets: bool = True) -> dict[str, str]:
    """The one environment of a process sparkops runs on this node over the cluster's network.
    `secrets=False` leaves out the API key (the all-reduce test has no use for it)."""
    env = network_env(choice, accelerator=cfg.cluster["accelerator"], network=cfg.cluster["network"],
                      backend=cfg.doc["distributed"]["backend"], multi_node=multi_node)
    env |= runtime.service_env(ctx)
    # Workers must never download on their own: models arrive through `inv sync`.
    env["HF_HUB_OFFLINE"] = "1"
    env |= env_strings(cfg.doc.get("env", {}))
    env |= env_strings(ctx.node.get("env", {}))  # a node's own entries win: they are the specific ones
    if secrets and cfg.secrets.get("api_key"):
        env["VLLM_API_KEY"] = cfg.secrets["api_key"]
    for key, value in env.items():
        if "\n" in value or "\r" in value:
            raise ConfigError(f"env.{key}: values cannot hold line breaks")
    return env


def env_strings(table: dict) -> dict[str, str]:
    """TOML values as environment strings (booleans as true/false, as shells and vLLM expect)."""
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in table.items()}


def env_file_text(env: dict[str, str]) -> str:
    """KEY=VALUE lines, as `docker run --env-file` and service.sh read them."""
    return "".join(f"{k}={v}\n" for k, v in sorted(env.items()))
