"""`inv build` without a cluster: how the image reaches the head (built, pulled on the head by
digest, pulled everywhere), the local name of a digest image, a build's lines shown while it
runs, and the distribution's meter and failures read from the copy's own report. Real local
processes; the copy through real Docker engines is in test_lifecycle_sim_docker.py."""
from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from sparkops.apply.run import run_step_on_nodes
from sparkops.base.errors import ConfigError, SparkopsError
from sparkops.base.progress import Progress
from sparkops.config import load_config
from sparkops.config.image import is_digest, local_name
from sparkops.facts.recorded import recorded_facts
from sparkops.plan import plan_up
from sparkops.plan.context import contexts
from sparkops.plan.steps import Run, Step
from sparkops.remote.group import NodeGroup
from sparkops.runtimes.build import copy_all, copy_argv, image_steps

ROOT = Path(__file__).resolve().parent.parent
HEX = "0123456789abcdef" * 4
DIGEST = f"nvcr.io/acme/vllm:0.32@sha256:{HEX}"


@pytest.fixture(autouse=True)
def _isolated(isolated_override):
    """No developer override."""


def spark_pair(*sets: str):
    cfg = load_config("smoke", "spark-pair", root=ROOT, sets=list(sets), environ={})
    return cfg, contexts(cfg, recorded_facts(cfg)[0], all_nodes=True)


@pytest.mark.parametrize("image, local", [
    ("sparkops/vllm:spark", "sparkops/vllm:spark"),
    (DIGEST, "nvcr.io/acme/vllm:sparkops-0123456789ab"),
    (f"registry.lan:5000/vllm@sha256:{HEX}", "registry.lan:5000/vllm:sparkops-0123456789ab"),
])
def test_a_digest_image_has_one_local_name_on_every_node(image, local):
    assert local_name(image) == local
    assert is_digest(image) is (image != local)


def test_a_digest_image_is_pulled_on_the_head_only_then_tagged():
    cfg, ctxs = spark_pair(f'cluster.image="{DIGEST}"')
    [step] = image_steps(cfg, ctxs, no_cache=False)
    assert step.name == "pull" and list(step.actions) == ["spark-1"]
    assert [a.argv for a in step.actions["spark-1"]] == [
        ("docker", "pull", DIGEST), ("docker", "tag", DIGEST, "nvcr.io/acme/vllm:sparkops-0123456789ab")]


def test_pull_everywhere_still_pulls_on_every_node():
    cfg, ctxs = spark_pair("cluster.docker.pull=true")
    [step] = image_steps(cfg, ctxs, no_cache=False)
    assert {n: [a.argv for a in acts] for n, acts in step.actions.items()} == {
        n: [("docker", "pull", "sparkops/vllm:spark")] for n in ("spark-1", "spark-2")}
    cfg, ctxs = spark_pair("cluster.docker.pull=true", f'cluster.image="{DIGEST}"')
    [step] = image_steps(cfg, ctxs, no_cache=False)
    assert set(step.actions) == {"spark-1", "spark-2"}
    assert all(acts[1].argv[:2] == ("docker", "tag") for acts in step.actions.values())


def test_a_named_image_is_built_on_the_head():
    cfg, ctxs = spark_pair()
    upload, build = image_steps(cfg, ctxs, no_cache=True)
    assert (upload.name, build.name) == ("upload", "build") and list(build.actions) == ["spark-1"]
    argv = build.actions["spark-1"][0].argv
    assert argv[:4] == ("docker", "build", "-t", "sparkops/vllm:spark") and "--no-cache" in argv
    uploaded = {a.path.rsplit("/", 1)[-1] for a in upload.actions["spark-1"][1:]}
    assert {"Dockerfile", "constraints.txt"} <= uploaded


def test_the_service_runs_a_digest_image_by_its_local_name():
    cfg = load_config("gpt-oss-120b", "spark-pair", root=ROOT, sets=[f'cluster.image="{DIGEST}"'], environ={})
    runs = [a.argv for s in plan_up(cfg, recorded_facts(cfg)[0]).steps for acts in s.actions.values()
            for a in acts if isinstance(a, Run) and a.argv[:2] == ("docker", "run")]
    assert runs and all("nvcr.io/acme/vllm:sparkops-0123456789ab" in argv and DIGEST not in argv for argv in runs)


@pytest.mark.parametrize("image", [f"vllm@sha256:{HEX[:-1]}", f"vllm@sha256:{HEX.upper()}", "vllm@latest",
                                   f"vllm@md5:{HEX}"])
