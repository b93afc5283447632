"""The effective configuration: layer order, override scoping, secrets, shipped profiles,
the semantic warnings and the memory-fit estimate.

Every load passes an explicit `environ` and a private override file (SPARKOPS_LOCAL in
tmp_path, via the `isolated_override` fixture), so nothing here reads the developer's setup.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest

from sparkops.base.errors import ConfigError
from sparkops.config import MASK, load_config
from sparkops.config.catalog import profile_names
from sparkops.config.memfit import GIB, estimate, nodes_needed
from sparkops.facts.recorded import recorded_facts
from sparkops.plan import plan_up
from sparkops.plan.render import plan_json

ROOT = Path(__file__).resolve().parent.parent

LAYER_PROFILE = """\
[profile]
description = "layering test"

[model]
repo = "example/layered"
weights_gb = 1.0

[model.arch]
num_layers = 2
num_kv_heads = 2
head_dim = 32
max_position_embeddings = 65536
"""
LAYER_CLUSTER = """\
[cluster]
accelerator = "nvidia"
runtime = "docker"

[[cluster.nodes]]
name = "head"
host = "local"

[[cluster.nodes]]
name = "worker"
host = "10.0.0.2"
"""


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the shipped profiles/ with a `layer` profile and `layer-cluster` added."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "profiles", root / "profiles")
    return root


def findings(cfg, level: str) -> dict[str, str]:
    """path -> message(s) of the findings of one level (several on one path joined by ' | ')."""
    out: dict[str, str] = {}
    for f in cfg.findings:
        if f.level == level:
            out[f.path] = f"{out[f.path]} | {f.message}" if f.path in out else f.message
    return out


# --- layer order ---------------------------------------------------------------------------

LAYERS = ["defaults", "cluster", "profile", "local", "env", "set"]
VALUE = {"defaults": 8192, "cluster": 1001, "profile": 1002, "local": 1003, "env": 1004, "set": 1005}


def load_with_key_up_to(top: str, root: Path, override: Path):
    """Set serving.max_model_len in every layer up to and including `top`, and load."""
    on = set(LAYERS[:LAYERS.index(top) + 1])
    key = "\n[serving]\nmax_model_len = {}\n"
    (root / "profiles" / "clusters" / "layer-cluster.toml").write_text(
        LAYER_CLUSTER + (key.format(VALUE["cluster"]) if "cluster" in on else ""))
    (root / "profiles" / "layer.toml").write_text(
        LAYER_PROFILE + (key.format(VALUE["profile"]) if "profile" in on else ""))
    override.write_text(key.format(VALUE["local"]) if "local" in on else "# nothing here\n")
    environ = {"SPARKOPS_SERVING__MAX_MODEL_LEN": str(VALUE["env"])} if "env" in on else {}
    sets = [f"serving.max_model_len={VALUE['set']}"] if "set" in on else []
    return load_config("layer", "layer-cluster", root=root, environ=environ, sets=sets)


@pytest.mark.parametrize("top", LAYERS)
def test_each_layer_beats_every_layer_below_it(top, project, isolated_override):
    cfg = load_with_key_up_to(top, project, isolated_override)
    assert cfg.serving["max_model_len"] == VALUE[top]


def test_layers_are_recorded_lowest_first(project, isolated_override):
    cfg = load_with_key_up_to("set", project, isolated_override)
    assert [layer.name for layer in cfg.layers] == [
        "built-in defaults",
        str(project / "profiles" / "clusters" / "layer-cluster.toml"),
        str(project / "profiles" / "layer.toml"),
        str(isolated_override),
        "environment",
        "command line",
    ]


def test_tables_merge_key_by_key_but_arrays_are_replaced_whole(project, isolated_override):
    isolated_override.write_text(
        '[cluster.ports]\napi = 9000\n\n'
        '[clusters.spark-pair]\nnodes = [{name = "spark-1", host = "local"}, '
        '{name = "spark-2", host = "10.0.0.2", user = "alice"}]\n')
    cfg = load_config("gpt-oss-120b", "spark-pair", root=project, environ={})
    assert cfg.cluster["ports"] == {"api": 9000, "rendezvous": 29501, "ray": 6379, "ray_dashboard": 8265,
                                    "replicas": 8100, "router_metrics": 8099}
    assert cfg.nodes == [{"name": "spark-1", "host": "local"},
                         {"name": "spark-2", "host": "10.0.0.2", "user": "alice"}]


def test_environment_values_are_toml_typed_and_selectors_are_not_keys(project, isolated_override):
    cfg = load_config("gpt-oss-120b", "spark-pair", root=project, environ={
        "SPARKOPS_SERVING__ENFORCE_EAGER": "true",
        "SPARKOPS_SERVING__EXTRA_ARGS": '["--seed", "7"]',
        "SPARKOPS_CLUSTER__IMAGE": "registry.local/vllm:spark",  # not TOML: kept as a string
        "SPARKOPS_PROFILE": "smoke",  # selects, sets nothing (it would be an unknown key)
        "SPARKOPS_HOME": "/elsewhere",
    })
    assert cfg.serving["enforce_eager"] is True
    assert cfg.serving["extra_args"] == ["--seed", "7"]
    assert cfg.cluster["image"] == "registry.local/vllm:spark"


def test_environment_variable_names_keep_their_case_down_to_the_served_env_file(project, isolated_override):
    """SPARKOPS_ENV__NAME sets env.NAME as written (it once became env.name, a variable vLLM never
    reads); its value is passed on as text. Elsewhere key names are still lower-cased."""
    cfg = load_config("smoke", "local", root=project, environ={
        "SPARKOPS_ENV__VLLM_USE_FLASHINFER_SAMPLER": "0",
        "SPARKOPS_ENV__MY__DOUBLE": "1_000",  # a name may hold "__"; TOML would read 1000
        "SPARKOPS_SERVING__MAX_MODEL_LEN": "1024",
    })
    assert cfg.doc["env"]["VLLM_USE_FLASHINFER_SAMPLER"] == "0"
    assert cfg.doc["env"]["MY__DOUBLE"] == "1_000"
    assert "vllm_use_flashinfer_sampler" not in cfg.doc["env"]
    assert cfg.serving["max_model_len"] == 1024
    facts, _ = recorded_facts(cfg)
    plan = plan_up(cfg, facts)
    (env_file,) = [a.content for step in plan.steps for acts in step.actions.values() for a in acts
                   if getattr(a, "path", "").endswith("/vllm.env")]
    lines = env_file.splitlines()
    assert "VLLM_USE_FLASHINFER_SAMPLER=0" in lines and "MY__DOUBLE=1_000" in lines
    assert "VLLM_CPU_KVCACHE_SPACE=1" in lines  # the cluster file's own [env] is still there


# --- scoping in the local override ---------------------------------------------------------

SCOPED = """\
# written by hand; comments are fine here
[serving]
max_num_seqs = 7

