"""`inv check` and `up`'s preflight: every check from recorded facts (pure), the reachability
probe's parser, the all-reduce result and transport analysis from recorded NCCL output, log
scanning, and the report's table and files.

Facts are profiles/clusters/spark-pair.facts.json (two recorded DGX Sparks: GB10 with
`[N/A]` memory, port-1 twins Up, 169.254.127.30/.31 on enp1s0f1np1, MTU 9000), changed one
field at a time to make each failure."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sparkops.base.errors import ConnectError
from sparkops.checks import logs, nccl, network, profile, quick, reach
from sparkops.checks.api import checks as api_checks
from sparkops.checks.preflight import preflight
from sparkops.checks.render import markdown, table, write_report
from sparkops.checks.result import CLUSTER, Check, CheckReport, worst
from sparkops.config import load_config
from sparkops.facts.recorded import recorded_facts
from sparkops.facts.types import DiskFree, Interface, ModelBlobs, RoceLink
from sparkops.node_scripts import allreduce
from sparkops.plan.context import contexts

ROOT = Path(__file__).resolve().parent.parent
NCCL_LOGS = ROOT / "tests" / "data" / "facts" / "nccl_log"
GIB = 1024 ** 3


@pytest.fixture(autouse=True)
def _isolated(isolated_override):
    """No developer override, no SPARKOPS_* variables."""


KEY = "sparkops-test-key"


def configure(*sets: str, profile: str = "gpt-oss-120b", cluster: str = "spark-pair", api_key: str | None = KEY):
    """A config as after `inv setup`, which makes an API key (api_key=None: as before it)."""
    return load_config(profile, cluster, root=ROOT, sets=list(sets),
                       environ={"VLLM_API_KEY": api_key} if api_key else {})


def spark_facts(cfg=None, **changes):
    """Recorded facts; changes = {node: {field: value or callable(old) -> new}}."""
    facts, _ = recorded_facts(cfg or configure())
    for node, fields in changes.items():
        new = {k: (v(getattr(facts[node], k)) if callable(v) else v) for k, v in fields.items()}
        facts[node] = dataclasses.replace(facts[node], **new)
    return facts


def ctxs_of(cfg, facts):
    return contexts(cfg, facts, all_nodes=True)


def only(checks: list[Check], name: str, node: str | None = None) -> Check:
    found = [c for c in checks if c.name == name and (node is None or c.node == node)]
    assert len(found) == 1, (name, node, [c.render() for c in checks])
    return found[0]


def with_iface(**changes):
    """A change of the RoCE interface enp1s0f1np1 in a node's facts."""
    return lambda ifaces: {**ifaces, "enp1s0f1np1": dataclasses.replace(ifaces["enp1s0f1np1"], **changes)}


# --- quick ----------------------------------------------------------------------------------

def test_gb10_memory_na_is_read_from_meminfo_not_an_error():
    cfg = configure()
    checks = quick.gpu(cfg, ctxs_of(cfg, spark_facts(cfg)))
    gpu = only(checks, "gpu", "spark-1")
    assert gpu.status == "ok"
    assert "NVIDIA GB10" in gpu.message and "580.142" in gpu.message
    assert "unified memory 121.7 GiB" in gpu.message and "[N/A]" in gpu.message
    assert gpu.evidence["gpus"][0]["memory_total_mib"] is None


def test_gpu_missing_fails_and_a_590_driver_on_gb10_warns():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-2": {"gpus": ()},
                                "spark-1": {"gpus": lambda g: (dataclasses.replace(g[0], driver="590.44.01"),)}})
    checks = quick.gpu(cfg, ctxs_of(cfg, facts))
    assert only(checks, "gpu", "spark-2").status == "fail"
    assert "nvidia-smi shows 0" in only(checks, "gpu", "spark-2").message
    warned = only(checks, "gpu", "spark-1")
    assert warned.status == "warn" and "580.x" in warned.fix


def test_docker_runtime_image_and_image_agreement():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-1": {"image_id": "sha256:" + "a" * 64},
                                "spark-2": {"image_id": "sha256:" + "b" * 64, "docker_runtimes": ("runc",)}})
    ctxs = ctxs_of(cfg, facts)
    checks = quick.runtime(cfg, ctxs) + quick.image_agree(cfg, ctxs)
    assert only(checks, "runtime", "spark-1").status == "ok"
    no_nvidia = [c for c in checks if c.node == "spark-2" and c.name == "runtime"]
    assert [c.message for c in no_nvidia] == ["Docker has no NVIDIA runtime"]
    assert "nvidia-ctk" in no_nvidia[0].fix
    differ = only(checks, "image.same", CLUSTER)
    assert differ.status == "fail" and "inv build" in differ.fix


def test_native_runtime_needs_vllm_in_the_venv():
    cfg = configure('cluster.runtime="native"', 'cluster.accelerator="cpu"')
    facts = spark_facts(cfg, **{"spark-1": {"vllm_version": "0.32.0"}})
    checks = quick.runtime(cfg, ctxs_of(cfg, facts))
    assert only(checks, "runtime", "spark-1").status == "ok"
    missing = only(checks, "runtime", "spark-2")
    assert missing.status == "fail" and "install-vllm" in missing.fix


def test_disk_against_the_profiles_download():
    cfg = configure()  # gpt-oss-120b: 65.3 GB download
    facts = spark_facts(cfg, **{
        "spark-1": {"disk": DiskFree("/", 1000 * GIB, 500 * GIB)},
        "spark-2": {"disk": DiskFree("/", 1000 * GIB, 40 * GIB), "model_present": False}})
    checks = quick.disk(cfg, ctxs_of(cfg, facts), download_gb=cfg.model["download_gb"])
    assert only(checks, "disk", "spark-1").status == "ok"
    short = only(checks, "disk", "spark-2")
    assert short.status == "fail" and "the model needs 60.8 GiB" in short.message
    # Without a profile only a generic minimum applies, and the model is not counted.
    assert only(quick.disk(cfg, ctxs_of(cfg, facts)), "disk", "spark-2").status == "ok"
    unread = only(quick.disk(cfg, ctxs_of(cfg, spark_facts(cfg))), "disk", "spark-1")
    assert unread.status == "warn" and "could not be read" in unread.message


def test_clock_skew():
    cfg = configure()
    agree = quick.clock_skew(ctxs_of(cfg, spark_facts(cfg, **{"spark-1": {"clock": 1000.0},
                                                                "spark-2": {"clock": 1000.3}})))
    assert agree[0].status == "ok" and agree[0].evidence["skew_s"] == 0.3
    skewed = quick.clock_skew(ctxs_of(cfg, spark_facts(cfg, **{"spark-1": {"clock": 1000.0},
                                                                 "spark-2": {"clock": 1007.5}})))[0]
    assert skewed.status == "warn" and "7.5s" in skewed.message and "NTP" in skewed.fix
    assert quick.clock_skew(ctxs_of(cfg, spark_facts(cfg)))[0].message.startswith("clock not read")


def test_unreachable_node_and_facts_errors():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-1": {"errors": {"ip": "exit 2: boom"}}})
    del facts["spark-2"]
    down = {"spark-2": ConnectError("cannot reach spark-2.local:22: timed out", host="spark-2",
                                    step="connect", fix="check the node is on")}
    ctxs = ctxs_of(cfg, facts)
    checks = quick.reachable(ctxs, down) + quick.facts_read(ctxs)
    assert only(checks, "ssh", "spark-1").status == "ok"
    assert only(checks, "ssh", "spark-2").status == "fail"
    assert only(checks, "facts", "spark-1").message == "could not read ip: exit 2: boom"


# --- network --------------------------------------------------------------------------------

def test_recorded_spark_pair_network_is_all_ok():
    cfg = configure()
    picked, checks = network.checks(cfg, ctxs_of(cfg, spark_facts(cfg)))
    assert worst(checks) == "ok", [c.render() for c in checks if c.status != "ok"]
    assert picked["spark-2"].ip == "169.254.127.31"
    assert "both twins" in only(checks, "roce.hcas", "spark-1").message
    assert only(checks, "roce.mtu").message == "MTU 9000 on every node"


def test_a_twin_hca_down_warns_half_the_link():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-2": {"roce": lambda links: tuple(
        dataclasses.replace(link, up=False) if link.hca == "roceP2p1s0f1" else link for link in links)}})
    picked, checks = network.checks(cfg, ctxs_of(cfg, facts))
    hcas = only(checks, "roce.hcas", "spark-2")
    assert hcas.status == "warn"
    assert "twin HCA roceP2p1s0f1 is down" in hcas.message and "half the link" in hcas.message
    assert "enP2p1s0f1np1 up" in hcas.fix
    assert hcas.evidence["nccl_ib_hca"] == ["rocep1s0f1"]  # what `up` would give NCCL
    assert only(checks, "roce.hcas", "spark-1").status == "ok"


