"""Fact parsers against output recorded from real machines (tests/data/facts/SOURCES.md),
the sysfs script against fake sysfs trees, and the simulation's stand-in tools."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from sparkops.facts.nccl_log import parse_nccl_log
from sparkops.facts.parsers import (
    IP_ADDR_ARGV,
    NVIDIA_SMI_QUERY_ARGV,
    df_argv,
    parse_df,
    parse_ibdev2netdev,
    parse_ip_addr,
    parse_meminfo,
    parse_nvidia_smi_query,
    parse_sysfs_roce,
    sysfs_roce_argv,
)
from sparkops.facts.types import Gpu, RoceLink

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "facts"
STANDINS = ROOT / "sparkops" / "sim" / "standins"
RECORDED = ROOT / "sparkops" / "sim" / "recorded"


def _sysfs(text: str) -> dict:
    links, gid_index = parse_sysfs_roce(text)
    return {"links": links, "gid_index": gid_index}


PARSERS = {
    "nvidia_smi_query": parse_nvidia_smi_query,
    "ibdev2netdev": parse_ibdev2netdev,
    "sysfs_roce": _sysfs,
    "ip_addr": parse_ip_addr,
    "meminfo": parse_meminfo,
    "df": parse_df,
    "nccl_log": parse_nccl_log,
}


def jsonable(value):
    if dataclasses.is_dataclass(value):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def recorded_cases() -> list:
    return [pytest.param(path, id=f"{path.parent.name}/{path.stem}") for path in sorted(DATA.glob("*/*.txt"))]


@pytest.mark.parametrize("path", recorded_cases())
def test_recorded_output_parses_to_expected(path: Path):
    args_file = path.with_suffix(".args.json")
    kwargs = json.loads(args_file.read_text()) if args_file.exists() else {}
    parsed = PARSERS[path.parent.name](path.read_text(), **kwargs)
    expected = json.loads(path.with_suffix(".expected.json").read_text())
    assert jsonable(parsed) == expected


def test_every_recorded_case_has_a_source_entry():
    sources = (DATA / "SOURCES.md").read_text()
    for path in DATA.glob("*/*.txt"):
        assert f"{path.parent.name}/{path.name}" in sources, path


# --- nvidia-smi ---------------------------------------------------------------


def test_gb10_unified_memory_reads_as_none():
    line = "0, NVIDIA GB10, 580.95.05, Not Supported, [Not Supported], 12.1\n"
    gpus = parse_nvidia_smi_query(line)
    assert gpus == [Gpu(0, "NVIDIA GB10", "580.95.05", None, None, "12.1")]


def test_extra_whitespace_and_units_are_tolerated():
    line = "  1 ,  NVIDIA H100 80GB HBM3 , 565.57.01 ,  81559 MiB , 1 MiB , 9.0  \n\n"
    gpus = parse_nvidia_smi_query(line)
    assert gpus == [Gpu(1, "NVIDIA H100 80GB HBM3", "565.57.01", 81559, 1, "9.0")]


@pytest.mark.parametrize(
    "text, fragment",
    [
        # What nvidia-smi prints when the driver is not loaded.
        (
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.\n",
            "NVIDIA-SMI has failed",
        ),
        ("0, NVIDIA GB10, 580.142\n", "0, NVIDIA GB10, 580.142"),
        ("zero, NVIDIA GB10, 580.142, [N/A], [N/A], 12.1\n", "zero"),
        ("0, NVIDIA GB10, 580.142, lots, [N/A], 12.1\n", "lots"),
    ],
)
def test_bad_nvidia_smi_output_names_the_line(text, fragment):
    with pytest.raises(ValueError, match="nvidia-smi") as err:
        parse_nvidia_smi_query(text)
    assert fragment in str(err.value)


def test_query_argv_matches_the_default_fields():
    assert NVIDIA_SMI_QUERY_ARGV == [
        "nvidia-smi",
        "--query-gpu=index,name,driver_version,memory.total,memory.used,compute_cap",
        "--format=csv,noheader,nounits",
    ]


# --- ibdev2netdev / sysfs -----------------------------------------------------------


def test_ibdev2netdev_rejects_garbage_naming_the_line():
    with pytest.raises(ValueError, match="bash: ibdev2netdev: command not found"):
        parse_ibdev2netdev("bash: ibdev2netdev: command not found\n")


def _build_tree(root: Path, spec: dict) -> None:
    for rel in spec["dirs"]:
        (root / rel).mkdir(parents=True, exist_ok=True)
    for rel, content in spec["files"].items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)


@pytest.mark.parametrize("tree", sorted(DATA.glob("sysfs_roce/*.tree.json")), ids=lambda p: p.stem)
def test_sysfs_script_against_fake_tree(tree: Path, tmp_path: Path):
    _build_tree(tmp_path, json.loads(tree.read_text()))
    out = subprocess.run(sysfs_roce_argv(str(tmp_path)), capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    recorded = tree.with_name(tree.name.removesuffix(".tree.json") + ".txt")
    assert out.stdout == recorded.read_text()


def test_sysfs_script_without_infiniband_prints_nothing(tmp_path: Path):
    out = subprocess.run(sysfs_roce_argv(str(tmp_path)), capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stdout) == (0, "")
    assert parse_sysfs_roce(out.stdout) == ([], {})


def test_sysfs_parse_rejects_unknown_lines():
    with pytest.raises(ValueError, match="sh: 1: cannot open"):
        parse_sysfs_roce("sh: 1: cannot open /sys: No such file\n")


# --- ip / meminfo / df ----------------------------------------------------------------


def test_ip_addr_rejects_non_json():
    with pytest.raises(ValueError, match="not JSON"):
        parse_ip_addr("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536")
    assert IP_ADDR_ARGV == ["ip", "-j", "addr", "show"]


def test_meminfo_needs_available():
    with pytest.raises(ValueError, match="MemAvailable"):
        parse_meminfo("MemTotal:       127600748 kB\n")


def test_df_argv_and_bad_output():
    assert df_argv("/srv/models") == ["df", "-P", "-B1", "--", "/srv/models"]
    with pytest.raises(ValueError, match="df: "):
        parse_df("df: /nope: No such file or directory\n")


# --- NCCL ---------------------------------------------------------------------------------


def test_single_node_socket_net_is_not_a_fallback():
    log = (
        "h:1:1 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.2<0>\n"
        "h:1:1 [0] NCCL INFO Using network Socket\n"
        "h:1:2 [0] NCCL INFO comm 0x1 rank 0 nRanks 2 nNodes 1 localRanks 2 localRank 0 MNNVL 0\n"
        "h:1:2 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM\n"
    )
    report = parse_nccl_log(log)
    assert report.transports == {"P2P"} and not report.fell_back_to_socket


# --- stand-ins ------------------------------------------------------------------------------


def _run(tool: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(STANDINS / tool), *args],
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, **(env or {})},
    )


def test_nvidia_smi_standin_table_and_list_are_the_recordings():
    table = _run("nvidia-smi")
    assert table.returncode == 0
    assert table.stdout == (RECORDED / "nvidia-smi-gb10.txt").read_text()
    assert "Not Supported" in table.stdout
    listing = _run("nvidia-smi", "-L")
    assert listing.stdout.startswith("GPU 0: NVIDIA GB10 (UUID: GPU-")


def test_nvidia_smi_standin_answers_the_fact_query():
    out = _run(*NVIDIA_SMI_QUERY_ARGV)
    assert out.returncode == 0
    gpus = parse_nvidia_smi_query(out.stdout)
    assert gpus == [Gpu(0, "NVIDIA GB10", "580.142", None, None, "12.1")]


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("csv,noheader", "NVIDIA GB10\n"),
        ("csv,noheader,nounits", "NVIDIA GB10\n"),
        ("csv", "name\nNVIDIA GB10\n"),
    ],
)
def test_nvidia_smi_standin_name_query(fmt, expected):
    out = _run("nvidia-smi", "--query-gpu=name", f"--format={fmt}")
    assert (out.returncode, out.stdout) == (0, expected)


def test_nvidia_smi_standin_header_with_units_matches_real_gb10():
    out = _run("nvidia-smi", "--query-gpu=index,name,memory.total,memory.free", "--format=csv")
    # Same bytes as the GB10 recording in unslothai/unsloth#10703.
    assert out.stdout == (DATA / "nvidia_smi_query" / "gb10_unsloth_header.txt").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--query-gpu=id", "--format=csv"], 'Field "id" is not a valid field to query.'),
        (["--query-gpu=name"], "Invalid combination of input arguments"),
        (["--frobnicate"], "Invalid combination of input arguments"),
    ],
)
def test_nvidia_smi_standin_rejects_like_the_real_tool(args, message):
    out = _run("nvidia-smi", *args)
    assert out.returncode == 2 and message in out.stdout


def _net(tmp_path: Path, states: dict[str, str]) -> dict:
    for name, state in states.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "operstate").write_text(state + "\n")
    return {"SPARKOPS_SIM_NET_ROOT": str(tmp_path)}


def test_ibdev2netdev_standin_follows_link_state(tmp_path: Path):
    env = _net(tmp_path, {"enp1s0f1np1": "up", "enP2p1s0f1np1": "up", "enp1s0f0np0": "down"})
    links = parse_ibdev2netdev(_run("ibdev2netdev", env=env).stdout)
    assert links == parse_ibdev2netdev((RECORDED / "ibdev2netdev-spark.txt").read_text())
    (tmp_path / "enP2p1s0f1np1" / "operstate").write_text("lowerlayerdown\n")
    links = parse_ibdev2netdev(_run("ibdev2netdev", env=env).stdout)
    assert [link.hca for link in links if link.up] == ["rocep1s0f1"]
    assert RoceLink("roceP2p1s0f1", 1, "enP2p1s0f1np1", False) in links


def test_ibdev2netdev_standin_missing_interfaces_are_down(tmp_path: Path):
    out = _run("ibdev2netdev", env={"SPARKOPS_SIM_NET_ROOT": str(tmp_path)})
    links = parse_ibdev2netdev(out.stdout)
    assert len(links) == 4 and not any(link.up for link in links)