[clusters.spark-pair]
node_memory_gib = 100.0
nodes = [{name = "spark-1", host = "local"}, {name = "spark-2", host = "10.0.0.2"}]

[clusters.sim]
node_memory_gib = 50.0

[profiles.gpt-oss-120b.serving]
max_model_len = 4096

[profiles.smoke.serving]
max_model_len = 256
"""


def test_override_sections_apply_only_to_their_cluster_and_profile(project, isolated_override):
    isolated_override.write_text(SCOPED)
    big = load_config("gpt-oss-120b", "spark-pair", root=project, environ={})
    assert big.serving["max_num_seqs"] == 7                      # unscoped: everywhere
    assert big.cluster["node_memory_gib"] == 100.0                # [clusters.spark-pair]
    assert big.nodes[1]["host"] == "10.0.0.2"
    assert big.serving["max_model_len"] == 4096                   # [profiles.gpt-oss-120b]

    smoke = load_config("smoke", "spark-pair", root=project, environ={})
    assert smoke.serving["max_model_len"] == 256                  # [profiles.smoke], not 4096
    assert smoke.cluster["node_memory_gib"] == 100.0

    local = load_config("smoke", "local", root=project, environ={})
    assert local.cluster["node_memory_gib"] == 4.0                # the cluster file's own value
    assert local.nodes == [{"name": "local", "host": "local"}]
    assert local.serving["max_num_seqs"] == 7


def test_default_cluster_from_the_override_yields_to_environment_and_argument(project, isolated_override):
    isolated_override.write_text('default_cluster = "local"\n')
    assert load_config("smoke", root=project, environ={}).cluster_name == "local"
    assert load_config("smoke", root=project, environ={"SPARKOPS_CLUSTER": "sim"}).cluster_name == "sim"
    assert load_config("smoke", "spark-pair", root=project,
                       environ={"SPARKOPS_CLUSTER": "sim"}).cluster_name == "spark-pair"


def test_without_any_choice_the_cluster_is_spark_pair(project, isolated_override):
    assert load_config("smoke", root=project, environ={}).cluster_name == "spark-pair"


# --- secrets -------------------------------------------------------------------------------

def test_secrets_come_from_the_variables_their_tools_read(project, isolated_override):
    cfg = load_config("gpt-oss-120b", root=project,
                      environ={"HF_TOKEN": "hf_from_env", "VLLM_API_KEY": "sk-from-env"})
    assert cfg.secrets == {"hf_token": "hf_from_env", "api_key": "sk-from-env"}
    assert sorted(cfg.secret_values()) == ["hf_from_env", "sk-from-env"]


def test_sparkops_secret_variables_stay_strings(project, isolated_override):
    cfg = load_config("gpt-oss-120b", root=project, environ={"SPARKOPS_SECRETS__API_KEY": "12345678"})
    assert cfg.secrets["api_key"] == "12345678"


def test_set_secret_that_looks_like_a_number_stays_a_string(project, isolated_override):
    try:
        cfg = load_config("gpt-oss-120b", root=project, environ={}, sets=["secrets.api_key=12345678"])
    except ConfigError as exc:
        assert "12345678" not in exc.render(), "the error message shows the secret"
        raise
    assert cfg.secrets["api_key"] == "12345678"


def test_public_masks_secrets_and_leaves_the_config_alone(project, isolated_override):
    cfg = load_config("gpt-oss-120b", root=project, environ={"HF_TOKEN": "hf_secret_value"})
    public = cfg.public()
    assert public["secrets"] == {"hf_token": MASK}
    assert "hf_secret_value" not in json.dumps(public)
    assert cfg.secrets["hf_token"] == "hf_secret_value"  # public() works on a copy


def test_config_hash_counts_secrets_only_as_present_or_absent(project, isolated_override):
    def hash_with(environ):
        return load_config("gpt-oss-120b", root=project, environ=environ).config_hash()

    one, other = hash_with({"HF_TOKEN": "hf_one"}), hash_with({"HF_TOKEN": "hf_other"})
    none = hash_with({})
    assert one == other
    assert one != none
    assert hash_with({"SPARKOPS_SERVING__MAX_MODEL_LEN": "4096"}) != none  # a real change counts
    assert len(none) == 16 and int(none, 16) >= 0


def test_override_holding_secrets_must_not_be_readable_by_others(project, isolated_override):
    isolated_override.write_text('[secrets]\nhf_token = "hf_in_file"\n')
    os.chmod(isolated_override, 0o644)
    loose = load_config("gpt-oss-120b", root=project, environ={})
    assert findings(loose, "warn")[str(isolated_override)] == "holds secrets but other users can read it"
    os.chmod(isolated_override, 0o600)
    tight = load_config("gpt-oss-120b", root=project, environ={})
    assert str(isolated_override) not in findings(tight, "warn")
    assert tight.secrets["hf_token"] == "hf_in_file"


# --- shipped profiles ------------------------------------------------------------------------

@pytest.mark.parametrize("name", profile_names(ROOT))
def test_every_shipped_profile_validates_and_plans_on_spark_pair(name, isolated_override):
    cfg = load_config(name, "spark-pair", root=ROOT, environ={})
    assert not findings(cfg, "error")
    assert "serving" not in findings(cfg, "warn"), "memory is tight or unknown for a shipped profile"
    facts, used = recorded_facts(cfg)
    assert used == "recorded: spark-pair.facts.json"
    plan = plan_up(cfg, facts)
    state = json.loads(plan.steps[-1].actions["spark-1"][0].content)
    assert state["nodes"] == ["spark-1", "spark-2"][:nodes_needed(cfg.doc)]
    assert json.loads(plan_json(plan, cfg.secret_values()))["profile"] == name


# --- semantic warnings -----------------------------------------------------------------------

def test_gated_model_without_token_warns_with_the_license_page(isolated_override):
    cfg = load_config("llama-3.1-8b-instruct", "spark-pair", root=ROOT, environ={})
    message = findings(cfg, "warn")["model.gated"]
    assert "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct" in message
    with_token = load_config("llama-3.1-8b-instruct", "spark-pair", root=ROOT, environ={"HF_TOKEN": "hf_x"})
    assert "model.gated" not in findings(with_token, "warn")
    ungated = load_config("gpt-oss-120b", "spark-pair", root=ROOT, environ={})
    assert "model.gated" not in findings(ungated, "warn")


@pytest.mark.parametrize("gmu, warned", [(0.85, False), (0.90, False), (0.91, True), (0.95, True)])
def test_gpu_memory_utilization_above_090_on_unified_memory_warns(gmu, warned, isolated_override):
    cfg = load_config("gpt-oss-120b", "spark-pair", root=ROOT, environ={},
                      sets=[f"serving.gpu_memory_utilization={gmu}"])
    message = findings(cfg, "warn").get("serving.gpu_memory_utilization", "")
    assert ("46307" in message) is warned
    assert not findings(cfg, "error")


def test_no_unified_memory_warning_off_a_spark(isolated_override):
    discrete = load_config("gpt-oss-120b", "spark-pair", root=ROOT, environ={},
                           sets=["serving.gpu_memory_utilization=0.95", "cluster.unified_memory=false"])
    assert "serving.gpu_memory_utilization" not in findings(discrete, "warn")


def test_too_little_left_for_the_os_warns(isolated_override):
    # 119 GiB x (1 - 0.95) leaves 5.95 GiB, below the 8 GiB os_reserve_gib default.
    cfg = load_config("gpt-oss-20b", "spark-pair", root=ROOT, environ={},
                      sets=["serving.gpu_memory_utilization=0.95"])
    message = findings(cfg, "warn")["serving.gpu_memory_utilization"]
    assert "leaves 6.0 GiB of 119.0 GiB for the OS (want 8.0 GiB)" in message
    roomy = load_config("gpt-oss-20b", "spark-pair", root=ROOT, environ={})
    assert "serving.gpu_memory_utilization" not in findings(roomy, "warn")  # 17.85 GiB left


# --- memory fit ------------------------------------------------------------------------------

def test_memfit_of_gpt_oss_120b_on_two_sparks_matches_the_hand_calculation(isolated_override):
    cfg = load_config("gpt-oss-120b", "spark-pair", root=ROOT, environ={})
    fit = estimate(cfg.doc)
    # Budget: 119 GiB per node (defaults.toml) x 0.85 = 101.15 GiB; the OS keeps 17.85 GiB.
    assert fit.node_memory_gib == 119.0
    assert fit.budget_gib == pytest.approx(101.15)
    assert fit.os_left_gib == pytest.approx(17.85)
    # Weights: 65.3 GB = 65.3e9 / 2^30 = 60.816 GiB, split over TP=2 -> 30.408 GiB per node.
    assert fit.weights_gib == pytest.approx(30.408, abs=1e-3)
    assert fit.overhead_gib == 3.0  # one rank per node
    # KV per node, fp8 (the profile's kv_cache_dtype): K and V (2) x ceil(8 KV heads / 2) x 64
    # dims x 1 byte = 512 bytes a layer and token. The 18 full-attention layers keep all 32,768
    # tokens; the 18 sliding-window ones (window 128) the window less one plus the tokens in
    # flight (two batches of max_num_batched_tokens 8,192: async scheduling), 16,511, in blocks
    # of 16 and one more: 16,528. One sequence: 512 x 18 x (32,768 + 16,528) = 454,311,936 bytes.
    assert fit.kv_one_seq_gib == 454_311_936 / GIB
    assert fit.kv_per_token_kib == 454_311_936 / 32768 / 1024  # averaged over the sequence: 13.54 KiB
    # Left for the KV cache: 101.15 - 30.408 - 3.0 = 67.742 GiB -> 160.1 full-length sequences.
    assert fit.kv_room_gib == pytest.approx(67.742, abs=1e-3)
    assert fit.full_length_seqs == pytest.approx(67.742 / (454_311_936 / GIB), abs=1e-2)
    assert fit.nodes == 2
    assert fit.verdict == "fits"
    assert fit.reason == "67.7 GiB left for the KV cache"
    assert fit.as_dict()["weights_gib"] == 30.41


def test_memfit_uses_gathered_node_memory_when_given(isolated_override):
    # The recorded Spark's MemTotal: 130663165952 bytes = 121.69 GiB.
    memory = 130663165952 / GIB
    cfg = load_config("gpt-oss-120b", "spark-pair", root=ROOT, environ={}, node_memory_gib=memory)
    fit = estimate(cfg.doc, memory)
    assert fit.budget_gib == pytest.approx(memory * 0.85)
    assert fit.kv_room_gib == pytest.approx(memory * 0.85 - 65.3e9 / GIB / 2 - 3.0)


def test_memfit_fp8_kv_cache_halves_the_kv_size(isolated_override):
    cfg = load_config("gpt-oss-120b", "spark-pair", root=ROOT, environ={}, sets=["serving.kv_cache_dtype=auto"])
    assert estimate(cfg.doc).kv_one_seq_gib == 2 * 454_311_936 / GIB  # bf16: twice the profile's fp8


def test_memfit_single_node_holds_all_weights(isolated_override):
    cfg = load_config("gpt-oss-120b", "spark-pair", root=ROOT, environ={}, sets=["serving.tensor_parallel=1"])
    fit = estimate(cfg.doc)
    assert fit.nodes == 1
    assert fit.weights_gib == pytest.approx(65.3e9 / GIB)
    # All 8 KV heads on the one rank: twice the TP=2 per-node KV.
    assert fit.kv_one_seq_gib == 2 * 454_311_936 / GIB
    assert math.isclose(fit.kv_room_gib, 101.15 - 65.3e9 / GIB - 3.0)


def test_sparkops_variables_without_a_section_are_not_config_keys():
    # scripts/test exports SPARKOPS_VLLM_VENV; it once broke every `inv` run under pytest.
    from sparkops.config.layers import env_layer
    layer = env_layer({"SPARKOPS_VLLM_VENV": "/opt/x", "SPARKOPS_CLUSTER": "sim",
                       "SPARKOPS_SERVING__MAX_MODEL_LEN": "4096"})
    assert layer.data == {"serving": {"max_model_len": 4096}}


def test_a_model_too_big_for_the_cluster_can_still_be_downloaded():
    """`download` and `sync` load with serving=False: the memory fit is a warning there, an
    error only for the verbs that serve (issue: download refused a model the cluster cannot serve)."""
    with pytest.raises(ConfigError) as e:
        load_config("gpt-oss-20b", "local", environ={})
    assert "does not fit" in e.value.render()
    cfg = load_config("gpt-oss-20b", "local", environ={}, serving=False)
    fit = [f for f in cfg.findings if f.serving_only]
    assert fit and fit[0].level == "warn" and "does not fit" in fit[0].message


# --- data parallel (a replica per node) ------------------------------------------------------

def test_data_parallel_replicas_need_a_node_each_and_hold_the_whole_model(isolated_override):
    cfg = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={},
                      sets=["serving.tensor_parallel=1", "serving.data_parallel=2"])
    fit = estimate(cfg.doc)
    assert nodes_needed(cfg.doc) == fit.nodes == 2
    single = estimate(load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={},
                                  sets=["serving.tensor_parallel=1"]).doc)
    # The fit is per replica: each node holds what one node of a single-node deployment holds.
    assert (fit.weights_gib, fit.kv_one_seq_gib, fit.kv_room_gib) == (
        single.weights_gib, single.kv_one_seq_gib, single.kv_room_gib)


def test_data_parallel_on_nodes_of_several_gpus_puts_replicas_side_by_side():
    doc = {"serving": {"tensor_parallel": 2, "pipeline_parallel": 1, "data_parallel": 4},
           "cluster": {"gpus_per_node": 4}}
    assert nodes_needed(doc) == 2  # two replicas of 2 GPUs per node
    doc["serving"]["data_parallel"] = 3
    assert nodes_needed(doc) == 2


@pytest.mark.parametrize("sets, path, words", [
    (["serving.data_parallel=2"], "serving.data_parallel",
     "each of the 2 replicas needs tensor_parallel 2 x pipeline_parallel 1 GPUs inside one node, and a node has 1"),
    (["serving.data_parallel=3", "serving.tensor_parallel=1"], "serving.data_parallel",
     "data_parallel 3 (1 replica(s) per node of 1 GPU(s)) needs 3 nodes; cluster 'spark-pair' has 2"),
    (["serving.data_parallel=2", "serving.tensor_parallel=1", "distributed.backend=ray"], "distributed.backend",
     "data_parallel 2 starts vLLM's own replicas"),
])
def test_impossible_data_parallel_is_refused_with_the_fix(sets, path, words, isolated_override):
    with pytest.raises(ConfigError) as e:
        load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={}, sets=sets)
    text = e.value.render()
    assert f"error: {path}: " in text and words in text and "fix:" in text


def test_data_parallel_1_leaves_the_config_hash_as_it_was_before_the_key_existed(isolated_override):
    """Upgrading sparkops must not make a running deployment stale (it would restart it):
    neither `serving.data_parallel = 1`, the `[cluster.sync]` table, `[cluster.api]` at its
    defaults, `cluster.docker.run_as = "user"`, `model.weights = "real"` nor the lock's path
    changes the hash; nor the replicas layout's `[router]` table and ports at their defaults, nor
    where a stack's router (LiteLLM) lives."""
    base = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={}, sets=["serving.tensor_parallel=1"])
    cluster = {k: v for k, v in base.public()["cluster"].items() if k not in ("sync", "api", "litellm_venv")}
    cluster["ports"] = {k: v for k, v in cluster["ports"].items() if k not in ("replicas", "router_metrics")}
    cluster["docker"] = {k: v for k, v in cluster["docker"].items() if k not in ("run_as", "litellm_venv")}
    cluster["paths"] = {k: v for k, v in cluster["paths"].items() if k != "lock"}
    doc = {**base.public(), "serving": {k: v for k, v in base.public()["serving"].items() if k != "data_parallel"},
           "cluster": cluster, "model": {k: v for k, v in base.public()["model"].items() if k != "weights"}}
    doc = {k: v for k, v in doc.items() if k not in ("bench", "router")}
    old = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert base.config_hash() == old
    tcp = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={},
                      sets=["serving.tensor_parallel=1", 'cluster.sync.transport="tcp"', "cluster.sync.streams=4"])
    assert tcp.config_hash() == old and tcp.cluster["sync"] == {"transport": "tcp", "streams": 4, "over_lan": False}
    with pytest.raises(ConfigError, match="transport"):
        load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={}, sets=['cluster.sync.transport="ftp"'])
    dp = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={},
                     sets=["serving.tensor_parallel=1", "serving.data_parallel=2"])
    assert dp.config_hash() != old
    for changed in ('cluster.api.listen="loopback"', "cluster.api.open=true", 'cluster.docker.run_as="root"',
                    'router.policy="round_robin"', "cluster.ports.replicas=9100",
                    'cluster.litellm_venv="/opt/litellm"', 'cluster.docker.litellm_venv="/usr/local/litellm"'):
        other = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={},
                            sets=["serving.tensor_parallel=1", changed])
        assert other.config_hash() != old, changed


