"""Broken configurations and the messages they must produce (tests/config_corpus/).

Each case is a folder; every file in it is optional except expected.txt:

    profile.toml   becomes profiles/case.toml and is the profile loaded (else gpt-oss-120b)
    cluster.toml   becomes profiles/clusters/case-cluster.toml and is the cluster (else spark-pair)
    local.toml     becomes the local override file, <root>/sparkops.local.toml
    args.json      {"profile": ..., "cluster": ..., "sets": [...], "environ": {...}}
    expected.txt   lines that must ALL appear in SparkopsError.render(); a line starting with
                   '!' must NOT appear; '#' lines are comments; {root} stands for the temporary
                   project folder
    xfail.txt      present when the case shows a known bug: its text is the reason, and the
                   case is xfail(strict=True) until the bug is fixed

The project folder is a copy of the real profiles/ in tmp_path, so "did you mean" answers
are the shipped names; the environment passed in is explicit, never the developer's.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sparkops.base.errors import ConfigError
from sparkops.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "config_corpus"
# What Python's own error output looks like; a user-facing message must show none of it.
TRACEBACK_MARKS = ("Traceback", 'File "', "Error(", "jsonschema", "tomlkit", "<class", "\n    at ")


def cases() -> list:
    out = []
    for case in sorted(p for p in CORPUS.iterdir() if (p / "expected.txt").is_file()):
        bug = case / "xfail.txt"
        marks = [pytest.mark.xfail(strict=True, reason=bug.read_text().strip())] if bug.is_file() else []
        out.append(pytest.param(case, id=case.name, marks=marks))
    return out


def expected_lines(case: Path, root: Path) -> tuple[list[str], list[str]]:
    """(lines that must appear, lines that must not)."""
    lines = [l.replace("{root}", str(root)) for l in (case / "expected.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    return [l for l in lines if not l.startswith("!")], [l[1:] for l in lines if l.startswith("!")]


def project_for(case: Path, tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(ROOT / "profiles", root / "profiles")
    if (case / "profile.toml").is_file():
        shutil.copy(case / "profile.toml", root / "profiles" / "case.toml")
    if (case / "cluster.toml").is_file():
        shutil.copy(case / "cluster.toml", root / "profiles" / "clusters" / "case-cluster.toml")
    if (case / "local.toml").is_file():
        shutil.copy(case / "local.toml", root / "sparkops.local.toml")
    return root


def load_case(case: Path, root: Path) -> None:
    args = json.loads((case / "args.json").read_text()) if (case / "args.json").is_file() else {}
    profile = args.get("profile", "case" if (case / "profile.toml").is_file() else "gpt-oss-120b")
    cluster = args.get("cluster", "case-cluster" if (case / "cluster.toml").is_file() else "spark-pair")
    load_config(profile, cluster, root=root, sets=args.get("sets", []), environ=args.get("environ", {}))


def test_corpus_is_big_enough():
    assert len(cases()) >= 24
    for param in cases():
        wanted, _ = expected_lines(param.values[0], Path("/project"))
        assert wanted, f"{param.id}: expected.txt lists no line that must appear"


@pytest.mark.parametrize("case", cases())
def test_broken_config_is_refused_with_a_helpful_message(case: Path, tmp_path, monkeypatch):
    root = project_for(case, tmp_path)
    monkeypatch.setenv("SPARKOPS_LOCAL", str(root / "sparkops.local.toml"))  # read by paths.local_override_path
    with pytest.raises(ConfigError) as caught:
        load_case(case, root)
    text = caught.value.render()
    wanted, unwanted = expected_lines(case, root)
    missing = [line for line in wanted if line not in text]
    assert not missing, f"missing from the message:\n{missing}\n--- message ---\n{text}"
    shown = [line for line in unwanted if line in text]
    assert not shown, f"must not be in the message:\n{shown}\n--- message ---\n{text}"
    assert text.startswith("error: ")
    for mark in TRACEBACK_MARKS:
        assert mark not in text, f"{mark!r} in a user-facing message:\n{text}"


def test_a_case_without_its_fault_loads(tmp_path, monkeypatch):
    """The harness itself: the untouched copy of the project loads, so the cases fail for
    their own fault and not because of the copy."""
    root = project_for(CORPUS / "does-not-exist", tmp_path)
    monkeypatch.setenv("SPARKOPS_LOCAL", str(root / "sparkops.local.toml"))
    cfg = load_config("gpt-oss-120b", "spark-pair", root=root, environ={})
    assert cfg.model["repo"] == "openai/gpt-oss-120b"