def test_roce_port_down_fails_with_the_fix():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-2": {"roce": lambda links: tuple(
        dataclasses.replace(link, up=False) for link in links)}})
    _, checks = network.checks(cfg, ctxs_of(cfg, facts))
    link = only(checks, "roce.link", "spark-2")
    assert link.status == "fail" and link.message == "no RoCE interface is up with an IPv4 address"
    assert "ip addr add" in link.fix
    assert any("rocep1s0f1 port 1 ==> enp1s0f1np1 (Down)" in line for line in link.evidence["observed"])


def test_pinned_hca_that_is_down_fails():
    cfg = configure('cluster.network.hcas=["rocep1s0f1","rocep1s0f0"]')
    _, checks = network.checks(cfg, ctxs_of(cfg, spark_facts(cfg)))
    pinned = only(checks, "roce.hcas", "spark-1")
    assert pinned.status == "fail" and "rocep1s0f0" in pinned.message


def test_mtu_mismatch_fails_and_a_common_1500_warns():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-2": {"interfaces": with_iface(mtu=1500)}})
    _, checks = network.checks(cfg, ctxs_of(cfg, facts))
    mtu = only(checks, "roce.mtu")
    assert mtu.status == "fail" and mtu.message == "MTU differs between nodes: spark-1=9000, spark-2=1500"
    assert "mtu 9000" in mtu.fix
    both = spark_facts(cfg, **{n: {"interfaces": with_iface(mtu=1500)} for n in ("spark-1", "spark-2")})
    _, checks = network.checks(cfg, ctxs_of(cfg, both))
    assert only(checks, "roce.mtu").status == "warn"


def test_wrong_subnet_fails():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-2": {"interfaces": with_iface(ipv4=(("10.0.0.2", 24),))}})
    _, checks = network.checks(cfg, ctxs_of(cfg, facts))
    subnet = only(checks, "roce.subnet")
    assert subnet.status == "fail"
    assert "spark-1=169.254.127.30/16, spark-2=10.0.0.2/24" in subnet.message
    assert subnet.evidence["subnets"] == {"spark-1": "169.254.0.0/16", "spark-2": "10.0.0.0/24"}


def test_duplicate_roce_address_fails():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-2": {"interfaces": with_iface(ipv4=(("169.254.127.30", 16),))}})
    _, checks = network.checks(cfg, ctxs_of(cfg, facts))
    assert "share a RoCE address" in only(checks, "roce.subnet").message


def test_link_speed():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-1": {"link_speed_mbps": {"enp1s0f1np1": 200000, "enP2p1s0f1np1": 200000}},
                                "spark-2": {"link_speed_mbps": {"enp1s0f1np1": 25000}}})
    _, checks = network.checks(cfg, ctxs_of(cfg, facts))
    assert only(checks, "roce.speed", "spark-1").message == "enP2p1s0f1np1 200 Gb/s, enp1s0f1np1 200 Gb/s"
    slow = only(checks, "roce.speed", "spark-2")
    assert slow.status == "warn" and "25 Gb/s" in slow.message


def test_ports_taken_or_held_by_our_own_deployment():
    cfg = configure()
    facts = spark_facts(cfg, **{"spark-2": {"ports_in_use": (22, 29501)},
                                "spark-1": {"ports_in_use": (22, 8000)}})
    checks = network.ports(cfg, ctxs_of(cfg, facts))
    taken = only(checks, "ports", "spark-2")
    assert taken.status == "fail" and taken.message == "port 29501 is already in use"
    assert only(checks, "ports", "spark-1").message == "port 8000 is already in use"
    serving = {"profile": "gpt-oss-120b", "nodes": ["spark-1", "spark-2"]}
    assert worst(network.ports(cfg, ctxs_of(cfg, facts), serving)) == "ok"


def test_a_single_node_needs_no_roce():
    cfg = configure(profile="smoke", cluster="local")
    facts = {"local": dataclasses.replace(spark_facts()["spark-1"], node="local", roce=())}
    picked, checks = network.checks(cfg, ctxs_of(cfg, facts))
    assert picked == {} and [c.name for c in checks] == ["ports"]


