"""Small real wheels for `inv install-vllm --wheels` tests, and a stand-in for a machine's own
Python: a virtualenv of this Python holding pip and a tiny `torch` of a chosen version, as the
GPU machine's python3 holds torch 2.11.0+cu130.

The wheels are real: zips with METADATA, WHEEL and a RECORD of sha256 digests, installed by a
real pip. The `vllm` one requires a torch version in its METADATA as vLLM's wheels do, and has
a `vllm` console script that prints which vllm and which torch (version and file) it imports.
"""
from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

VLLM_CLI = '''import json


def main():
    import torch

    import vllm
    print(json.dumps({"vllm": vllm.__version__, "torch": torch.__version__, "torch_file": torch.__file__}))
'''


def make_wheel(dest: Path, name: str, version: str, files: dict[str, str] | None = None,
               requires: tuple[str, ...] | list[str] = (), entry_points: str = "",
               tag: str = "py3-none-any") -> Path:
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = dict(files or {})
    contents[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                    + "".join(f"Requires-Dist: {r}\n" for r in requires))
    contents[f"{info}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: sparkops-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    if entry_points:
        contents[f"{info}/entry_points.txt"] = entry_points
    wheel = Path(dest) / f"{dist}-{version}-{tag}.whl"
    record = []
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            data = text.encode()
            zf.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def torch_wheel(dest: Path, version: str) -> Path:
    return make_wheel(dest, "torch", version, {"torch/__init__.py": f"__version__ = {version!r}\n"})


def vllm_wheel(dest: Path, version: str = "0.26.0", requires: tuple[str, ...] = ("torch==2.11.0",)) -> Path:
    return make_wheel(dest, "vllm", version,
                      {"vllm/__init__.py": f"__version__ = {version!r}\n", "vllm/cli.py": VLLM_CLI},
                      requires=requires, entry_points="[console_scripts]\nvllm = vllm.cli:main\n")


def system_python(root: Path, torch_version: str | None) -> Path:
    """A Python standing in for a machine's own: pip, and torch `torch_version` (None: none).
    pip is this test run's own, copied with its compiled files (ensurepip takes five seconds, and
    an uncompiled pip one more on each run where PYTHONDONTWRITEBYTECODE is set); torch is
    unpacked straight into site-packages (a pure wheel's install). Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    pip = Path(str(metadata.distribution("pip").locate_file("pip")))
    for path in (pip, *pip.parent.glob("pip-*.dist-info")):
        shutil.copytree(path, site / path.name)  # copy2: the sources keep the times their .pyc record
    if torch_version:
        with zipfile.ZipFile(torch_wheel(root, torch_version)) as zf:
            zf.extractall(site)
    return python


def folder(dest: Path, *, vllm: str = "0.26.0", requires: tuple[str, ...] = ("torch==2.11.0", "fakedep>=1.0"),
           torch: str | None = None, extra: tuple[Path, ...] = ()) -> Path:
    """A folder of wheels: vllm `vllm` requiring `requires`, fakedep 1.0 (what it needs beside
    torch), and a torch wheel of version `torch` if given."""
    dest.mkdir(parents=True, exist_ok=True)
    vllm_wheel(dest, vllm, requires)
    make_wheel(dest, "fakedep", "1.0", {"fakedep.py": "VALUE = 1\n"})
    if torch:
        torch_wheel(dest, torch)
    return dest