def test_random_weights_are_another_deployment_served_dummy_in_the_same_memory(isolated_override):
    """`model.weights = "dummy"`: a hash of its own (a random-weight deployment is not the real
    one), `--load-format dummy` for vLLM, the memory fit of the real weights (random ones take
    the same memory), and a load_format that would read weight files refused."""
    def cfg(*sets):
        return load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={},
                           sets=["serving.tensor_parallel=1", *sets])
    real, dummy = cfg(), cfg('model.weights="dummy"')
    assert cfg('model.weights="real"').config_hash() == real.config_hash()
    assert dummy.config_hash() != real.config_hash() and dummy.dummy_weights and not real.dummy_weights
    from sparkops.plan.vllm_args import serve_argv
    argv = serve_argv(dummy)
    assert argv[argv.index("--load-format") + 1] == "dummy"
    assert serve_argv(real)[serve_argv(real).index("--load-format") + 1] == "auto"
    assert estimate(dummy.doc, 119.0).as_dict() == estimate(real.doc, 119.0).as_dict()
    assert cfg("serving.load_format=dummy").dummy_weights  # the way it was done by hand before
    with pytest.raises(ConfigError) as e:
        cfg('model.weights="dummy"', 'serving.load_format="safetensors"')
    assert "serving.load_format" in e.value.render() and "--dummy-weights" in e.value.render()
    with pytest.raises(ConfigError, match="model.weights"):
        cfg('model.weights="random"')