# --- reachability over RoCE -----------------------------------------------------------------

def reach_setup(**changes):
    cfg = configure()
    ctxs = ctxs_of(cfg, spark_facts(cfg, **changes))
    picked, _ = network.checks(cfg, ctxs)
    return ctxs, picked


def test_reach_parse_and_all_ok():
    text = "ping 169.254.127.31 0\npmtu 169.254.127.31 0\nssh 169.254.127.31 0\nnoise\n"
    parsed = reach.parse(text)
    assert parsed == {"ping": {"169.254.127.31": 0}, "pmtu": {"169.254.127.31": 0}, "ssh": {"169.254.127.31": 0}}
    ctxs, picked = reach_setup()
    checks = reach.checks(ctxs, picked, {"spark-1": parsed})
    assert worst(checks) == "ok"
    assert only(checks, "reach.ping").message == "reaches spark-2 (169.254.127.31) over enp1s0f1np1"


def test_reach_failures():
    ctxs, picked = reach_setup()
    results = {"spark-1": reach.parse("ping 169.254.127.31 1\npmtu 169.254.127.31 1\nssh 169.254.127.31 124"),
               "spark-2": reach.parse("ping 169.254.127.30 0\npmtu 169.254.127.30 1\nssh 169.254.127.30 0"),
               }
    checks = reach.checks(ctxs, picked, results)
    lost = only(checks, "reach.ping", "spark-1")
    assert lost.status == "fail" and "cannot reach spark-2 (169.254.127.31)" in lost.message
    assert not [c for c in checks if c.name == "reach.mtu_path" and c.node == "spark-1"]  # ping failed first
    pmtu = only(checks, "reach.mtu_path", "spark-2")
    assert pmtu.status == "fail" and "9000-byte packets" in pmtu.message and "MTU" in pmtu.fix
    ssh = only(checks, "reach.ssh", "spark-1")
    assert ssh.status == "warn" and "ListenAddress" in ssh.fix
    broken = reach.checks(ctxs, picked, {"spark-1": "timed out after 60s"})
    assert only(broken, "reach.ping", "spark-1").status == "fail"


def test_reach_script_runs_here_over_loopback():
    if not (shutil.which("ping") and shutil.which("bash") and shutil.which("timeout")):
        pytest.skip("needs ping, bash and timeout")
    # Loopback answers a ping and a 9000-byte unfragmented one; TEST-NET-1 (192.0.2.1, RFC 5737)
    # is routed nowhere, so the same script must report it failing.
    done = subprocess.run(reach.argv("lo", True, ["127.0.0.1", "192.0.2.1"]), capture_output=True, text=True,
                          timeout=30)
    parsed = reach.parse(done.stdout)
    assert set(parsed) == {"ping", "pmtu", "ssh"}, done
    assert (parsed["ping"]["127.0.0.1"], parsed["pmtu"]["127.0.0.1"]) == (0, 0), done
    assert parsed["ping"]["192.0.2.1"] != 0 and parsed["pmtu"]["192.0.2.1"] != 0, done


def test_reach_inputs_are_parameters_not_script_text(tmp_path):
    argv = reach.argv("lo", False, ["127.0.0.1; touch pwned"])
    assert argv[2] == reach.SCRIPT
    subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert not (tmp_path / "pwned").exists()


# --- deploy and preflight -------------------------------------------------------------------

def test_the_smoke_model_missing_points_to_smoke_model_not_download():
    """The smoke model is generated on each node, never downloaded: `inv download --profile
    smoke` would ask the Hub for a repo that is not there."""
    cfg = configure(profile="smoke")
    facts = spark_facts(cfg, **{n: {"model_present": False} for n in ("spark-1", "spark-2")})
    checks = profile.model(cfg, ctxs_of(cfg, facts), "--profile smoke --cluster spark-pair")
    fixes = [only(checks, "model", n).fix for n in ("spark-1", "spark-2")]
    assert fixes == ["`inv smoke-model --cluster spark-pair` builds it on every node"] * 2


