"""The facts probe: one shell script per node, split into sections, parsed into NodeFacts.

The script runs here for real (it only reads: hostname, /proc, ip, ss, df); a Spark's output
is assembled from the recordings under tests/data/facts (see SOURCES.md there).
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.facts import probe
from sparkops.facts.gather import facts_from_sections, parse_ss_listen
from sparkops.facts.parsers import parse_ip_addr, parse_meminfo
from sparkops.facts.roce import select_roce
from sparkops.facts.types import ModelBlobs
from sparkops.node_scripts.hf_cache import repo_folder

DATA = Path(__file__).parent / "data" / "facts"


# --- the real script, on this machine ----------------------------------------------------------

@pytest.fixture
def local_probe(tmp_path):
    if not all(shutil.which(tool) for tool in ("sh", "ip", "ss", "df", "hostname")):
        pytest.skip("needs sh, ip, ss, df and hostname")
    home = tmp_path / "home"
    home.mkdir()
    hf_home = tmp_path / "hf"
    snapshot = hf_home / "hub" / repo_folder("example/tiny") / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir()
    (blobs / "aaa").write_bytes(b"x" * 1000)
    (blobs / "bbb.incomplete").write_bytes(b"x" * 24)  # a download cut short
    with socket.socket() as listener:  # a port the probe must report as in use
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        argv = probe.argv(str(hf_home), repo_folder("example/tiny"), str(tmp_path / "no-venv"),
                          "sparkops/none:latest", "native")
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "HOME": str(home)})
        port = listener.getsockname()[1]
    return done, home, port


def test_probe_runs_here_and_reports_every_section(local_probe):
    done, _, _ = local_probe
    assert done.returncode == 0, done.stderr
    sections = probe.split_sections(done.stdout)
    assert list(sections) == list(probe._SECTIONS)
    for name in ("hostname", "user", "home", "clock", "ip", "meminfo", "df", "ports", "model"):
        assert sections[name][0] == 0, (name, sections[name])
    # docker-only sections are skipped (exit 1) under the native runtime; no venv here either.
    assert sections["docker-version"] == (1, "")
    assert sections["vllm"][0] != 0


def test_facts_from_the_local_probe(local_probe):
    done, home, port = local_probe
    facts = facts_from_sections("here", probe.split_sections(done.stdout))
    assert facts.node == "here" and facts.source == "live"
    assert facts.hostname == socket.gethostname()
    assert facts.user == getpass.getuser()
    assert facts.home == str(home)
    assert facts.interfaces["lo"].ipv4[0] == ("127.0.0.1", 8)
    meminfo = parse_meminfo(Path("/proc/meminfo").read_text())
    assert facts.memory.total_bytes == meminfo.total_bytes
    assert 0 < facts.memory.available_bytes <= facts.memory.total_bytes
    # MemFree and the page cache too: on unified memory they decide whether vLLM may start.
    assert 0 < facts.memory.free_bytes <= facts.memory.available_bytes
    assert facts.memory.cached_bytes is not None and facts.memory.buffers_bytes is not None
    assert facts.disk.total_bytes > 0  # df walked up from the hf_home/hub path
    assert facts.model_present is True
    assert facts.model_blobs == ModelBlobs(files=2, bytes=1024, incomplete=1)
    assert port in facts.ports_in_use
    assert abs(facts.clock - time.time()) < 60
    assert not {"hostname", "ip", "meminfo"} & facts.errors.keys()


def test_probe_inputs_are_parameters_not_script_text(tmp_path):
    """A hostile path reaches the script as $1, never as code: the script is the same text."""
    hostile = str(tmp_path / "x'; touch pwned; echo '")
    argv = probe.argv(hostile, "models--a--b", "/nonexistent", "img", "native")
    assert argv[2] == probe.script() and argv[4] == hostile
    subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert not (tmp_path / "pwned").exists()


# --- a node without ip, ss or hostname: the fallbacks, for real --------------------------------

HIDDEN = ("ip", "ss", "hostname")


def shadow_path(tmp_path: Path, hide: tuple[str, ...], python: str | None) -> str:
    """A PATH of one folder holding a link to every command on this PATH except `hide` (the
    first of each name wins, as a shell would pick it), python3 pointing at `python` or absent."""
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            target = os.path.join(folder, name)
            if name in hide or name.startswith("python") or (shadow / name).exists():
                continue
            if os.path.isfile(target) and os.access(target, os.X_OK):
                (shadow / name).symlink_to(target)
    if python:
        (shadow / "python3").symlink_to(python)
    for tool in (*hide, "python3"):
        assert shutil.which(tool, path=str(shadow)) == (str(shadow / "python3") if tool == "python3" and python
                                                        else None)
    return str(shadow)


def run_probe(path: str, venv: str, only=None) -> dict:
    done = subprocess.run(probe.argv("/nonexistent", "m", venv, "img", "native", only=only),
                          capture_output=True, text=True, timeout=30, env={**os.environ, "PATH": path})
    return probe.split_sections(done.stdout)


def listening_ports_by_ss() -> set[int]:
    return set(parse_ss_listen(subprocess.run(["ss", "-Htln"], capture_output=True, text=True, check=True).stdout))


def test_without_ip_ss_and_hostname_the_probe_reads_the_kernel(tmp_path):
    """The GPU machine had no `ip`, `ss` nor `hostname`: the probe reads /sys/class/net (with
    python3's ioctls), /proc/net/tcp{,6} and /proc/sys/kernel/hostname instead, and its facts
    are those the tools give, compared here against the real `ip -j addr` and `ss -Htln`."""
    if not all(shutil.which(t) for t in HIDDEN):
        pytest.skip("the comparison needs ip, ss and hostname here")
    path = shadow_path(tmp_path, HIDDEN, sys.executable)
    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
        for sock, host in ((v4, "127.0.0.1"), (v6, "::1")):
            sock.bind((host, 0))
            sock.listen()
        ours = {v4.getsockname()[1], v6.getsockname()[1]}
        for _ in range(5):  # other processes open and close ports meanwhile: a calm moment agrees
            fallback = facts_from_sections("here", run_probe(path, "/nonexistent"))
            by_ss = listening_ports_by_ss()
            if set(fallback.ports_in_use) == by_ss:
                break
    assert not {"ip", "ports", "hostname"} & fallback.errors.keys(), fallback.errors
    assert fallback.unknown == {}
    assert ours <= set(fallback.ports_in_use)
    assert set(fallback.ports_in_use) == by_ss
    assert fallback.hostname == socket.gethostname()
    real = parse_ip_addr(subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                                        check=True).stdout)
    assert fallback.interfaces.keys() == real.keys()
    for name, iface in real.items():
        got = fallback.interfaces[name]
        # ioctl gives the primary IPv4 address only: `ip` lists it first
        assert (got.state, got.mtu, got.mac, got.ipv4) == (iface.state, iface.mtu, iface.mac, iface.ipv4[:1]), name
    assert fallback.interfaces["lo"].ipv4 == (("127.0.0.1", 8),)


def test_without_python_either_interfaces_are_unknown_and_say_why(tmp_path):
    """No `ip` and no python3 (nor a virtualenv's): the interfaces are unknown, not an error;
    a single node plans without them, two nodes refuse naming the fix."""
    path = shadow_path(tmp_path, HIDDEN, None)
    facts = facts_from_sections("gpu", run_probe(path, str(tmp_path / "no-venv"), only=("ip", "hostname", "ports")))
    assert not {"ip", "ports", "hostname"} & facts.errors.keys(), facts.errors
    assert facts.unknown == {"ip": "no `ip` command (iproute2) and no python3 to read the interfaces with"}
    assert facts.interfaces == {} and facts.hostname == socket.gethostname()
    with pytest.raises(SparkopsError) as err:
        select_roce(facts, {"name": "gpu", "host": "local"}, {})
    assert "network interfaces are unknown (no `ip` command" in err.value.message
    assert "install iproute2 on gpu" in err.value.fix and "roce_interface and roce_ip" in err.value.fix
    # the virtualenv's python is the second way
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    again = facts_from_sections("gpu", run_probe(path, str(venv), only=("ip",)))
    assert again.unknown == {} and again.interfaces["lo"].ipv4 == (("127.0.0.1", 8),)


def test_two_nodes_with_unknown_interfaces_refuse_naming_the_fix(tmp_path, isolated_override):
    """A pair needs each node's RoCE interface and address: unknown interfaces stop its plan and
    fail its network check with the fix, where one node went on (above)."""
    from dataclasses import replace

    from sparkops.checks import network
    from sparkops.config import load_config
    from sparkops.plan import plan_up
    from sparkops.plan.context import contexts
    path = shadow_path(tmp_path, HIDDEN, None)
    here = facts_from_sections("x", run_probe(path, str(tmp_path / "no-venv"), only=("ip", "hostname")))
    cfg = load_config("smoke", "sim", environ={})
    facts = {n["name"]: replace(here, node=n["name"]) for n in cfg.nodes}
    with pytest.raises(SparkopsError) as err:
        plan_up(cfg, facts)
    assert (err.value.host, err.value.step) == ("spark-a", "facts")
    assert "install iproute2 on spark-a" in err.value.fix
    _, found = network.checks(cfg, contexts(cfg, facts))
    links = [c for c in found if c.name == "roce.link"]
    assert [(c.node, c.status) for c in links] == [("spark-a", "fail"), ("spark-b", "fail")]
    assert "network interfaces are unknown" in links[0].message and "iproute2" in links[0].fix
    # Pinned in the cluster file, the address is known: the plan goes on, the link's state is still unknown.
    pinned = load_config("smoke", "sim", environ={}, sets=[
        'cluster.nodes=[{name="spark-a", host="10.77.0.11", roce_interface="veth0", roce_ip="10.0.0.1"},'
        ' {name="spark-b", host="10.77.0.12", roce_interface="veth0", roce_ip="10.0.0.2"}]'])
    assert "VLLM_HOST_IP=10.0.0.1" in json.dumps(plan_up(pinned, facts).as_dict())
    _, found = network.checks(pinned, contexts(pinned, facts))
    assert "veth0: its state is unknown (no `ip` command" in next(c.message for c in found if c.name == "roce.link")


def test_a_section_that_cannot_tell_is_unknown_not_an_error():
    text = spark_probe_output().replace("=== /ports rc=0", f"=== /ports rc={probe.UNKNOWN}")
    facts = facts_from_sections("spark-1", probe.split_sections(text))
    assert "ports" not in facts.errors and facts.unknown["ports"].startswith("LISTEN")  # the body says why
    assert facts.ports_in_use == ()


# --- a Spark's output, assembled from recordings -------------------------------------------

def recorded(fact: str, case: str) -> str:
    return (DATA / fact / f"{case}.txt").read_text().rstrip("\n")


def section(name: str, body: str, rc: int = 0) -> str:
    return f"=== {name}\n{body}\n=== /{name} rc={rc}\n" if body else f"=== {name}\n=== /{name} rc={rc}\n"


def spark_probe_output() -> str:
    """What the probe prints on a DGX Spark. nvidia-smi, ibdev2netdev, ip and meminfo are the
    recordings in tests/data/facts (the 'hutch' Spark and NVIDIA's playbook, port-1 twins Up);
    sysfs-roce is the recorded-values GID-drift case; df is the x86 sandbox recording. The
    user, clock, link speeds, ss lines, Docker answers and model path are typical values, not
    recordings."""
    return "".join([
        section("hostname", "hutch"),
        section("user", "ubuntu"),
        section("ids", "1000 1000"),
        section("home", "/home/ubuntu"),
        section("clock", "1778000000.250000000"),
        section("cpus", "20"),
        section("nvidia-smi", recorded("nvidia_smi_query", "gb10_hutch_composed")),
        section("ibdev2netdev", recorded("ibdev2netdev", "spark_port1_twins_up")),
        section("sysfs-roce", recorded("sysfs_roce", "spark_gid_drift_twin_index4")),
        section("ip", recorded("ip_addr", "spark_hutch_constructed")),
        section("net-speed", "enP2p1s0f0np0 \nenP2p1s0f1np1 200000\nenP7s7 1000\n"
                             "enp1s0f0np0 \nenp1s0f1np1 200000\nlo \nwlP9s9 "),
        section("meminfo", recorded("meminfo", "spark_nvitop_pr208")),
        section("df", recorded("df", "x86_dev_sandbox_root")),
        section("ports", "LISTEN 0      4096         0.0.0.0:22        0.0.0.0:*\n"
                         "LISTEN 0      4096            [::]:22           [::]:*"),
        section("docker-version", "28.5.1"),
        section("docker-runtimes", '{"io.containerd.runc.v2":{"path":"runc"},"nvidia":'
                                   '{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}'),
        section("image-id", "Error response from daemon: No such image: sparkops/vllm:spark", 1),
        section("vllm", "", 1),
        section("model", "/home/ubuntu/.cache/huggingface/hub/models--openai--gpt-oss-120b/"
                         "snapshots/b5c939de8f754692c1647ca79fbf85e8c1e70f8a/config.json"),
        section("foreign-files", "root /home/ubuntu/.cache/huggingface/hub/models--openai--gpt-oss-120b/"
                                 "refs/main"),
        section("model-blobs", "24 65264381036 0"),
    ])


def test_a_probe_of_a_few_sections_reads_only_those(local_probe):
    done = subprocess.run(probe.argv("/nonexistent", "m", "/v", "img", "native", only=("cpus", "ip")),
                          capture_output=True, text=True, timeout=30)
    sections = probe.split_sections(done.stdout)
    assert list(sections) == ["cpus", "ip"] and int(sections["cpus"][1]) == os.cpu_count()
    facts = facts_from_sections("here", sections)
    assert facts.cpus == os.cpu_count() and facts.interfaces and facts.gpus == ()


def test_split_sections_of_a_spark():
    sections = probe.split_sections(spark_probe_output())
    assert list(sections) == list(probe._SECTIONS)
    assert sections["hostname"] == (0, "hutch")
    assert sections["vllm"] == (1, "")
    assert sections["ibdev2netdev"][1].splitlines()[1] == "roceP2p1s0f1 port 1 ==> enP2p1s0f1np1 (Up)"


def test_facts_of_a_spark_from_recorded_output():
    facts = facts_from_sections("spark-1", probe.split_sections(spark_probe_output()))
    assert facts.errors == {}
    assert (facts.hostname, facts.user, facts.home) == ("hutch", "ubuntu", "/home/ubuntu")
    assert (facts.uid, facts.gid) == (1000, 1000)
    assert facts.foreign_files == ("root /home/ubuntu/.cache/huggingface/hub/models--openai--gpt-oss-120b/refs/main",)
    assert facts.cpus == 20
    (gpu,) = facts.gpus
    assert (gpu.name, gpu.driver, gpu.compute_cap) == ("NVIDIA GB10", "580.142", "12.1")
    assert gpu.memory_total_mib is None  # unified memory: nvidia-smi says [N/A]
    assert facts.memory.total_bytes == 127600748 * 1024
    assert facts.memory_gib == pytest.approx(121.69, abs=0.01)
    assert [(l.hca, l.up) for l in facts.roce] == [
        ("roceP2p1s0f0", False), ("roceP2p1s0f1", True), ("rocep1s0f0", False), ("rocep1s0f1", True)]
    assert facts.gid_index == {"roceP2p1s0f1": 4, "rocep1s0f1": 3}
    assert facts.interfaces["enp1s0f1np1"].ipv4 == (("169.254.127.30", 16),)
    assert facts.interfaces["enp1s0f1np1"].mtu == 9000
    assert facts.link_speed_mbps == {"enP2p1s0f1np1": 200000, "enP7s7": 1000, "enp1s0f1np1": 200000}
    assert facts.docker_version == "28.5.1"
    assert facts.docker_runtimes == ("io.containerd.runc.v2", "nvidia", "runc")
    assert facts.image_id is None and facts.vllm_version is None
    assert facts.model_present is True
    assert facts.model_blobs == ModelBlobs(files=24, bytes=65264381036, incomplete=0)
    assert facts.ports_in_use == (22,)
    assert facts.clock == 1778000000.25
    # And the planner's choice from them: the plain interface, both twins, no common GID index.
    choice = select_roce(facts, {"name": "spark-1", "host": "local"}, {})
    assert (choice.interface, choice.ip) == ("enp1s0f1np1", "169.254.127.30")
    assert choice.hcas == ("roceP2p1s0f1", "rocep1s0f1")
    assert choice.gid_index is None


def test_missing_and_failed_sections_become_errors_not_guesses():
    text = spark_probe_output()
    text = text.replace("=== /ip rc=0", "=== /ip rc=2")          # `ip` failed
    text = text.replace(section("meminfo", recorded("meminfo", "spark_nvitop_pr208")), "")  # cut off
    text = text.replace("0, NVIDIA GB10, 580.142, [N/A], [N/A], 12.1", "garbage")
    facts = facts_from_sections("spark-1", probe.split_sections(text))
    assert facts.errors["ip"].startswith("exit 2: ")
    assert facts.errors["meminfo"] == "not reported"
    assert "nvidia-smi" in facts.errors["nvidia-smi"] and "garbage" in facts.errors["nvidia-smi"]
    assert facts.interfaces == {} and facts.memory is None and facts.gpus == ()
    assert "ibdev2netdev" not in facts.errors  # exit 127 (tool absent) is not an error


def test_split_sections_keeps_bodies_that_look_like_markers():
    text = section("a", "=== b\nline") + section("b", "x\n=== /a rc=0 (not the end)") + "noise\n"
    assert probe.split_sections(text) == {"a": (0, "=== b\nline"), "b": (0, "x\n=== /a rc=0 (not the end)")}


# --- ss -Htln --------------------------------------------------------------------------------

def test_parse_ss_listen():
    text = """\
LISTEN 0      4096         0.0.0.0:22        0.0.0.0:*
LISTEN 0      511        127.0.0.1:8000      0.0.0.0:*
LISTEN 0      4096            [::]:22           [::]:*
LISTEN 0      128      [::ffff:127.0.0.1]:6379      *:*
LISTEN 0      4096   127.0.0.53%lo:53        0.0.0.0:*
LISTEN 0      4096   [fe80::1]%enp1s0f1np1:29501     [::]:*
LISTEN 0      4096               *:8265             *:*
"""
    assert parse_ss_listen(text) == (22, 53, 6379, 8000, 8265, 29501)


def test_parse_ss_listen_ignores_headers_and_blank_output():
    assert parse_ss_listen("") == ()
    header = "State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess\n"
    assert parse_ss_listen(header + "LISTEN 0 4096 0.0.0.0:22 0.0.0.0:*\n") == (22,)


def test_the_probe_finds_files_in_the_caches_that_the_user_does_not_own(tmp_path):
    """A container that ran as root leaves root's files in the user's caches: the probe lists
    them (owner and path, the first few), run here for real on files another user owns."""
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    hf, cache = tmp_path / "hf", tmp_path / "cache"
    (hf / "hub").mkdir(parents=True)
    (cache / "vllm").mkdir(parents=True)
    (hf / "hub" / "mine").write_text("x")
    theirs = cache / "vllm" / "theirs"
    theirs.write_text("y")
    os.chown(theirs, 65534, 65534)
    done = subprocess.run(probe.argv(str(hf), "m", "/v", "img", "native", only=("ids", "foreign-files"),
                                     cache_dir=str(cache)), capture_output=True, text=True, timeout=30)
    facts = facts_from_sections("here", probe.split_sections(done.stdout))
    assert (facts.uid, facts.gid) == (os.getuid(), os.getgid())
    assert len(facts.foreign_files) == 1 and facts.foreign_files[0].endswith(f" {theirs}"), facts.foreign_files
    os.chown(theirs, 0, 0)
    again = subprocess.run(probe.argv(str(hf), "m", "/v", "img", "native", only=("foreign-files",),
                                      cache_dir=str(cache)), capture_output=True, text=True, timeout=30)
    assert facts_from_sections("here", probe.split_sections(again.stdout)).foreign_files == ()
