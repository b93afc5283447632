"""Install vLLM from a folder of wheels into a virtualenv, offline, on this node.

`inv install-vllm --wheels DIR` (sparkops.runtimes.install) copies this file to each node and
runs it with the node's own Python (`--python`, default python3), the interpreter whose torch
the venv may reuse:

    python3 vllm_wheels.py probe --venv V                 what this node has (JSON on stdout)
    python3 vllm_wheels.py install --venv V --wheels DIR --identity JSON
    python3 vllm_wheels.py cleanup --venv V               remove what an interrupted install left

The controller decides (sparkops.runtimes.wheels): which torch vLLM's wheel requires and
whether this node's matches. Here the decision is carried out:

- Reusing torch: the venv gets a `.pth` that adds this Python's site directories (where its
  torch and torch's own dependencies live) after the venv's own, as the 2026-12-03 GPU run did
  by hand. Not `--system-site-packages`: that shows the *base* interpreter's site-packages, so
  a torch installed in a virtualenv or a conda environment (the Python named by --python)
  would stay unseen; the `.pth` adds exactly the directories this Python itself reads.
- No network: pip runs with --no-index and --find-links DIR only, with no pip configuration
  file and no PIP_* variable (a configured index, find-links or constraint cannot join in).
- Nothing half-installed: the venv is built aside (V.sparkops-new) and moved into place only
  once vLLM imports with the expected torch; a failure removes it and leaves V as it was.

Standard library only: this file runs on nodes that have nothing but Python.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import site
import subprocess
import sys
from pathlib import Path

MARKER = "sparkops-vllm-wheels.json"
CPU_MARKER = "sparkops-vllm-cpu.json"  # vllm_cpu.MARKER: a venv of vLLM's CPU build, replaceable
PTH = "_sparkops_node_site.pth"
NEW, OLD = ".sparkops-new", ".sparkops-old"
HOW_TO_FOLDER = "docs/runtimes.md: Installing vLLM offline from a folder of wheels"


class InstallError(RuntimeError):
    def __init__(self, step: str, cause: str, fix: str = "", tail: str = ""):
        super().__init__(f"{step}: {cause}")
        self.step, self.cause, self.fix, self.tail = step, cause, fix, tail


def say(text: str) -> None:
    """A progress line for the controller. When it is gone (the SSH channel closed under a
    Ctrl-C), the install stops, and removes what it built, instead of going on unseen."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # for the rest of this process
        raise KeyboardInterrupt("the controller is gone") from None


# --- what this node has ---------------------------------------------------------------------

