"""A stack's router: LiteLLM's proxy on the head's API port, routing by the request's `model`.
Run with the Python of LiteLLM's own virtualenv (`python3 -c`), so that it needs no file of
sparkops on the node and sees the same paths inside a container as outside.

The proxy's config (models and their servers; secrets only by name, `os.environ/...`, which the
service's 0600 env file sets) arrives as an argument, is written to a private temporary file
for LiteLLM to read, and removed when the proxy stops.

usage: litellm_router.py --config-json JSON --host H --port P
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkops-litellm")
    p.add_argument("--config-json", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    ns = parse(argv)
    try:
        from litellm import run_server
    except ImportError as exc:
        print(f"sparkops-litellm: LiteLLM is not installed in {sys.prefix} ({exc}); `inv install-vllm "
              "--litellm` installs it (native runtime); the spark image has it (`inv build`)", file=sys.stderr)
        return 2
    fd, path = tempfile.mkstemp(prefix="sparkops-litellm-", suffix=".json")  # 0600, a name of its own
    with os.fdopen(fd, "w") as f:
        f.write(ns.config_json)

    def stop(signum, _frame) -> None:
        print(f"sparkops-litellm: stopping on {signal.Signals(signum).name}", flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"sparkops-litellm: LiteLLM's proxy on {ns.host}:{ns.port}, config {path}", flush=True)
    try:
        run_server.main(args=["--config", path, "--host", ns.host, "--port", str(ns.port), "--num_workers", "1"],
                        prog_name="litellm", standalone_mode=False)
        print("sparkops-litellm: the proxy returned", file=sys.stderr, flush=True)
        return 1
    finally:
        os.unlink(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
