"""The `inv` command line, run as a user runs it: a subprocess in the checkout, with a private
override file (SPARKOPS_LOCAL in tmp_path) and no SPARKOPS_* or HF_TOKEN from the developer."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_TESTtoken_5b9f2c7d1e"


@pytest.fixture
def override(tmp_path) -> Path:
    return tmp_path / "sparkops.local.toml"


@pytest.fixture
def inv(override):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SPARKOPS_") and k not in ("HF_TOKEN", "VLLM_API_KEY")}
    env["SPARKOPS_LOCAL"] = str(override)

    def run(*args: str, stdin: str | None = None, path: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, check=False, input=stdin,
                              env=env | ({"PATH": path} if path else {}), capture_output=True, text=True, timeout=60)
    return run


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def test_list_shows_every_task_with_a_description(inv):
    listed = inv("--list")
    assert listed.returncode == 0, listed.stderr
    tasks = json.loads(inv("--list", "--list-format=json").stdout)["tasks"]
    assert {"profiles", "validate", "plan", "up", "down", "status", "logs", "setup"} <= {t["name"] for t in tasks}
    for task in tasks:
        assert task["help"], f"{task['name']} has no docstring"
        assert f"  {task['name']} " in listed.stdout
        assert task["help"].split()[0] in listed.stdout  # its description is shown next to it


def test_profiles_lists_the_shipped_profiles(inv):
    done = inv("profiles")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:6] == ["NAME", "MODEL", "SIZE", "NODES", "TP", "GATED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["gpt-oss-120b"][1:3] == ["openai/gpt-oss-120b", "65.3"]
    assert rows["llama-3.1-8b-instruct"][6] == "yes"
    assert not [line for line in lines if "INVALID" in line]
    assert len(rows) == len(list((ROOT / "profiles").glob("*.toml")))


def test_validate_passes_for_every_shipped_profile(inv):
    done = inv("validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    assert "ok    gpt-oss-120b on spark-pair" in done.stdout


def test_plan_from_recorded_facts_prints_the_roce_environment(inv):
    done = inv("plan", "--profile", "gpt-oss-120b", "--facts", "recorded")
    assert done.returncode == 0, done.stderr
    assert "planning from recorded: spark-pair.facts.json facts" in done.stderr
    for expected in ("NCCL_IB_HCA=roceP2p1s0f1,rocep1s0f1", "NCCL_SOCKET_IFNAME=enp1s0f1np1",
                     "VLLM_HOST_IP=169.254.127.30", "VLLM_HOST_IP=169.254.127.31",
                     "NCCL_IB_DISABLE=0", "--master-addr 169.254.127.30", "--headless"):
        assert expected in done.stdout, expected


def test_plan_ends_with_the_layouts_that_fit(inv):
    done = inv("plan", "--profile", "gpt-oss-120b", "--facts", "recorded")
    assert "layouts of gpt-oss-120b on spark-pair (2 node(s) of 1 GPU(s)):" in done.stdout
    assert "  dp       DP=2                 fits:" in done.stdout
    assert "  replicas 2 replicas + router  fits:" in done.stdout
    dp = inv("plan", "--profile", "qwen2.5-7b-instruct", "--facts", "recorded", "--set", "serving.tensor_parallel=1",
             "--set", "serving.data_parallel=2")
    assert dp.returncode == 0, dp.stderr
    assert "--data-parallel-start-rank 1 --headless" in dp.stdout
    assert "then until each of its 2 replicas has served a request" in dp.stdout
    layouts = dp.stdout.split("layouts of ")[1].split("\n\n")[0].splitlines()
    assert layouts[2].endswith("<- this profile as configured")  # dp, of tp/dp/solo
    # DP=2 replicas on two nodes: the worker's copies go over the cable, and plan says so
    assert dp.stdout.rstrip().splitlines()[-2:] == ["copies to the workers (inv sync, inv build):",
                                                     "  spark-1 -> spark-2: 169.254.127.31, RoCE enp1s0f1np1"]


def test_impossible_layouts_are_user_errors(inv):
    assert_user_error(inv("plan", "--profile", "qwen2.5-7b-instruct", "--facts", "recorded",
                          "--set", "serving.data_parallel=2"),
                      "serving.data_parallel: each of the 2 replicas needs tensor_parallel 2")
    assert_user_error(inv("bench-all", "--cluster", "spark-pair", "--layouts", "tp,moe"),
                      "--layouts: unknown layout(s) moe", "tp, dp, replicas, solo")


def test_plan_json_is_valid_json(inv):
    done = inv("plan", "--profile", "gpt-oss-120b", "--facts", "recorded", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["verb"], plan["profile"], plan["cluster"]) == ("up", "gpt-oss-120b", "spark-pair")


def test_plan_of_an_unknown_profile_lists_the_names(inv):
    assert_user_error(inv("plan", "--profile", "nope", "--facts", "recorded"), "unknown profile 'nope'",
                      "profiles: deepseek-v4-flash, gemma-2-27b-it, gpt-oss-120b", "`inv profiles`")
    assert_user_error(inv("plan", "--profile", "gpt-oss-12", "--facts", "recorded"),
                      "did you mean 'gpt-oss-120b'")


def test_plan_refuses_a_profile_name_with_shell_characters(inv):
    assert_user_error(inv("plan", "--profile", "x;y", "--facts", "recorded"), "profile name 'x;y' is not allowed")


def test_plan_reports_a_bad_set_without_a_traceback(inv):
    assert_user_error(inv("plan", "--facts", "recorded", "--set", "serving.tensor_parallel=4"),
                      "needs 4 nodes")


def test_setup_writes_a_private_override_that_plan_uses(inv, override):
    override.write_text("# my notes: the second Spark is on the bench, keep this line\n"
                        "[serving]\nmax_num_seqs = 8  # chosen by hand\n")
    os.chmod(override, 0o644)
    before = json.loads(inv("plan", "--facts", "recorded", "--json").stdout)["config_hash"]

    done = inv("setup", "--cluster", "spark-pair", "--worker", "10.0.0.2", "--user", "alice",
               "--hf-token-stdin", "--yes", stdin=TOKEN + "\n")
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert "HF token set" in done.stdout and "spark-2=10.0.0.2" in done.stdout

    assert stat.S_IMODE(override.stat().st_mode) == 0o600
    text = override.read_text()
    assert "# my notes: the second Spark is on the bench, keep this line" in text
    assert "max_num_seqs = 8  # chosen by hand" in text
    assert f'hf_token = "{TOKEN}"' in text

    plan = inv("plan", "--facts", "recorded", "--json")
    assert plan.returncode == 0, plan.stderr
    assert TOKEN not in plan.stdout + plan.stderr
    data = json.loads(plan.stdout)
    assert data["config_hash"] != before
    assert list(data["facts_source"]) == ["spark-1", "spark-2"]
    # The plan names nodes, not their SSH addresses; the addresses it runs against are the
    # effective config's, read here by the same code `inv plan` used, from the same file.
    probe = ("import json; from sparkops.config import load_config; "
             "c = load_config('gpt-oss-120b'); print(json.dumps([c.nodes, c.config_hash()]))")
    nodes, config_hash = json.loads(subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("SPARKOPS_") and k != "HF_TOKEN"}
        | {"SPARKOPS_LOCAL": str(override)}, check=True).stdout)
    assert nodes == [{"name": "spark-1", "host": "local"},
                     {"name": "spark-2", "host": "10.0.0.2", "user": "alice"}]
    assert config_hash == data["config_hash"]

    text_plan = inv("plan", "--facts", "recorded")
    assert TOKEN not in text_plan.stdout + text_plan.stderr


def test_setup_makes_an_api_key_that_api_key_prints_and_plan_never_shows(inv, override):
    """The served API is never open by default: `inv setup` makes a key when none is set, into
    the 0600 file; `inv api-key` prints it for clients (`--header` as curl reads it from a file);
    `--new` replaces it; no plan shows it."""
    done = inv("setup", "--cluster", "spark-pair", "--worker", "10.0.0.2", "--yes")
    assert done.returncode == 0, done.stderr
    assert "API key generated (`inv api-key` prints it)" in done.stdout
    assert stat.S_IMODE(override.stat().st_mode) == 0o600
    key = inv("api-key").stdout.strip()
    assert key.startswith("sparkops-") and len(key) > 40 and f'api_key = "{key}"' in override.read_text()
    assert key not in done.stdout + done.stderr
    assert inv("api-key", "--header").stdout == f"Authorization: Bearer {key}\n"
    again = inv("setup", "--cluster", "spark-pair", "--worker", "10.0.0.3", "--yes")
    assert inv("api-key").stdout.strip() == key and "API key" not in again.stdout  # kept, not replaced
    plan = inv("plan", "--facts", "recorded", "--json")
    assert key not in plan.stdout + plan.stderr and "VLLM_API_KEY=***" in plan.stdout
    new = inv("api-key", "--new")
    assert new.returncode == 0 and new.stdout.strip() != key and new.stdout.strip() == inv("api-key").stdout.strip()
    assert stat.S_IMODE(override.stat().st_mode) == 0o600


def test_api_key_without_one_says_how_to_make_it(inv):
    assert_user_error(inv("api-key"), "no API key is set", "`inv api-key --new`")


def test_plan_on_a_machine_that_is_not_a_spark_points_at_recorded_facts(inv):
    """This machine is spark-pair's head (host "local") and has no RoCE: the error says how to see
    a Spark pair's plan anyway."""
    done = inv("plan", "--profile", "gpt-oss-120b")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done
    assert "error: [spark-1] step 'facts': no RoCE interface" in done.stderr, done.stderr
    assert "`inv plan --profile gpt-oss-120b --cluster spark-pair --facts recorded`" in done.stderr


