"""Install LiteLLM's proxy (a stack's router: one endpoint, routing by the request's `model`)
into a virtualenv of its own. Its own, because `litellm[proxy]` pins web and data libraries
(fastapi, pydantic, uvicorn, ...) that must not move under vLLM.

Idempotent: a marker file records the version installed, and importing the proxy confirms
the venv still works before the install is skipped. Standard
library only, no sparkops imports: run on a node as `python3 litellm_venv.py --venv DIR`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

LITELLM_VERSION = "1.108.7"
MARKER = "sparkops-litellm.json"


def installed(venv: Path) -> str | None:
    """The LiteLLM version this venv holds, when its proxy imports; else None."""
    python = venv / "bin" / "python3"
    marker = venv / MARKER
    if not python.exists() or not marker.exists():
        return None
    probe = subprocess.run([str(python), "-c", "import litellm.proxy.proxy_server, importlib.metadata as m; "
                            "print(m.version('litellm'))"], capture_output=True, text=True, check=False)
    return probe.stdout.strip() if probe.returncode == 0 else None


def install(venv: Path, version: str = LITELLM_VERSION) -> str:
    if installed(venv) == version:
        return f"litellm {version}: already installed in {venv}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python3"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, f"litellm[proxy]=={version}"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"litellm-venv: pip could not install litellm[proxy]=={version} into {venv}")
    (venv / MARKER).write_text(json.dumps({"litellm": version}) + "\n")
    if installed(venv) != version:
        raise SystemExit(f"litellm-venv: installed litellm {version} into {venv}, but its proxy does not import")
    return f"litellm {version}: installed in {venv}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, required=True)
    ap.add_argument("--version", default=LITELLM_VERSION)
    args = ap.parse_args(argv)
    print(install(args.venv, args.version), flush=True)


if __name__ == "__main__":
    main()
