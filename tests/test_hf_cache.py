"""The one writer of huggingface_hub's cache layout (node_scripts/hf_cache.py): what it writes
is found offline by huggingface_hub itself, exactly as a download would be."""
from __future__ import annotations

import hashlib
import os

from sparkops.node_scripts import hf_cache


def test_a_written_model_is_found_offline_by_huggingface_hub(tmp_path, monkeypatch):
    repo = hf_cache.repo_dir(tmp_path, "org/tiny")
    assert repo == tmp_path / "hub" / "models--org--tiny"
    files = {"config.json": b'{"model_type": "llama"}', "sub/weights.bin": os.urandom(1 << 20)}
    digests = {}
    for rel, data in files.items():
        digest, size, wrote = hf_cache.write_blob(repo, [data[:1000], data[1000:]])
        assert digest == hashlib.sha256(data).hexdigest() and size == wrote == len(data)
        digests[rel] = digest
    commit = hf_cache.content_commit(digests)
    snapshot = hf_cache.link_snapshot(repo, commit, digests)
    assert os.readlink(snapshot / "sub" / "weights.bin") == f"../../../blobs/{digests['sub/weights.bin']}"
    assert (repo / "refs" / "main").read_text() == commit

    from huggingface_hub import snapshot_download
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = snapshot_download("org/tiny", cache_dir=str(tmp_path / "hub"), local_files_only=True)
    assert found == str(snapshot) and (snapshot / "sub" / "weights.bin").read_bytes() == files["sub/weights.bin"]


def test_writing_again_is_idempotent_and_leaves_no_partial_blob(tmp_path):
    repo = hf_cache.repo_dir(tmp_path, "org/tiny")
    first = hf_cache.write_blob(repo, [b"same bytes"])
    again = hf_cache.write_blob(repo, [b"same ", b"bytes"])
    assert again == (first[0], first[1], 0)  # already there: nothing written
    assert sorted(os.listdir(repo / "blobs")) == [first[0]]  # no *.incomplete left behind
    digests = {"a.json": first[0]}
    hf_cache.link_snapshot(repo, "c" * 40, digests, ref=None)
    hf_cache.link_snapshot(repo, "c" * 40, digests, ref=None)  # links already right: unchanged
    assert not (repo / "refs").exists()  # a pinned commit needs no ref
    assert hf_cache.content_commit({"a": "1", "b": "2"}) == hf_cache.content_commit({"b": "2", "a": "1"})
    assert hf_cache.sha256_file(repo / "blobs" / first[0]) == first[0]