def test_download_of_a_model_this_cluster_cannot_serve_only_warns(inv, tmp_path):
    done = inv("download", "--profile", "gpt-oss-20b", "--cluster", "local", "--local-dir", str(tmp_path / "none"),
               "--set", f"cluster.paths.lock={json.dumps(str(tmp_path / 'sparkops.lock'))}")  # not the machine's
    assert "the model does not fit" in done.stderr and "downloading anyway" in done.stderr, done.stderr
    # it went on to the import, which found no folder
    assert done.returncode == 1 and "is not a directory" in done.stderr and "Traceback" not in done.stderr


def test_sync_refuses_an_unknown_transport_and_impossible_streams(inv):
    assert_user_error(inv("sync", "--profile", "smoke", "--cluster", "local", "--transport", "ftp"),
                      "unknown sync transport 'ftp'", "ssh, tcp")
    assert_user_error(inv("sync", "--profile", "smoke", "--cluster", "local", "--streams", "99"),
                      "streams must be 1 to 16")
    assert_user_error(inv("sync", "--profile", "smoke", "--cluster", "local", "--streams", "many"),
                      "not a whole number")


# --- --set on every verb that loads a config -------------------------------------------------

# Tasks that load no configuration: setup writes one, sim-* build the test cluster, report reads results.
NO_CONFIG = {"setup", "sim-up", "sim-down", "report"}


