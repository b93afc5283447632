"""The Spark image's Python packages are pinned: every `pip install` in
dockerfiles/spark/Dockerfile passes the constraints file beside it, every package it names is
pinned there, and that file pins with `==` only, for the vLLM ref and torch index the
Dockerfile builds with. (The image itself builds only on a Spark: this reads the files.)"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parent.parent / "dockerfiles" / "spark"
# pip options that take a value (the value is not a package)
VALUE_OPTIONS = {"-c", "--constraint", "-r", "--requirement", "-e", "--editable", "-i", "--index-url",
                 "--extra-index-url", "-f", "--find-links", "--target", "-t", "--prefix", "--root"}
# Virtualenvs of their own in the image, pinned by their own constraints file.
OWN_VENVS = ("/opt/litellm/bin/pip",)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue  # Docker drops comment lines, inside a continued RUN too
        pending = pending[:-1] + " " + line.strip() if pending.endswith("\\") else line.strip()
        if not pending.endswith("\\") and pending:
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def args_defaults(text: str) -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in instructions(text) if word == "ARG" and "=" in rest)


def pip_installs(text: str, pip: str | None = None) -> list[list[str]]:
    """The argv after `pip install` of every pip install that a RUN runs (with `pip`: only those
    run by that pip, e.g. /opt/litellm/bin/pip; without: every other)."""
    out = []
    for word, rest in instructions(text):
        if word != "RUN":
            continue
        found = []
        for command in re.split(r"&&|\|\||;", rest):
            argv = shlex.split(command)
            while argv and "=" in argv[0] and not argv[0].startswith("-"):  # MAX_JOBS=16 pip ...
                argv = argv[1:]
            if len(argv) >= 2 and argv[0].rsplit("/", 1)[-1] in ("pip", "pip3") and argv[1] == "install":
                found.append((argv[0], argv[2:]))
        # One hidden another way (`python -m pip install`, in a subshell) must not slip through.
        assert len(found) == len(re.findall(r"\bpip3?\s+install\b", rest)), f"unparsed pip install in: {rest}"
        out += [args for which, args in found if (which == pip if pip else which not in OWN_VENVS)]
    return out


def constraints(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        assert match, f"{path.name}:{number}: {line!r} is not an exact `name==version` pin"
        name = canonical(match.group(1))
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


def problems(dockerfile: str, pins: dict[str, str], file: str = "constraints.txt", pip: str | None = None) -> list[str]:
    """Every pip install (by `pip`, see pip_installs) that lacks the constraints file `file` or
    names a package it does not pin."""
    copied = {dst for word, rest in instructions(dockerfile) if word == "COPY"
              for src, dst in [rest.split()[-2:]] if src == file}
    out = []
    installs = pip_installs(dockerfile, pip)
    if not installs:
        out.append("no pip install found")
    for argv in installs:
        rendered = "pip install " + shlex.join(argv)
        given = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-c", "--constraint")}
        given |= {a.split("=", 1)[1] for a in argv if a.startswith("--constraint=")}
        if not given & copied:
            out.append(f"`{rendered}` does not pass -c with the constraints file ({sorted(copied)})")
        skip = False
        for a in argv:
            if skip:
                skip = False
                continue
            if a in VALUE_OPTIONS:
                skip = True
                continue
            if a.startswith("-") or a == ".":
                continue
            match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?(.*)$", a)
            assert match, a
            name, spec = canonical(match.group(1)), match.group(3)
            if name not in pins:
                out.append(f"`{rendered}` installs {name}, which {file} does not pin")
            elif spec and spec != f"=={pins[name]}":
                out.append(f"`{rendered}` asks for {name}{spec}, {file} pins {pins[name]}")
    return out


def test_every_pip_install_is_constrained_and_every_package_pinned():
    dockerfile = (FOLDER / "Dockerfile").read_text()
    pins = constraints(FOLDER / "constraints.txt")
    assert not problems(dockerfile, pins), "\n".join(problems(dockerfile, pins))
    assert len(pip_installs(dockerfile)) >= 4  # pip itself, torch, build requirements, vLLM, extras
    for name in ("torch", "triton", "flashinfer-python", "ray", "huggingface-hub", "transformers", "pip",
                 "setuptools", "cmake", "ninja", "setuptools-scm", "setuptools-rust", "wheel"):
        assert name in pins, name


def test_the_litellm_virtualenv_is_pinned_by_its_own_constraints():
    """LiteLLM's proxy (a stack's router) lives in /opt/litellm, apart from vLLM's packages: its
    own constraints file pins it and everything it pulls in."""
    dockerfile = (FOLDER / "Dockerfile").read_text()
    pins = constraints(FOLDER / "constraints-litellm.txt")
    found = problems(dockerfile, pins, "constraints-litellm.txt", "/opt/litellm/bin/pip")
    assert not found, "\n".join(found)
    assert len(pip_installs(dockerfile, "/opt/litellm/bin/pip")) == 1
    from sparkops.node_scripts.litellm_venv import LITELLM_VERSION
    assert pins["litellm"] == LITELLM_VERSION  # the image's router is the one tests run
    for name in ("fastapi", "uvicorn", "pydantic", "openai", "httpx"):
        assert name in pins, name


def test_constraints_belong_to_the_vllm_ref_and_torch_index_the_dockerfile_builds():
    text = (FOLDER / "constraints.txt").read_text()
    defaults = args_defaults((FOLDER / "Dockerfile").read_text())
    ref = re.search(r"^# vllm ref: (\S+)$", text, re.MULTILINE)
    assert ref and defaults["VLLM_REF"] == ref.group(1)
    torch = constraints(FOLDER / "constraints.txt")["torch"]
    assert "+" in torch, "torch's pin names its CUDA build (e.g. +cu130)"
    assert defaults["TORCH_INDEX"].rstrip("/").endswith("/" + torch.split("+", 1)[1])
    assert ":" in defaults["CUDA_IMAGE"] and not defaults["CUDA_IMAGE"].endswith(":latest")


@pytest.mark.parametrize("run, wrong", [
    ("RUN pip install -c /tmp/constraints.txt torch", None),
    ("RUN pip install torch --index-url https://x/cu130", "does not pass -c"),
    ("RUN pip install -c /tmp/constraints.txt flashinfer-python leftpad", "leftpad"),
    ("RUN pip install -c /tmp/constraints.txt 'ray[default]==2.0'", "asks for ray==2.0"),
    ("RUN cd /x && MAX_JOBS=4 pip install --no-build-isolation -e .", "does not pass -c"),
    ("RUN true && \\\n    pip install -r requirements/build/cuda.txt", "does not pass -c"),
])
def test_the_check_catches_unconstrained_and_unpinned_installs(run, wrong):
    dockerfile = f"FROM x\nCOPY constraints.txt /tmp/constraints.txt\n{run}\n"
    found = problems(dockerfile, {"torch": "2.13.0+cu130", "flashinfer-python": "0.7.0", "ray": "2.56.1"})
    if wrong is None:
        assert found == []
    else:
        assert any(wrong in p for p in found), found


def test_a_range_in_the_constraints_file_is_refused(tmp_path):
    bad = tmp_path / "constraints.txt"
    bad.write_text("torch==2.13.0\nray>=2.50\n")
    with pytest.raises(AssertionError, match="not an exact"):
        constraints(bad)
