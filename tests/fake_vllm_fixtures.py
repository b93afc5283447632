"""The fake vLLM (tests/fake_vllm/) in a real virtualenv, for tests/conftest.py:

    from fake_vllm_fixtures import fake_local, fake_vllm_venv  # noqa: F401

`fake_vllm_venv` (session): a virtualenv whose `bin/vllm serve` is the fake, whose python reports
`importlib.metadata.version("vllm")` (what sparkops' facts read) and which sparkops deploys on
the `local` cluster exactly as it deploys vLLM's CPU build (cluster.venv). Needs no network, no
root and no vLLM. `fake_local` (module): a config maker for the `local` cluster with that
virtualenv, private paths and a free API port, the smoke model's config in its HF cache
(put_model); it stops whatever is serving at the end of the module. The performance model the fake serves with is
tests/fake_vllm/vllm/perf.py (import it as `from fake_vllm.vllm import perf`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent / "fake_vllm"
BASE_VERSION = "0.0.1+sparkops.fake"


def fake_version() -> str:
    """The installed version: the base one plus a digest of the fake's sources. sparkops caches
    `vllm serve --help=all` per vLLM version (~/.cache/sparkops/vllm-flags), so an edited fake
    must not pass for the one whose flags were cached."""
    h = hashlib.sha256()
    for path in sorted((SOURCE / "vllm").glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{BASE_VERSION}.{h.hexdigest()[:8]}"


def build_fake_venv(dest: Path) -> Path:
    """A virtualenv at `dest` with the fake installed, offline, in well under a second.

    Not `pip install`: the new virtualenv has no pip without `ensurepip` (seconds), and even
    `pip install --no-index --no-build-isolation` needs setuptools where pip runs, which Python
    3.12's virtualenvs no longer carry, so it cannot work offline on every fresh machine. The
    package is pure Python with no dependencies: copying it into site-packages and writing what
    pip would write (the dist-info that importlib.metadata reads, the `bin/vllm` launcher) is the
    same installation, made without the network."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True, timeout=120)
    python = dest / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    site = Path(purelib)
    shutil.copytree(SOURCE / "vllm", site / "vllm", ignore=shutil.ignore_patterns("__pycache__"))
    version = fake_version()
    info = site / f"vllm-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                                   "Summary: A fake vLLM with a known performance model, for sparkops' tests\n")
    (info / "INSTALLER").write_text("sparkops-tests\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nvllm = vllm.cli:main\n")
    files = [p for p in (site / "vllm").rglob("*") if p.is_file()] + [info / n for n in
                                                                    ("METADATA", "INSTALLER", "entry_points.txt")]
    (info / "RECORD").write_text("".join(f"{p.relative_to(site)},,\n" for p in files)
                                 + f"{info.name}/RECORD,,\n")
    launcher = dest / "bin" / "vllm"
    launcher.write_text(f"#!{python}\nimport sys\nfrom vllm.cli import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    return dest


def put_model(hf_home: Path, repo: str | None = None) -> Path:
    """The smoke model's config.json (and a tokenizer config) in `hf_home`'s Hugging Face cache,
    written with sparkops' own cache writer: what preflight looks for and all the fake reads.
    Not `inv smoke-model`: its builder runs with the virtualenv's python and needs torch and
    transformers, which the fake's virtualenv does not have (and the fake reads no weights)."""
    from sparkops.node_scripts import hf_cache
    from sparkops.node_scripts.smoke_model import REPO_ID

    root = hf_cache.repo_dir(hf_home, repo or REPO_ID)
    files = {"config.json": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 2,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "hidden_size": 128,
                             "max_position_embeddings": 2048, "torch_dtype": "float32"},
             "tokenizer_config.json": {"model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast"}}
    digests = {name: hf_cache.write_blob(root, [json.dumps(doc, indent=1).encode()])[0]
               for name, doc in files.items()}
    return hf_cache.link_snapshot(root, hf_cache.content_commit(digests), digests)


@pytest.fixture(scope="session")
def fake_vllm_venv(tmp_path_factory) -> Path:
    t0 = time.monotonic()
    venv = build_fake_venv(tmp_path_factory.mktemp("fake-vllm") / "venv")
    print(f"fake vLLM virtualenv built in {time.monotonic() - t0:.2f}s at {venv}")
    return venv


@pytest.fixture(scope="module")
def fake_local(fake_vllm_venv, tmp_path_factory):
    """make(profile="smoke", sets=()) -> Config for the `local` cluster serving with the fake;
    make.sets: the --set list (for `inv` subprocesses)."""
    from conftest import free_port

    from sparkops.base.progress import Silent
    from sparkops.config import load_config
    from sparkops.deploy.down import down

    work = tmp_path_factory.mktemp("fake-node")
    sets = [f"cluster.venv={json.dumps(str(fake_vllm_venv))}",
            f"cluster.paths.hf_home={json.dumps(str(work / 'hf'))}",
            f"cluster.paths.work_dir={json.dumps(str(work / 'work'))}",
            f"cluster.paths.lock={json.dumps(str(work / 'sparkops.lock'))}",  # not the machine's
            f"cluster.paths.cache_dir={json.dumps(str(work / 'cache'))}",
            f"cluster.ports.api={free_port()}"]

    def make(profile: str = "smoke", sets_=()):
        return load_config(profile, "local", sets=sets + list(sets_), environ={})
    make.sets = sets  # type: ignore[attr-defined]
    put_model(work / "hf")
    yield make
    down(make(), progress=Silent())