def test_model_missing_on_the_worker_suggests_sync():
    cfg = configure()
    checks = profile.model(cfg, ctxs_of(cfg, spark_facts(cfg, **{"spark-2": {"model_present": False}})),
                          "--profile gpt-oss-120b")
    missing = only(checks, "model", "spark-2")
    assert missing.status == "fail" and missing.fix.startswith("`inv sync --profile gpt-oss-120b`")


def test_partly_synced_worker_fails_and_unfinished_downloads_warn():
    """config.json alone is not a whole model: a sync cut short leaves fewer bytes on the worker
    than on the head. `*.incomplete` files (a download cut short, or left for a file no longer
    wanted) only warn."""
    cfg = configure()
    whole = ModelBlobs(files=19, bytes=65_250_000_000, incomplete=0)
    facts = spark_facts(cfg, **{"spark-1": {"model_blobs": whole},
                                "spark-2": {"model_blobs": ModelBlobs(12, 41_000_000_000, 0)}})
    checks = profile.model(cfg, ctxs_of(cfg, facts), "--profile gpt-oss-120b")
    assert only(checks, "model", "spark-1").status == "ok"
    partial = only(checks, "model", "spark-2")
    assert partial.status == "fail"
    assert "only partly synced: 41.00 GB of the head's 65.25 GB (12 of 19 files)" in partial.message
    assert partial.fix.startswith("`inv sync --profile gpt-oss-120b`")
    assert profile.model_problem(facts["spark-2"], facts["spark-1"], is_head=False)
    assert profile.model_problem(facts["spark-1"], facts["spark-1"], is_head=True) is None

    facts = spark_facts(cfg, **{"spark-1": {"model_blobs": ModelBlobs(19, 60_000_000_000, 2)},
                                "spark-2": {"model_blobs": whole}})
    checks = profile.model(cfg, ctxs_of(cfg, facts), "--profile gpt-oss-120b")
    unfinished = only(checks, "model", "spark-1")
    assert unfinished.status == "warn" and "2 unfinished download(s)" in unfinished.message
    assert unfinished.fix.startswith("`inv download --profile gpt-oss-120b`")
    assert only(checks, "model", "spark-2").status == "ok"  # more bytes than the head: not partial

    facts = spark_facts(cfg, **{"spark-1": {"model_blobs": whole}, "spark-2": {"model_blobs": whole}})
    assert all(c.status == "ok" for c in profile.model(cfg, ctxs_of(cfg, facts), "--profile x"))


def test_random_weights_need_only_the_config_on_a_worker_and_no_disk_for_the_weights():
    """With random weights a worker holding the config and tokenizer (a few MB) is ready, though
    the head holds the whole model; a missing model names download/sync with --dummy-weights, and
    the disk check does not count the weights' 65 GB."""
    cfg = configure('model.weights="dummy"')
    facts = spark_facts(cfg, **{"spark-1": {"model_blobs": ModelBlobs(19, 65_250_000_000, 0)},
                                "spark-2": {"model_blobs": ModelBlobs(4, 12_000_000, 0)}})
    assert all(c.status == "ok" for c in profile.model(cfg, ctxs_of(cfg, facts), "--profile gpt-oss-120b"))
    real = configure()
    assert only(profile.model(real, ctxs_of(real, facts), "--profile x"), "model", "spark-2").status == "fail"

    facts = spark_facts(cfg, **{"spark-1": {"model_present": False, "disk": DiskFree("/", 100 * GIB, 30 * GIB)},
                                "spark-2": {"model_present": False, "disk": DiskFree("/", 100 * GIB, 30 * GIB)}})
    found = {(c.name, c.node): c for c in preflight(cfg, facts, profile_flag="--profile gpt-oss-120b")}
    assert ("disk", "spark-1") not in found  # 30 GiB free is plenty for a config and a tokenizer
    assert ("disk", "spark-1") in {(c.name, c.node) for c in preflight(real, facts, profile_flag="--profile x")}
    head, worker = found["model", "spark-1"], found["model", "spark-2"]
    assert head.fix == "`inv download --profile gpt-oss-120b --dummy-weights`"
    assert worker.fix.startswith("`inv sync --profile gpt-oss-120b --dummy-weights` copies it")
    assert "only its config and tokenizer are needed" in head.message