def test_a_malformed_digest_is_refused(image):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", "spark-pair", root=ROOT, sets=[f'cluster.image="{image}"'], environ={})
    assert "cluster.image" in err.value.render() and "@sha256:<64 lowercase hex digits>" in err.value.render()


def test_copy_argv_runs_the_counting_copy_with_the_python_of_the_head():
    argv = copy_argv("img:1", ["ssh", "-o", "BatchMode=yes"], "169.254.1.2")
    assert argv[:2] == ["sh", "-c"] and "docker save" in argv[3]  # the script's text, as -c
    assert argv[4:] == ["img:1", "ssh", "-o", "BatchMode=yes", "169.254.1.2", "docker", "load"]


class Recording(Progress):
    """A real Progress into a buffer that can act when a line arrives."""

    def __init__(self, when=None):
        self.buffer = io.StringIO()
        super().__init__(stream=self.buffer)
        self.when = when

    def say(self, text: str) -> None:
        super().say(text)
        if self.when:
            self.when(text)


def local_group():
    return NodeGroup.for_nodes([{"name": "head", "host": "local"}], {"connect_timeout_s": 5})


def test_a_streamed_step_shows_each_line_while_the_command_runs(tmp_path):
    """The command waits for a file that only the handler of its first line creates: it ends
    (well before its timeout) only if that line was shown while it was still running."""
    flag = tmp_path / "seen"
    progress = Recording(when=lambda text: flag.touch() if text.endswith("] first") else None)
    script = f'echo first; while [ ! -e "{flag}" ]; do sleep 0.05; done; echo second'
    step = Step("build", "t", {"head": (Run(("sh", "-c", script), 60),)})
    run_step_on_nodes(local_group(), step, progress, stream=True)
    lines = progress.buffer.getvalue().splitlines()
    assert lines[:2] == ["      [head] first", "      [head] second"] and "ok" in lines[2]


def protocol(*lines: str, wait_for_stdin: bool = False) -> list[str]:
    """A real process that speaks image_copy.py's protocol (the controller side under test)."""
    body = "".join(f"print({line!r}, flush=True); time.sleep(0.05); " for line in lines)
    tail = "sys.stdin.read(); " if wait_for_stdin else ""
    return [sys.executable, "-c", f"import sys, time; {body}{tail}"]


def test_the_distribution_meter_and_outcome_come_from_the_copy():
    progress = Recording()
    head = local_group()["head"]
    out = copy_all(head, {"spark-2": protocol("bytes 1000000", "bytes 3000000", "ok 4000000")},
                   4e6, progress, every=0)
    assert set(out.succeeded) == {"spark-2"}
    text = progress.buffer.getvalue()
    assert "spark-2 <- head: 1.0 MB of 4.0 MB (" in text and "spark-2 <- head: 3.0 MB of 4.0 MB (" in text
    assert "4.0 MB loaded from the head" in text


def test_a_failed_copy_is_an_error_naming_the_worker_and_the_cause():
    head = local_group()["head"]
    out = copy_all(head, {"spark-2": protocol("bytes 5", "failed: `docker save x` exited 1: no such image"),
                          "spark-3": protocol("ok 9")}, 9, Recording())
    assert set(out.succeeded) == {"spark-3"}
    with pytest.raises(SparkopsError) as err:
        out.raise_failures("step 'distribute'")
    text = err.value.render()
    assert "spark-2" in text and "`docker save x` exited 1: no such image" in text and "df -h" in text


def test_a_copy_that_ends_without_a_word_is_not_taken_for_a_success():
    out = copy_all(local_group()["head"], {"spark-2": protocol("bytes 5")}, 9, Recording())
    assert "ended without a word" in out.failed["spark-2"].message


def test_interrupting_the_distribution_lets_go_of_every_copy(tmp_path):
    """A real Ctrl-C (SIGINT to this process) while a copy runs: the copy's stdin closes, which
    is what makes image_copy.py stop both ends; the interrupt goes on up. The signal comes once
    the copy is under way, and the copy may take a moment to notice (a loaded machine)."""
    started, marker = tmp_path / "started", tmp_path / "stdin-closed"
    argv = [sys.executable, "-c", f"import sys; open({str(started)!r}, 'w').close(); print('bytes 1', flush=True); "
                                  f"sys.stdin.read(); open({str(marker)!r}, 'w').close()"]

    def interrupt_once_started() -> None:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt_once_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        copy_all(local_group()["head"], {"spark-2": argv}, 10, Recording())
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