def test_every_verb_that_loads_a_config_takes_set():
    """`--set` on every verb that loads a config (status, down, logs, smoke-model, ... once had
    none: the GPU run had to put its settings into an override file)."""
    from tasks import ns
    lacking = sorted(name for name, task in ns.tasks.items()
                     if name not in NO_CONFIG and "set" not in {a.name for a in task.get_arguments()})
    assert lacking == []
    assert len(ns.tasks) - len(NO_CONFIG) >= 18  # the exclusions did not swallow the verbs


def test_set_reaches_the_config_of_status_and_logs(inv, tmp_path):
    """Where the deployment record and the logs are (cluster.paths.work_dir) given by --set:
    `status` reads the record there, `logs` the log there."""
    work = tmp_path / "work"
    (work / "run").mkdir(parents=True)
    (work / "logs").mkdir()
    record = {"profile": "smoke", "cluster": "local", "hash": "0123456789abcdef", "model": "m",
              "served_model_name": "m", "api_url": "http://127.0.0.1:9", "runtime": "native", "backend": "mp",
              "nodes": ["local"], "services": ["vllm"], "data_parallel": 1}
    (work / "run" / "state.json").write_text(json.dumps(record))
    (work / "logs" / "vllm.log").write_text("INFO a line only this test wrote\n")
    where = f"cluster.paths.work_dir={json.dumps(str(work))}"
    done = inv("status", "--cluster", "local", "--json", "--set", where)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["deployment"] == record and data["health"]["verdict"] == "DEGRADED"
    logs = inv("logs", "--cluster", "local", "--set", where, "--lines", "5")
    assert logs.returncode == 0, logs.stderr
    assert "[local:vllm] INFO a line only this test wrote" in logs.stdout