def marker_environment() -> dict[str, str]:
    """PEP 508's marker variables for this Python (packaging's default_environment), so the
    controller evaluates a Requires-Dist marker as this node would."""
    iv = sys.implementation.version
    impl = f"{iv.major}.{iv.minor}.{iv.micro}"
    if iv.releaselevel != "final":
        impl += f"{iv.releaselevel[0]}{iv.serial}"
    return {"implementation_name": sys.implementation.name, "implementation_version": impl,
            "os_name": os.name, "platform_machine": platform.machine(), "platform_release": platform.release(),
            "platform_system": platform.system(), "platform_version": platform.version(),
            "python_full_version": platform.python_version(),
            "platform_python_implementation": platform.python_implementation(),
            "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform}


def torch_here() -> dict:
    """This Python's torch: version (from its distribution metadata, as pip sees it) and the
    site directory it lives in; {} when it has none."""
    import importlib.metadata as md
    import importlib.util
    try:
        dist = md.distribution("torch")
    except md.PackageNotFoundError:
        spec = importlib.util.find_spec("torch")
        return {"version": None, "where": os.path.dirname(os.path.dirname(spec.origin))} if spec and spec.origin else {}
    where = os.path.dirname(str(dist.locate_file("torch")))
    return {"version": dist.version, "where": where}


def site_dirs(torch: dict) -> list[str]:
    """The site directories this Python reads, in its order, that exist; torch's own directory
    too when it comes from elsewhere (PYTHONPATH)."""
    wanted = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        wanted.append(site.getusersitepackages())
    if torch.get("where"):
        wanted.append(torch["where"])
    dirs: list[str] = []
    for d in wanted:
        real = os.path.realpath(d)
        if os.path.isdir(real) and real not in dirs:
            dirs.append(real)
    return dirs


def venv_state(venv: Path) -> dict:
    """absent, empty, wheels (made by this script: its marker), cpu (vLLM's CPU build by
    sparkops), or foreign (anything else: never replaced)."""
    if not venv.exists():
        return {"state": "absent"}
    if venv.is_dir() and not any(venv.iterdir()):
        return {"state": "empty"}
    marker = venv / MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except ValueError:
            recorded = None
        if not isinstance(recorded, dict):
            recorded = {}  # damaged: matches no install, so the next one replaces it
        return {"state": "wheels", "marker": recorded, "versions": venv_versions(venv)}
    if (venv / CPU_MARKER).is_file():
        return {"state": "cpu"}
    return {"state": "foreign"}


_VERSIONS = """
import importlib.metadata as m, json, os
out = {}
for name in ("vllm", "torch"):
    try:
        d = m.distribution(name)
        out[name] = {"version": d.version, "where": os.path.realpath(os.path.dirname(str(d.locate_file(name))))}
    except m.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


def venv_versions(venv: Path) -> dict | None:
    """vllm and torch as the venv's Python sees them ({name: {version, where}}), None when it
    does not run: ~0.1 s, no import of either."""
    try:
        proc = subprocess.run([str(venv / "bin" / "python"), "-c", _VERSIONS], capture_output=True, text=True,
                              timeout=60, env=clean_env())
        return json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def probe(venv: Path) -> dict:
    torch = torch_here()
    return {"python": sys.executable, "python_version": platform.python_version(),
            "marker_env": marker_environment(), "torch": torch, "site_dirs": site_dirs(torch),
            "venv": venv_state(venv)}


# --- the install ----------------------------------------------------------------------------

def clean_env() -> dict[str, str]:
    """pip and the venv's Python see the folder and nothing else: no pip configuration (an
    index, find-links or constraint set there), no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def dist_name(wheel_file: str) -> str:
    """A wheel file's distribution name, normalized (PEP 503)."""
    return re.sub(r"[-_.]+", "-", wheel_file.split("-")[0]).lower()