def test_preflight_uses_the_same_checks_and_reports_warn_and_fail():
    cfg = configure()
    facts = spark_facts(cfg, **{n: {"image_id": "sha256:" + "a" * 64, "disk": DiskFree("/", 900 * GIB, 800 * GIB),
                                    "clock": 5.0} for n in ("spark-1", "spark-2")})
    assert preflight(cfg, facts, profile_flag="--profile gpt-oss-120b") == []
    facts["spark-2"] = dataclasses.replace(facts["spark-2"],
                                           interfaces=with_iface(mtu=1500)(facts["spark-2"].interfaces),
                                           roce=tuple(dataclasses.replace(link, up=False) if link.hca == "roceP2p1s0f1"
                                                      else link for link in facts["spark-2"].roce),
                                           ports_in_use=(29501,))
    found = {(c.name, c.node, c.status) for c in preflight(cfg, facts, profile_flag="--profile gpt-oss-120b")}
    assert found == {("roce.mtu", CLUSTER, "fail"), ("roce.hcas", "spark-2", "warn"), ("ports", "spark-2", "fail")}


def test_preflight_of_the_recorded_pair_names_the_missing_image():
    cfg = configure()
    found = preflight(cfg, spark_facts(cfg), profile_flag="--profile gpt-oss-120b")
    fails = [c for c in found if c.status == "fail"]
    assert [(c.name, c.node) for c in fails] == [("image", "spark-1"), ("image", "spark-2")]
    assert ("[spark-1] image: image sparkops/vllm:spark is not on this node\n"
            "    fix: `inv build --cluster spark-pair`") in fails[0].render()


# --- the all-reduce test: script helpers, result and transport ------------------------------

def test_allreduce_sizes_and_bus_factor():
    assert allreduce.parse_size("1M") == 1 << 20 and allreduce.parse_size("256MB") == 256 << 20
    assert allreduce.parse_size("4096") == 4096 and allreduce.parse_size("1G") == 1 << 30
    assert allreduce.sizes_between(1 << 20, 256 << 20, 4) == [1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20]
    assert allreduce.bus_factor(2) == 1.0 and allreduce.bus_factor(8) == 1.75 and allreduce.bus_factor(1) == 0.0


def recorded_run(log: str, *, multi: bool, backend: str = "nccl", rc: int = 0, env=None) -> nccl.AllreduceRun:
    return nccl.AllreduceRun(backend, 2, 1 if multi else 2, "127.0.0.1:29501", env or {"n": {}}, {"n": []},
                             [nccl.RankRun("n", rc, log)], 1.0, multi, "nvidia")


def test_recorded_h100_pair_run_passes_with_p2p():
    log = (NCCL_LOGS / "h100x2_single_host_p2p_cumem_sparkops.txt").read_text()
    result = nccl.parse_result(log)
    assert result["backend"] == "nccl" and result["world_size"] == 2 and result["nccl_version"] == "2.28.9"
    assert [r["bytes"] for r in result["results"]][::5] == [1 << 20, 32 << 20, 1 << 30]
    assert result["results"][-1]["busbw_gbps"] == pytest.approx(325.3, abs=0.1)
    checks = nccl.checks(configure(), recorded_run(log, multi=False))
    bw, transport = only(checks, "nccl.allreduce"), only(checks, "nccl.transport")
    assert bw.status == "ok" and "1G 325.31" in bw.message and bw.evidence["peak_busbw_gbps"] == 325.3149
    assert transport.status == "ok" and "P2P (one host: no network used)" in transport.message


def test_socket_fallback_between_nodes_fails_with_the_fix():
    log = (NCCL_LOGS / "spark_socket_enP7s7_nccl2297.txt").read_text()
    line = json.dumps({"sparkops_allreduce": 1, "backend": "nccl", "world_size": 2, "results": [
        {"bytes": 1 << 28, "busbw_gbps": 2.1, "correct": True}]})
    checks = nccl.checks(configure(), recorded_run(log + "\n" + line, multi=True))
    transport = only(checks, "nccl.transport")
    assert transport.status == "fail" and "NET/Socket on enP7s7" in transport.message
    assert "NCCL_IB_HCA" in transport.fix and "/dev/infiniband" in transport.fix
    slow = only(checks, "nccl.allreduce")  # 2.1 GB/s against the default floor of 10
    assert slow.status == "fail" and "under cluster.network.min_busbw_gbps 10" in slow.message


