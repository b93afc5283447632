"""Names, addresses and paths of a simulated cluster: pure functions of (slot, host index).

Several clusters can exist at once (parallel test sessions, a hand-built one), each in its own
*slot*. Every kernel object carries the slot in a fixed-prefix name, so leftovers of a crashed
run can be found by name alone, without any state file surviving.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_SLOTS = 8
MAX_HOSTS = 26  # one letter per host

# Interface names as they appear on a real DGX Spark.
MGMT_IF = "enP7s7"
ROCE_IF = "enp1s0f1np1"
ROCE_TWIN_IF = "enP2p1s0f1np1"
ROCE_MTU = 9000

NETNS_PREFIX = "sparkops-sim"
LINK_PREFIX = "spk"  # every link this harness creates in the root namespace starts with it

DEFAULT_STATE_ROOT = "/var/lib/sparkops-sim"
STATE_ROOT_ENV = "SPARKOPS_SIM_DIR"


def state_root() -> Path:
    """Where all slots keep their files; outside /tmp because each host gets a private /tmp."""
    return Path(os.environ.get(STATE_ROOT_ENV) or DEFAULT_STATE_ROOT)


def slot_dir(slot: int) -> Path:
    return state_root() / str(slot)


def lock_path(slot: int) -> Path:
    return state_root() / f"slot{slot}.lock"


def holder_path(slot: int) -> Path:
    return state_root() / f"slot{slot}.holder"


def letter(index: int) -> str:
    if not 0 <= index < MAX_HOSTS:
        raise ValueError(f"host index {index} out of range 0..{MAX_HOSTS - 1}")
    return chr(ord("a") + index)


def host_name(index: int) -> str:
    return f"spark-{letter(index)}"


def netns_name(slot: int, index: int) -> str:
    return f"{netns_prefix(slot)}{letter(index)}"


def netns_prefix(slot: int) -> str:
    return f"{NETNS_PREFIX}{slot}-"


def mgmt_subnet(slot: int) -> str:
    return f"10.77.{slot}.0/24"


def mgmt_gateway(slot: int) -> str:
    return f"10.77.{slot}.1"


def mgmt_ip(slot: int, index: int) -> str:
    return f"10.77.{slot}.{11 + index}"


def roce_ip(index: int) -> str:
    # The "cable" is invisible from the root namespace, so every slot can use the same addresses.
    return f"169.254.100.{11 + index}"


def lan_bridge(slot: int) -> str:
    return f"{LINK_PREFIX}br{slot}"


def roce_bridge(slot: int) -> str:
    return f"{LINK_PREFIX}roce{slot}"


def root_veth(slot: int, role: str, index: int) -> str:
    """Root-namespace end of a host's veth; role is lan, roce or twin (<= 15 chars)."""
    return f"{LINK_PREFIX}{slot}-{role}-{letter(index)}"


def owns_link(slot: int, name: str) -> bool:
    """Whether a root-namespace link name belongs to this slot."""
    return name in (lan_bridge(slot), roce_bridge(slot)) or name.startswith(
        f"{LINK_PREFIX}{slot}-"
    )

# A real pair is driven by its owner, not root: every host also has this unprivileged user,
# with a home of its own (/home/ops), the same uid on every host (as an admin would make it),
# and membership of the host's `docker` group.
OWNER = "ops"
OWNER_UID = 4242
OWNER_HOME = "/home/ops"
