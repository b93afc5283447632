"""`inv recipe-import`: community recipes (YAML) as profiles. The recipes in tests/data/recipes
were written for these tests in the two formats (eugr's spark-vllm-docker, recipe_version "1";
the Spark Arena registry, "2"): single node, TP=2 over two Sparks, speculative decoding, and a
mod with no equivalent. Their profiles are golden files, reviewed; each validates."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sparkops.base.errors import ConfigError, SparkopsError
from sparkops.config import load_config
from sparkops.models.recipe_import import convert, import_recipes, profile_text, read_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "tests" / "data" / "recipes"
GOLDEN = ROOT / "tests" / "golden" / "recipes"
UPDATE = os.environ.get("SPARKOPS_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_each_recipe_becomes_its_reviewed_profile(recipe):
    imp = convert(read_recipe(RECIPES / f"{recipe}.yaml"), recipe, f"{recipe}.yaml")
    text = profile_text(imp)
    golden = GOLDEN / f"{recipe}.toml"
    if UPDATE:
        golden.write_text(text)
    assert golden.read_text() == text, "the import changed: SPARKOPS_UPDATE_GOLDEN=1 and review the diff"


def test_the_golden_profiles_say_what_the_recipes_meant(isolated_override, tmp_path):
    """The review, written down, and every profile loads as sparkops would serve it."""
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    for golden in GOLDEN.glob("*.toml"):
        shutil.copy(golden, tmp_path / "profiles" / golden.name)
    load = lambda name, cluster="spark-pair": load_config(name, cluster, root=tmp_path, environ={})  # noqa: E731
    solo = load("solo-eugr-style")
    assert (solo.model["repo"], solo.serving["kv_cache_dtype"], solo.serving["max_num_seqs"]) == (
        "openai/gpt-oss-20b", "fp8", 8)
    assert solo.serving["extra_args"] == ["--attention-backend", "TRITON_ATTN", "--enable-prefix-caching"]
    assert solo.doc["env"] == {"VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8": "1"}
    tp2 = load("tp2-arena-style")
    assert (tp2.serving["tensor_parallel"], tp2.doc["distributed"]["backend"]) == (2, "ray")
    assert (tp2.serving["max_num_batched_tokens"], tp2.serving["gpu_memory_utilization"]) == (8192, 0.85)
    mtp = load("mtp-speculative")
    assert mtp.serving["speculative_config"] == {"method": "mtp", "num_speculative_tokens": 2}
    glm = load("with-a-mod")
    assert glm.serving["speculative_config"] == {"method": "mtp", "num_speculative_tokens": 3}  # from {{ }}
    assert glm.serving["trust_remote_code"] and glm.serving["enforce_eager"]
    text = (GOLDEN / "with-a-mod.toml").read_text()
    assert "not imported: mod mods/fix-glm-tool-parser" in text and "not imported: build_args" in text
    for name in ("solo-eugr-style", "tp2-arena-style", "mtp-speculative", "with-a-mod"):
        body = (GOLDEN / f"{name}.toml").read_text()
        assert "not imported: --port 8000" in body and "not imported: container" in body  # said, not dropped
        assert "--port" not in "".join(load(name).serving.get("extra_args", []))  # sparkops owns the port


def test_hostile_and_broken_recipes_are_refused(tmp_path):
    def convert_text(text: str):
        f = tmp_path / "r.yaml"
        f.write_text(text)
        return convert(read_recipe(f), "r", "r.yaml")
    with pytest.raises(SparkopsError, match="not YAML"):
        convert_text("model: [unclosed\n")
    with pytest.raises(SparkopsError, match="only vLLM recipes"):
        convert_text("model: a/b\ncommand: sglang serve a/b\n")
    with pytest.raises(SparkopsError, match="placeholders its defaults do not fill"):
        convert_text("model: a/b\ncommand: vllm serve {model} --max-num-seqs {seqs}\n")
    with pytest.raises(SparkopsError, match="which its defaults do not give"):
        convert_text('recipe_version: "1"\ncommand: vllm serve a/b --port {port}\n')
    # No attribute access or format specs: `{model.__class__}` is not a placeholder name.
    imp = convert_text('recipe_version: "2"\nmodel: a/b\ncommand: vllm serve {model} --x "{model.__class__}"\n')
    assert imp.extra_args == ["--x", "{model.__class__}"]
    with pytest.raises(SparkopsError, match="is not a int"):
        convert_text("model: a/b\ncommand: vllm serve a/b --max-num-seqs many\n")
    with pytest.raises(SparkopsError, match="not a recipe"):
        convert_text("- a list\n")


def test_import_writes_validates_refuses_to_overwrite_and_loses_nothing(isolated_override, tmp_path):
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "profiles", root / "profiles")

    def validate(n):
        return load_config(n, "spark-pair", root=root, environ={})
    done = import_recipes(root, str(RECIPES), validate=validate)
    assert sorted(p.name for p, _ in done) == sorted(f"{p.stem}.toml" for p in RECIPES.glob("*.yaml"))
    with pytest.raises(SparkopsError, match="exists"):
        import_recipes(root, str(RECIPES / "mtp-speculative.yaml"), validate=validate)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: a/b\ncommand: vllm serve a/b --max-model-len 0\n")  # the schema refuses 0
    with pytest.raises(ConfigError):
        import_recipes(root, str(bad), validate=validate)
    assert not (root / "profiles" / "bad.toml").exists()  # removed again


def test_recipe_import_on_the_command_line(tmp_path):
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "profiles", root / "profiles")
    shutil.copy(ROOT / "tasks.py", root / "tasks.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKOPS_")}
    env |= {"SPARKOPS_HOME": str(root), "SPARKOPS_LOCAL": str(tmp_path / "none.toml")}
    done = subprocess.run([sys.executable, "-m", "invoke", "recipe-import", str(RECIPES / "with-a-mod.yaml"),
                           "--name", "glm-flash"], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote" in done.stdout and "not imported: mod mods/fix-glm-tool-parser" in done.stdout
    assert (root / "profiles" / "glm-flash.toml").is_file()
    again = subprocess.run([sys.executable, "-m", "invoke", "recipe-import", str(RECIPES / "with-a-mod.yaml"),
                            "--name", "glm-flash"], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr
