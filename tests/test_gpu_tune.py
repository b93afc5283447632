"""The tune run on the H200 (benchmarks/results/gpu_h200_tune/): the committed summary is the one
the run wrote, every trial's score is what sparkops' objective makes of that trial's measured
cells under the run's SLOs, and replaying the search over the record reaches the same decisions,
the same winner and the same trial count (6 of the grid's 24) with the code as it is now."""
import json
import tarfile
from pathlib import Path

import pytest

from sparkops.tune import objective as obj
from sparkops.tune.search import Trial, key, next_step
from sparkops.tune.space import from_table

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "benchmarks" / "results" / "gpu_h200_tune" / "summary.json"
RAW = ROOT / "benchmarks" / "results" / "gpu_h200" / "tune-run.tgz"


@pytest.fixture(scope="module")
def summary():
    return json.loads(SUMMARY.read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    where = tmp_path_factory.mktemp("gpu-tune")
    with tarfile.open(RAW) as tar:
        tar.extractall(where, filter="data")
    (folder,) = (where / "gpu-run" / "results" / "tune").iterdir()
    return folder


def test_the_committed_summary_is_the_run_s(summary, run):
    assert json.loads((run / "summary.json").read_text()) == summary
    assert summary["status"] == "done" and summary["cluster"] == "gpu"


def test_each_trial_s_score_is_its_cells_under_the_slos(summary, run):
    slos = obj.parse_slos(",".join(summary["slos"]))
    for t in summary["trials"]:
        docs = [json.loads((run / name).read_text()) for name in t["results"]]
        assert all(d["provenance"]["weights"] == "dummy" and d["provenance"]["vllm_version"] == "0.26.0"
                   for d in docs)
        assert vars(obj.score(docs, summary["objective"], slos)) == t["score"], t["trial"]


def test_replaying_the_record_reaches_the_same_winner_in_six_of_twenty_four(summary):
    dims = from_table({d["key"]: d["values"] for d in summary["search"]})
    trials = {key(t["candidate"]): Trial.from_entry(t) for t in summary["trials"]}
    step = next_step(dims, summary["start"], trials)
    assert step.candidate is None  # nothing left to measure
    assert step.incumbent == summary["winner"]["candidate"] == summary["start"]
    assert step.decisions == summary["decisions"]
    assert (len(summary["trials"]), summary["grid_trials"]) == (6, 24)
    # What docs/tune.md says of the run: eager meets the SLOs at no concurrency; the winner is
    # the preset's own settings.
    eager = next(t for t in summary["trials"] if t["candidate"]["serving.enforce_eager"])
    assert eager["score"]["value"] is None
    assert summary["winner"]["gain"]["percent"] == 0.0