@pytest.mark.parametrize("verb", ["down", "smoke-model", "install-vllm", "api-key"])
def test_set_reaches_the_config_of_cluster_verbs(inv, verb):
    """A --set that cannot run refuses before the verb touches anything: it reached the config."""
    assert_user_error(inv(verb, "--cluster", "local", "--set", "serving.tensor_parallel=4"),
                      "needs 4 nodes", "cluster 'local' has 1")


def test_validate_and_profiles_apply_set(inv):
    """`validate` took --set and ignored it; `profiles` took none."""
    done = inv("validate", "--profile", "smoke", "--cluster", "local", "--set", "serving.tensor_parallel=4")
    assert done.returncode == 1 and "FAIL  smoke" in done.stdout and "needs 4 nodes" in done.stdout, done
    listed = inv("profiles", "--cluster", "local", "--set", "serving.tensor_parallel=4")
    assert listed.returncode == 0, listed.stderr
    assert "INVALID" in next(line for line in listed.stdout.splitlines() if line.startswith("smoke "))


def test_a_single_node_without_ip_ss_hostname_or_python_plans_and_checks(inv, tmp_path):
    """The GPU machine's case, here: no `ip`, `ss`, `hostname` (and here no python3 either, so the
    interfaces stay unknown). One node needs none of them: `plan` works, `check` fails nothing
    for it and says what is unknown; ports come from /proc/net/tcp."""
    from test_probe import HIDDEN, shadow_path
    path = shadow_path(tmp_path, HIDDEN, None)
    plan = inv("plan", "--profile", "smoke", "--cluster", "local", path=path)
    assert plan.returncode == 0, plan.stderr
    assert "[local] env: " in plan.stdout and "GLOO_SOCKET_IFNAME=lo" in plan.stdout
    # A virtualenv without a python: its python would read the interfaces (the second fallback).
    done = inv("check", "--cluster", "local", "--quick", "--network", "--json",
               "--set", f"cluster.venv={json.dumps(str(tmp_path / 'no-venv'))}", path=path)
    checks = json.loads(done.stdout)["checks"]
    failed = [c for c in checks if c["status"] == "fail" and c["name"] != "runtime"]  # no vLLM there
    assert failed == [], failed
    (unknown,) = [c for c in checks if c["name"] == "facts"]
    assert unknown["status"] == "ok" and unknown["message"].startswith("ip unknown: no `ip` command (iproute2)")
    (ports,) = [c for c in checks if c["name"] == "ports"]
    assert ports["status"] == "ok" and ports["message"] == "port(s) 8000 free"


def test_up_with_dummy_weights_asks_only_for_the_config_and_tokenizer(inv, override, tmp_path):
    """`inv up --dummy-weights` of a model this machine lacks: the preflight says only its config
    and tokenizer are needed and names the download that fetches just those; nothing starts."""
    override.write_text(f'[clusters.local]\nvenv = "/opt/sparkops/vllm-cpu"\nnode_memory_gib = 64\n'
                        f'[clusters.local.paths]\nhf_home = "{tmp_path / "hf"}"\nwork_dir = "{tmp_path / "work"}"\n'
                        f'lock = "{tmp_path / "lock"}"\ncache_dir = "{tmp_path / "cache"}"\n')
    os.chmod(override, 0o600)
    done = inv("up", "--profile", "qwen2.5-7b-instruct", "--cluster", "local", "--dummy-weights")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    for said in ("error: step 'preflight'", "model Qwen/Qwen2.5-7B-Instruct is not in",
                 "random weights: only its config and tokenizer are needed",
                 "fix: `inv download --profile qwen2.5-7b-instruct --cluster local --dummy-weights`"):
        assert said in done.stderr, done.stderr
    assert not (tmp_path / "work" / "run").exists()
    assert_user_error(inv("bench-all", "--cluster", "local", "--suite", "quick,serving,quick"),
                      "--suite names quick twice", "--suite leaderboard,serving")