def test_roce_between_nodes_passes():
    log = (NCCL_LOGS / "spark_two_node_roce_nccl2289.txt").read_text()
    line = json.dumps({"sparkops_allreduce": 1, "backend": "nccl", "world_size": 2, "results": [
        {"bytes": 1 << 28, "busbw_gbps": 22.5, "correct": True}]})
    checks = nccl.checks(configure(), recorded_run(log + "\n" + line, multi=True))
    transport = only(checks, "nccl.transport")
    assert transport.status == "ok" and "NET/IB over" in transport.message


def test_failed_rank_reports_its_tail_and_a_hint():
    log = "NCCL INFO Bootstrap\ntorch.distributed.DistStoreError: Timed out after 120 seconds waiting for clients"
    checks = nccl.checks(configure(), recorded_run(log, multi=True, rc=1))
    (failed,) = checks
    assert failed.status == "fail" and "all-reduce failed on n (exit 1)" in failed.message
    assert failed.evidence["log_tail"][-1].startswith("torch.distributed.DistStoreError")
    assert "inv check --network" in failed.fix


def test_gloo_run_reports_the_socket_interface():
    line = json.dumps({"sparkops_allreduce": 1, "backend": "gloo", "world_size": 2, "results": [
        {"bytes": 1 << 20, "busbw_gbps": 0.5, "correct": True}]})
    cfg = configure('cluster.network.min_busbw_gbps=0.1', profile="smoke", cluster="sim")
    run = recorded_run(line, multi=True, backend="gloo", env={"n": {"GLOO_SOCKET_IFNAME": "enp1s0f1np1"}})
    checks = nccl.checks(cfg, run)
    assert only(checks, "nccl.transport").message == "gloo over TCP on enp1s0f1np1 (CPU cluster: no NCCL)"
    assert only(checks, "nccl.allreduce").status == "ok"


# --- logs -----------------------------------------------------------------------------------

def test_logs_socket_fallback_suggests_check_nccl():
    cfg = configure()
    text = (NCCL_LOGS / "spark_socket_enP7s7_nccl2297.txt").read_text()
    state = {"profile": "gpt-oss-120b", "nodes": ["spark-1", "spark-2"]}
    checks = logs.checks(cfg, {("spark-1", "vllm"): text}, state)
    transport = only(checks, "logs.transport")
    assert transport.status == "fail" and "inv check --nccl" in transport.fix


def test_logs_error_signatures_with_hints():
    cfg = configure()
    text = ("INFO starting\n(EngineCore pid=1) ERROR torch.OutOfMemoryError: CUDA out of memory. Tried to allocate\n"
            "[rank0]: torch.distributed.DistNetworkError: Connection refused\n")
    checks = logs.checks(cfg, {("spark-1", "vllm"): text}, None)
    by_label = {c.evidence["signature"]: c for c in checks if c.name == "logs.errors"}
    assert by_label["CUDA out of memory"].status == "fail"
    assert "gpu_memory_utilization" in by_label["CUDA out of memory"].fix
    assert "rendezvous" in by_label["rendezvous failure"].fix
    assert by_label["CUDA out of memory"].message.startswith("no deployment recorded")
    assert logs.checks(cfg, {}, None)[0].message == "nothing is deployed: no service logs to scan"


def test_clean_log_is_ok():
    checks = logs.checks(configure(), {("spark-1", "vllm"): "INFO all good\n"}, {"profile": "x", "nodes": ["spark-1"]})
    assert [(c.name, c.status) for c in checks] == [("logs.errors", "ok")]


# --- report ---------------------------------------------------------------------------------

def sample_report() -> CheckReport:
    report = CheckReport("spark-pair", None, ["quick", "network"], "2026-11-26T10:00:00+00:00", 1.5,
                         nodes=["spark-1", "spark-2"])
    report.checks = [
        Check("ssh", "quick", "spark-1", "ok", "reachable"),
        Check("roce.mtu", "network", CLUSTER, "fail", "MTU differs between nodes: spark-1=9000, spark-2=1500",
              {"mtu": {"spark-1": 9000, "spark-2": 1500}}, "set MTU 9000"),
        Check("roce.hcas", "network", "spark-2", "warn", "twin down | half", {}, "bring it up"),
    ]
    return report


