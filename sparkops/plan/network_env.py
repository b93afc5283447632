"""The environment NCCL, Gloo, vLLM and Ray need on each node for multi-node runs (pure)."""
from __future__ import annotations

from ..facts.roce import RoceChoice


def network_env(choice: RoceChoice | None, *, accelerator: str, network: dict, backend: str,
                multi_node: bool) -> dict[str, str]:
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