def folder_digest(folder: Path) -> str:
    """One sha256 over the folder's wheels (names and contents): what the controller computed
    from its own copy, so a changed folder or a damaged copy is caught before pip runs."""
    outer = hashlib.sha256()
    for wheel in sorted(folder.glob("*.whl")):
        inner = hashlib.sha256()
        with wheel.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                inner.update(chunk)
        outer.update(f"{wheel.name} {inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def is_installed(venv: Path, identity: dict) -> bool:
    """The venv holds this very install, and its Python still sees the same vllm and torch."""
    state = venv_state(venv)
    if state["state"] != "wheels" or state["marker"].get("identity") != identity:
        return False
    seen = state["versions"] or {}
    return ((seen.get("vllm") or {}).get("version") == identity["vllm"]
            and (seen.get("torch") or {}).get("version") == identity["torch"])


def cleanup(venv: Path) -> list[str]:
    """Remove what an interrupted install left (ours by name), and put a venv moved aside for
    the swap back if the swap never finished."""
    done = []
    new, old = Path(f"{venv}{NEW}"), Path(f"{venv}{OLD}")
    if new.exists():
        shutil.rmtree(new)
        done.append(f"removed {new}")
    if old.exists():
        if venv.exists():
            shutil.rmtree(old)
            done.append(f"removed {old}")
        else:
            old.rename(venv)
            done.append(f"restored {venv}")
    return done


def run(argv: list[str], step: str, fix: str = "") -> None:
    """Run argv, passing its output on line by line; InstallError with its last lines if it fails.
    No timeout of its own: the controller's bounds the whole install."""
    lines: list[str] = []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            say(f"  {line.rstrip()}")
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted, or our output is gone (the controller left)
            proc.kill()
            proc.wait()
    if rc != 0:
        raise InstallError(step, f"`{' '.join(argv[:4])} ...` exited {rc}", fix, "\n".join(lines[-25:]))


def pip_argv(python: str, folder: Path, identity: dict) -> list[str]:
    base = [python, "-m", "pip", "install", "--no-index", "--find-links", str(folder), "--no-cache-dir",
            "--progress-bar", "off", "--no-compile"]
    if identity["no_deps"]:
        # The folder is the whole install (made to complete this machine, as the GPU run's):
        # every wheel in it, but the torch this node already has is not installed again.
        skip = {"torch"} if identity["reuse_torch"] else set()
        return [*base, "--no-deps", *(str(w) for w in sorted(folder.glob("*.whl")) if dist_name(w.name) not in skip)]
    # vLLM and what it requires, resolved from the folder; requirements this Python already
    # meets (through the .pth) stay as they are. torch pinned to the version chosen, so that
    # pip can never swap in another one silently.
    pin = [f"torch=={identity['torch']}"] if identity["torch"] else []
    return [*base, f"vllm=={identity['vllm']}", *pin]


def pip_fix(output: str, python_version: str) -> str:
    """What to do about a failed `pip install`, from what pip said."""
    how = f"(`pip download --only-binary=:all: --python-version {python_version} -d DIR ...`; {HOW_TO_FOLDER})"
    if "No matching distribution" in output or "Could not find a version" in output:
        return (f"the folder lacks a wheel pip asked for (named above): add it {how}, or install the folder "
                "as it is with --no-deps if it was made to complete this machine")
    if "is not a supported wheel on this platform" in output:
        return f"a wheel of the folder was made for another Python or platform (named above): replace it {how}"
    if "ResolutionImpossible" in output or "conflict" in output.lower():
        return f"the folder's wheels require versions that conflict (above): make it again with one resolve {how}"
    return "see pip's error above; the venv being built was removed and nothing else changed"


def relocate(built: Path, venv: Path) -> None:
    """A venv records its own path (console scripts' #! lines, activate, pyvenv.cfg): rewrite it
    from where it was built to where it will live."""
    old, new = str(built).encode(), str(venv).encode()
    for path in [*sorted((built / "bin").iterdir()), built / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data and b"\0" not in data[:1024]:
            path.write_bytes(data.replace(old, new))


def install(venv: Path, folder: Path, identity: dict) -> str:
    """Make `venv` hold vLLM from `folder` as `identity` says; returns the summary line."""
    torch_from = "reused from this node's Python" if identity["reuse_torch"] else "installed from the folder"
    if is_installed(venv, identity):
        how = "reused" if identity["reuse_torch"] else "from the folder"
        return f"vllm {identity['vllm']} (torch {identity['torch']} {how}): already installed in {venv}"
    state = venv_state(venv)["state"]
    if state == "foreign":
        raise InstallError("check the venv", f"{venv} exists and was not made by sparkops",
                           "move it away, or install elsewhere with --set cluster.venv=\"/other/path\"")
    for line in cleanup(venv):
        say(f"leftover of an interrupted install: {line}")
    if not folder.is_dir():
        raise InstallError("read the wheels", f"{folder} is not a directory on this node")
    if folder_digest(folder) != identity["wheels_digest"]:
        raise InstallError("read the wheels", f"the wheels in {folder} differ from the controller's (changed "
                           "since, or a damaged copy)", "run `inv install-vllm` again")
    built = Path(f"{venv}{NEW}")
    built.parent.mkdir(parents=True, exist_ok=True)
    try:
        say(f"creating the virtualenv (aside, in {built})")
        run([sys.executable, "-m", "venv", "--without-pip", str(built)], "create the venv",
            "check that the python named by --python has its venv module (Debian: apt install python3-venv)")
        py = str(built / "bin" / "python")
        if identity["reuse_torch"]:
            purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True, env=clean_env()).stdout.strip()
            dirs = site_dirs(torch_here())
            Path(purelib, PTH).write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in dirs))
            say(f"the venv sees this node's site directories (torch {identity['torch']}): {', '.join(dirs)}")
        has_pip = "import importlib.util, sys; sys.exit(importlib.util.find_spec('pip') is None)"
        if subprocess.run([py, "-c", has_pip], capture_output=True, env=clean_env()).returncode != 0:
            say("bootstrapping pip into the venv (ensurepip, offline)")
            run([py, "-m", "ensurepip"], "bootstrap pip",
                "install pip for the python named by --python (Debian: apt install python3-pip python3-venv)")
        mode = "every wheel of the folder (--no-deps)" if identity["no_deps"] else f"vllm=={identity['vllm']} " \
               "and what it requires"
        say(f"pip install {mode}, offline from {folder}")
        try:
            run(pip_argv(py, folder, identity), "pip install")
        except InstallError as exc:
            exc.fix = pip_fix(exc.tail, platform.python_version())
            raise
        seen = venv_versions(built) or {}
        vllm, torch = seen.get("vllm") or {}, seen.get("torch") or {}
        inside = str(torch.get("where", "")).startswith(os.path.realpath(built) + os.sep)
        torch_wrong = identity["torch"] and (torch.get("version") != identity["torch"]
                                             or inside == identity["reuse_torch"])
        if vllm.get("version") != identity["vllm"] or torch_wrong:
            raise InstallError("verify", f"the new venv sees vllm {vllm.get('version')} and torch "
                               f"{torch.get('version')} ({'in the venv' if inside else torch.get('where')}), "
                               f"not vllm {identity['vllm']} with torch {identity['torch']} {torch_from}")
        marker = {"identity": identity, "torch_where": torch.get("where")}
        (built / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        relocate(built, venv)
        if venv.exists():  # a previous install (ours, or the CPU build's): swapped out, then removed
            venv.rename(f"{venv}{OLD}")
        built.rename(venv)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        print(f"failed: removed {built}", file=sys.stderr)
        raise
    cleanup(venv)
    compile_bytecode(venv)
    return f"vllm {identity['vllm']} with torch {identity['torch']} ({torch_from}) installed in {venv}"


def compile_bytecode(venv: Path) -> None:
    """What pip's own compile step does, done where the venv now lives: pip ran with
    --no-compile in the aside folder, whose path compiled files would carry into every
    traceback. Without them each `vllm serve` would compile vLLM's sources again wherever
    PYTHONDONTWRITEBYTECODE is set. A file that does not compile (one written for another
    Python) is left to the import that needs it, as pip leaves it."""
    say("compiling the venv's Python files")
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", str(venv / "lib")],
                          capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        say(f"  some files did not compile (imports compile them when needed): {done.stdout.strip()[-300:]}")


def _stop(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("probe", "install", "cleanup"))
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--wheels", type=Path, help="install: the folder of wheels on this node")
    parser.add_argument("--identity", help="install: what to install, as JSON (from the controller)")
    args = parser.parse_args(argv)
    venv = Path(os.path.abspath(args.venv))
    if args.command == "probe":
        print(json.dumps(probe(venv)))
        return 0
    if args.command == "cleanup":
        for line in cleanup(venv):
            say(line)
        return 0
    # The controller gone (SIGHUP, SIGTERM) or Ctrl-C: the aside venv is removed on the way out.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        say(install(venv, Path(os.path.abspath(args.wheels)), json.loads(args.identity)))
    except KeyboardInterrupt:
        print("error: interrupted: the venv being built aside was removed", file=sys.stderr)
        return 130
    except InstallError as exc:
        if exc.tail:
            print(exc.tail, file=sys.stderr)
        print(f"error: {exc.step}: {exc.cause}", file=sys.stderr)
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