def test_table_groups_by_node_with_fixes():
    text = table(sample_report())
    lines = text.splitlines()
    assert lines[0] == "spark-1" and lines[2] == "spark-2" and lines[5] == "cluster (all nodes together)"
    assert "FAIL  roce.mtu  MTU differs" in text and "fix: set MTU 9000" in text
    assert lines[-1] == "spark-pair: 1 ok, 1 warn, 1 fail (quick, network; 1.5s)"


def test_report_files_json_and_markdown(tmp_path):
    report = sample_report()
    json_path, md_path = write_report(report, tmp_path / "results")
    data = json.loads(json_path.read_text())
    assert data["status"] == "fail" and data["summary"] == {"ok": 1, "warn": 1, "fail": 1}
    assert data["checks"][1]["evidence"]["mtu"]["spark-2"] == 1500
    assert json_path.name == "20261126T100000-check-spark-pair.json"
    assert "| fail | roce.mtu |" in md_path.read_text() and "twin down \\| half" in markdown(report)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted([json_path.name, md_path.name])


def test_check_rejects_an_unknown_status():
    with pytest.raises(ValueError):
        Check("x", "quick", "n", "maybe", "?")


def test_recorded_facts_have_the_fields_checks_need():
    facts = spark_facts()
    assert all(isinstance(i, Interface) for i in facts["spark-1"].interfaces.values())
    assert all(isinstance(link, RoceLink) for link in facts["spark-1"].roce)


def test_up_readiness_error_on_a_socket_fallback_suggests_check_nccl():
    """`up` explains a dead or never-ready service from its log: NET/Socket points here."""
    from sparkops.facts.service_log import explain
    found = explain((NCCL_LOGS / "spark_socket_enP7s7_nccl2297.txt").read_text())
    assert found["fix"] == "NCCL fell back to TCP sockets: run `inv check --nccl`"


# --- who can reach the API -------------------------------------------------------------------

@pytest.mark.parametrize(("sets", "key", "status", "said"), [
    ((), KEY, "ok", "API on every interface (port 8000 of spark-1), API key required"),
    ((), None, "fail", "no API key: the API on every interface (port 8000 of spark-1) would be open"),
    (("cluster.api.open=true",), None, "warn", "needs no key (cluster.api.open = true)"),
    (('cluster.api.listen="loopback"',), None, "ok", "API on loopback only"),
])
def test_the_api_is_never_open_by_surprise(sets, key, status, said):
    cfg = configure(*sets, api_key=key)
    [check] = api_checks(cfg)
    assert (check.status, check.node) == (status, "spark-1") and said in check.message, check
    if status != "ok":
        assert "`inv api-key --new --cluster spark-pair`" in check.fix
    if status == "fail":  # preflight refuses before anything starts
        assert any(c.name == "api.access" and c.status == "fail"
                   for c in preflight(cfg, spark_facts(cfg), profile_flag="--profile gpt-oss-120b"))


def test_a_loopback_api_on_a_head_sparkops_does_not_run_on_is_refused():
    cfg = configure('cluster.api.listen="loopback"', api_key=None)
    remote = dataclasses.replace(cfg, doc={**cfg.doc, "cluster": {**cfg.cluster, "nodes": [
        {"name": "spark-1", "host": "10.0.0.1"}, *cfg.nodes[1:]]}})
    [check] = api_checks(remote)
    assert check.status == "fail" and "does not run on" in check.message
    assert 'cluster.api.listen="all"' in check.fix


def test_files_root_left_in_the_caches_fail_with_the_chown_that_fixes_them():
    cfg = configure()
    stray = ("root /home/ubuntu/.cache/huggingface/hub/models--openai--gpt-oss-120b/refs/main",
             "root /home/ubuntu/.cache/sparkops/vllm/torch_compile_cache")
    facts = spark_facts(cfg, **{"spark-2": {"foreign_files": stray}})
    found = [c for c in quick.cache_owner(contexts(cfg, facts, all_nodes=True))]
    assert [(c.node, c.status) for c in found] == [("spark-2", "fail")]
    assert "belong to root, not to ubuntu" in found[0].message and "refs/main" in found[0].message
    assert found[0].fix.startswith("on spark-2: `sudo chown -R ubuntu: /home/ubuntu/.cache/huggingface "
                                   "/home/ubuntu/.cache/sparkops`")
    assert any(c.name == "caches.owner" for c in preflight(cfg, facts, profile_flag="--profile gpt-oss-120b"))
